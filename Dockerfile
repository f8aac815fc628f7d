# PrepIQ ML platform images, one target each:
#   docker build --target serving  -t prepiq-serving .    the BentoML service (serving deps only)
#   docker build --target training -t prepiq-training .   a Prefect worker with the training stack
#                                                          (also runs the MLflow and Prefect servers)
# A builder stage fills a venv at /opt/venv; each runtime stage copies it into a fresh slim
# image, so pip's cache and the build steps stay behind.
# No `# syntax=` line: Docker's built-in BuildKit frontend (20.10 on) handles every
# instruction here, and fetching another from a registry fails where none can be reached.
# Build arguments (deploy/docker/build.sh sets them where no registry can be reached):
#   PYTHON_IMAGE         the base: Python 3.11 on Debian bookworm with `python` on PATH
#                        (deploy/docker/base-image.sh makes local/python:3.11-bookworm)
#   PIP_EXTRA_INDEX_URL  where torch 2.13.0+cpu comes from: PyTorch's CPU index, or empty
#   PIP_FIND_LINKS       a folder or page holding the torch wheel instead (empty: none)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PREPIQ_HOME=/var/lib/prepiq \
    PREPIQ_LOG_FORMAT=json
WORKDIR /opt/prepiq
RUN useradd --create-home --uid 10001 --user-group prepiq

FROM base AS builder
# The locks pin torch 2.13.0+cpu, which PyPI lacks (its torch is the multi-GB CUDA build):
# PyTorch's CPU index serves it, or a local wheel through PIP_FIND_LINKS. Every other
# package comes from PyPI. ENV, not ARG alone: the builder stages below inherit it, and
# only the runtime stages, which start from base, are shipped. PIP_RETRIES=0 fails fast
# on an index that does not answer.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
ARG PIP_RETRIES=5
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_FIND_LINKS=${PIP_FIND_LINKS} \
    PIP_RETRIES=${PIP_RETRIES}
RUN python -m venv /opt/venv

# -- serving: what `prepiq serve` imports, nothing of training's or the pipelines' stack --
FROM builder AS serving-builder
COPY requirements-serving.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.13.0+cpu && pip install -r requirements-serving.lock
COPY pyproject.toml README.md params.yaml ./
COPY core ./core
COPY features ./features
COPY training ./training
COPY registry ./registry
COPY serving ./serving
COPY prepiq ./prepiq
# Editable: the settings find params.yaml beside the source (PROJECT_ROOT).
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .

FROM base AS serving
COPY --from=serving-builder /opt/venv /opt/venv
COPY --from=serving-builder /opt/prepiq /opt/prepiq
# The model store: a checked cache of the champions, fetched from the registry at start
# and whenever an alias moves (serving/models.py); a restart serves from it at once.
ENV BENTOML_HOME=/var/lib/prepiq/bentoml
RUN mkdir -p "$BENTOML_HOME" && chown -R prepiq:prepiq /var/lib/prepiq
# The numeric id of `prepiq` (created in base): a runtime can check it is not root.
USER 10001:10001
VOLUME ["/var/lib/prepiq/bentoml"]
EXPOSE 3000
# /readyz answers 200 once every required champion is served (fetching takes a while).
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
ENTRYPOINT ["prepiq"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000"]

# -- training: the whole platform (flows, tuning, the gate, DVC, the MLflow and Prefect
# servers), run as a Prefect worker --------------------------------------------------------
FROM builder AS training-builder
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.13.0+cpu && pip install -r requirements.lock
COPY pyproject.toml README.md params.yaml dvc.yaml MLproject python_env.yaml .dvcignore ./
COPY .dvc/config ./.dvc/config
COPY core ./core
COPY features ./features
COPY synthetic ./synthetic
COPY pipelines ./pipelines
COPY training ./training
COPY registry ./registry
COPY serving ./serving
COPY prepiq ./prepiq
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .
# No git repository in the image; DVC's default remote on the PREPIQ_HOME volume.
COPY deploy/dvc/config.local ./.dvc/config.local

FROM base AS training
COPY --from=training-builder /opt/venv /opt/venv
# The worker writes data/, dvc.lock and DVC's cache beside the source: it owns the tree.
COPY --from=training-builder --chown=prepiq:prepiq /opt/prepiq /opt/prepiq
ENV BENTOML_HOME=/var/lib/prepiq/bentoml \
    PREFECT_HOME=/var/lib/prepiq/prefect
# Made here, so named volumes mounted on them start owned by prepiq.
RUN mkdir -p "$BENTOML_HOME" "$PREFECT_HOME" /var/lib/prepiq/mlartifacts /opt/prepiq/data \
    && chown -R prepiq:prepiq /var/lib/prepiq /opt/prepiq/data
USER 10001:10001
VOLUME ["/var/lib/prepiq", "/opt/prepiq/data"]
CMD ["prefect", "worker", "start", "--pool", "prepiq", "--type", "process"]

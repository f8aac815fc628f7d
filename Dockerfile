# syntax=docker/dockerfile:1
# The PrepIQ ML platform image: the pinned environment and the `prepiq` command.
# (Separate training and serving targets arrive with the operations work.)
FROM python:3.11-slim AS platform

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREPIQ_HOME=/var/lib/prepiq \
    PREPIQ_DATA_DIR=/var/lib/prepiq/data \
    PREPIQ_LOG_FORMAT=json

WORKDIR /opt/prepiq
COPY requirements.lock ./
# torch's CPU build (the lock pins 2.13.0+cpu) comes from PyTorch's CPU index.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock

COPY pyproject.toml README.md params.yaml dvc.yaml MLproject python_env.yaml ./
COPY core ./core
COPY features ./features
COPY synthetic ./synthetic
COPY pipelines ./pipelines
COPY training ./training
COPY registry ./registry
COPY serving ./serving
COPY prepiq ./prepiq
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --create-home --uid 10001 prepiq \
    && mkdir -p /var/lib/prepiq && chown prepiq /var/lib/prepiq

USER prepiq
VOLUME ["/var/lib/prepiq"]
ENTRYPOINT ["prepiq"]
CMD ["--help"]

#!/usr/bin/env bash
# Makes the base image the Dockerfile's PYTHON_IMAGE build argument names where no container
# registry can be reached (`docker pull` fails), from Debian's own packages:
#   1. local/debian:bookworm        debootstrap --variant=minbase bookworm, `docker import`ed
#   2. local/python:3.11-bookworm   + Debian's python3 (3.11), python3-venv, python-is-python3
#                                   and ca-certificates, with this machine's CA bundle copied in
#                                   (HTTPS to the package registries may be re-signed by a proxy
#                                   that only that bundle trusts; pip, requests and ssl read it)
# Idempotent: an image that exists is kept (REBUILD=1 makes both anew). Needs root (debootstrap)
# and a running Docker engine. Settings, all optional:
#   DOCKER             the Docker client (default: /usr/bin/docker when present, else docker)
#   DEBIAN_IMAGE       default local/debian:bookworm
#   PYTHON_IMAGE       default local/python:3.11-bookworm
#   DEBIAN_MIRROR      default http://deb.debian.org/debian
#   CA_BUNDLE          default /etc/ssl/certs/ca-certificates.crt
set -euo pipefail

DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-local/debian:bookworm}
PYTHON_IMAGE=${PYTHON_IMAGE:-local/python:3.11-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# What python:3.11-slim-bookworm's config sets and the Dockerfile relies on.
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if [ "${REBUILD:-0}" = 1 ]; then
    "$DOCKER" image rm -f "$PYTHON_IMAGE" "$DEBIAN_IMAGE" >/dev/null 2>&1 || true
fi

if exists "$DEBIAN_IMAGE"; then
    echo "$DEBIAN_IMAGE exists"
else
    command -v debootstrap >/dev/null || {
        echo "debootstrap is missing: apt-get install -y debootstrap" >&2
        exit 1
    }
    root=$(mktemp -d /tmp/prepiq-debootstrap.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap --variant=minbase bookworm -> $DEBIAN_IMAGE"
    debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || {
        tail -n 20 "$root.log" >&2
        exit 1
    }
    rm -f "$root.log"
    # debootstrap leaves the package lists and archives behind; the image needs neither.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
        --change "ENV PATH=$DEFAULT_PATH" --change "ENV LANG=C.UTF-8" --change 'CMD ["bash"]' \
        - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$root"
    trap - EXIT
fi

if exists "$PYTHON_IMAGE"; then
    echo "$PYTHON_IMAGE exists"
else
    [ -r "$CA_BUNDLE" ] || { echo "no CA bundle at $CA_BUNDLE" >&2; exit 1; }
    context=$(mktemp -d /tmp/prepiq-python-base.XXXXXX)
    trap 'rm -rf "$context"' EXIT
    cp "$CA_BUNDLE" "$context/ca-certificates.crt"
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update \\
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
# After ca-certificates: its own bundle lacks the proxy's certificate.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
DOCKERFILE
    echo "Debian's python3 on $DEBIAN_IMAGE -> $PYTHON_IMAGE"
    # The host's network: apt reaches Debian's mirror as the host does.
    DOCKER_BUILDKIT=1 "$DOCKER" build --network=host -q -t "$PYTHON_IMAGE" "$context" >/dev/null
    rm -rf "$context"
    trap - EXIT
fi
"$DOCKER" run --rm "$PYTHON_IMAGE" python --version

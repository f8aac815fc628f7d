#!/usr/bin/env bash
# Builds one of the Dockerfile's targets where no container registry and no PyTorch index
# can be reached, as on this project's machines:
#   deploy/docker/build.sh serving  [docker build options...]   -> prepiq-serving
#   deploy/docker/build.sh training [docker build options...]   -> prepiq-training
# 1. deploy/docker/base-image.sh makes the base (local/python:3.11-bookworm) when missing;
# 2. the torch 2.13.0+cpu wheel the locks pin, found in the machine's wheel folder (pip's
#    find-links: PIP_FIND_LINKS or `pip config`), is served to the build by a local
#    `python3 -m http.server` on 127.0.0.1 and handed to pip as PIP_FIND_LINKS, with no extra
#    index; with no such wheel the Dockerfile's default (PyTorch's CPU index) stays;
# 3. `docker build --network=host`: the build's pip reaches that server and PyPI as the
#    host does.
# Settings, all optional: DOCKER, TAG (default prepiq-TARGET), PYTHON_IMAGE (a base to use
# instead of the local one; not made), TORCH_WHEEL_DIR (where the torch wheel lies),
# WHEEL_PORT (the wheel server's port, default 47113: fixed, because the URL is a build
# argument and a new one rebuilds every layer after it; a taken port falls back to any).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${1:?usage: deploy/docker/build.sh serving|training [docker build options...]}
shift
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}
TAG=${TAG:-prepiq-$target}
if [ -z "${PYTHON_IMAGE:-}" ]; then
    PYTHON_IMAGE=local/python:3.11-bookworm
    DOCKER=$DOCKER PYTHON_IMAGE=$PYTHON_IMAGE bash deploy/docker/base-image.sh
fi

torch=$(grep -E '^torch==' requirements-serving.lock | cut -d= -f3) # e.g. 2.13.0+cpu
wheel=
for folder in ${TORCH_WHEEL_DIR:-} ${PIP_FIND_LINKS:-} \
    $(python3 -m pip config get global.find-links 2>/dev/null || true); do
    folder=${folder#file://}
    [ -d "$folder" ] || continue
    wheel=$(find "$folder" -maxdepth 1 -name "torch-$torch-cp311-*.whl" | head -n 1)
    [ -n "$wheel" ] && break
done

build_args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
if [ -n "$wheel" ]; then
    # Only the torch wheel, so pip finds nothing else there.
    served=$(mktemp -d /tmp/prepiq-wheels.XXXXXX)
    ln -s "$wheel" "$served/"
    port=${WHEEL_PORT:-47113}
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        echo "127.0.0.1:$port is taken: serving the wheel on another port (no cached layers)"
        port=0
    fi
    python3 -u -m http.server --bind 127.0.0.1 --directory "$served" "$port" >"$served.log" 2>&1 &
    server=$!
    trap 'kill "$server" 2>/dev/null; rm -rf "$served" "$served.log"' EXIT
    port=
    for _ in $(seq 1 50); do
        port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$served.log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$served.log" >&2; exit 1; }
    echo "torch $torch from $wheel, served on 127.0.0.1:$port"
    build_args+=(--build-arg PIP_EXTRA_INDEX_URL= --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/")
else
    echo "no torch-$torch wheel on this machine: PyTorch's CPU index it is"
fi

DOCKER_BUILDKIT=1 "$DOCKER" build --network=host "${build_args[@]}" \
    --target "$target" -t "$TAG" "$@" .

#!/usr/bin/env bash
# What `make test` needs from the machine, installed or started when missing (a fresh
# machine of the kind CI runs on: Debian, root, the package registries reachable):
#   - PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (tests make throwaway
#     databases on them; tests/test_rate_limit_storage.py counts in Redis);
#   - Debian's chromium (tests/test_mlflow_ui.py);
#   - docker.io and debootstrap (tests/test_docker_image.py builds the serving image with
#     no registry; it skips, saying why, where no engine can start);
#   - promtool, from Debian's prometheus (tests/test_monitoring_rules.py).
# Without root it only starts what is installed and says what is missing.
set -euo pipefail

need_packages=()
have() { command -v "$1" >/dev/null 2>&1; }

have pg_ctlcluster || need_packages+=(postgresql)
have redis-server || need_packages+=(redis-server)
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
have dockerd || need_packages+=(docker.io)
have debootstrap || need_packages+=(debootstrap)
have promtool || need_packages+=(prometheus)

if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing Debian's ${need_packages[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
    else
        echo "missing (install as root: apt-get install ${need_packages[*]}); the tests that need them fail or skip" >&2
    fi
fi

wait_for() {  # wait_for NAME COMMAND...: up to 30 s
    local name=$1
    shift
    for _ in $(seq 1 30); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "$name did not come up" >&2
    return 1
}

if have pg_isready && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "PostgreSQL is down; starting it"
    cluster=$(ls /etc/postgresql | head -n 1)
    # Trust auth on loopback, as the tests connect (postgres@127.0.0.1, no password).
    hba=/etc/postgresql/$cluster/main/pg_hba.conf
    if [ -w "$hba" ] && ! grep -q "prepiq-tests" "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust # prepiq-tests\nhost all all ::1/128 trust # prepiq-tests' "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
fi

if have redis-server && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis is down; starting it"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir "$( [ -w /var/lib/redis ] && echo /var/lib/redis || echo /tmp )" \
        --logfile "$( [ -w /var/log/redis ] && echo /var/log/redis/prepiq-tests.log || echo /tmp/prepiq-redis.log )"
    wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

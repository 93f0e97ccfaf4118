#!/usr/bin/env bash
# The container stage (.ci/run runs it; so can anyone, as root, on a machine like CI's):
#   1. installs Debian's Docker engine, docker-compose and debootstrap when missing;
#   2. starts dockerd when none answers, and stops that one by its PID at the end, whatever happens;
#   3. makes the base images locally when the registry cannot be reached (docker/base-images.sh: stand-ins
#      from Debian's packages, kept between runs of one engine);
#   4. builds the project's images from the Dockerfiles as they are (torch from BLACKVIP_TORCH_INDEX_URL,
#      here PyPI's index: PyTorch's CPU index is not reachable from CI);
#   5. runs docker/stack_checks.py: `docker-compose up` with a client job and the monitoring profile, then
#      the scale file's 3 replicas behind nginx with one killed mid-job; each brought down with -v;
#   6. validates the GPU override's configuration (no GPU here: it is not run).
# Environment: BLACKVIP_STEPS (client job's steps, default 20), BLACKVIP_TORCH_INDEX_URL (default PyPI's).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
stage() { echo "ci-stack: [$(( $(date +%s) - started )) s] $*"; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    stage "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

dockerd_pid=""
finish() {
    status=$?
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
        stage "dockerd (pid $dockerd_pid) stopped"
    fi
    exit $status
}
trap finish EXIT
trap 'exit 130' INT TERM  # through finish too
if ! docker info >/dev/null 2>&1; then
    log=$(mktemp /tmp/dockerd.XXXXXX.log)
    dockerd >"$log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$log"; echo "dockerd did not start"; exit 1; }
    stage "dockerd started (pid $dockerd_pid, log $log)"
fi

if ! timeout 30 docker pull -q python:3.11-slim >/dev/null 2>&1; then
    stage "no image registry reachable: making the stand-in base images (docker/base-images.sh)"
    eval "$(bash docker/base-images.sh)"
fi
stage "base images ready: ${BLACKVIP_PYTHON_IMAGE:-python:3.11-slim} ${BLACKVIP_POSTGRES_IMAGE:-postgres:16}" \
      "${BLACKVIP_NGINX_IMAGE:-nginx:1.27} ${BLACKVIP_PROMETHEUS_IMAGE:-prom/prometheus}"

export BLACKVIP_TORCH_INDEX_URL=${BLACKVIP_TORCH_INDEX_URL:-https://pypi.org/simple}
export COMPOSE_PROJECT_NAME=blackvipci
docker-compose --profile jobs build server client  # CI's engine starts empty: built from nothing there
stage "images built"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(blackvip-sim|blackvip-standin)/' || true

python3 docker/stack_checks.py
stage "stack checks passed"
docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
stage "GPU override: configuration valid (validated only: no GPU on this machine, not run)"

#!/usr/bin/env bash
# The base images the project's Dockerfiles and compose files name, made locally from Debian's packages
# where no image registry can be reached (as on this project's CI machines). These are stand-ins: production
# uses the official images (python:3.11-slim, postgres:16, nginx:1.27, prom/prometheus); the stand-ins run
# the same engines as Debian bookworm ships them (Python 3.11, PostgreSQL 15, nginx 1.22, Prometheus 2.42).
#
#   sudo bash docker/base-images.sh             # make them (debootstrap needs root), about 3 minutes
#   eval "$(sudo bash docker/base-images.sh)"   # ... and point docker-compose at them (the lines it prints)
#
# An image already made is kept. The machine's extra CA certificates (Debian's local certificate folder,
# /usr/local/share/ca-certificates) are trusted inside them, so apt and pip work behind a TLS-inspecting
# proxy. DEBIAN_MIRROR overrides the mirror (default: the machine's own apt source).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=blackvip-standin
log() { echo "base-images: $*" >&2; }
has_image() { docker image inspect "$1" >/dev/null 2>&1; }

mirror=${DEBIAN_MIRROR:-$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}

if ! has_image "$prefix/debian:bookworm"; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$prefix/debian:bookworm" >/dev/null
    log "made $prefix/debian:bookworm"
fi

context=$(mktemp -d)
trap 'rm -rf "$context" ${rootfs:+"$rootfs"}' EXIT
cp "$here"/standin/* "$context"/
mkdir -p "$context/certs"
cp /usr/local/share/ca-certificates/*.crt "$context/certs/" 2>/dev/null || true
for name in python:3.11 postgres:15 nginx:1.22 prometheus:2.42; do
    if ! has_image "$prefix/$name"; then
        log "building $prefix/$name"
        docker build -q -t "$prefix/$name" -f "$context/${name%%:*}.Dockerfile" \
            --build-arg "DEBIAN_IMAGE=$prefix/debian:bookworm" "$context" >/dev/null
    fi
done
cat <<LINES
export BLACKVIP_PYTHON_IMAGE=$prefix/python:3.11
export BLACKVIP_POSTGRES_IMAGE=$prefix/postgres:15
export BLACKVIP_NGINX_IMAGE=$prefix/nginx:1.22
export BLACKVIP_PROMETHEUS_IMAGE=$prefix/prometheus:2.42
LINES

#!/usr/bin/env bash
# The distribution's packages the tests use, installed with apt-get where missing: PostgreSQL (the ledger's
# second engine) and nginx (the replicas' load balancer), which the tests start on loopback themselves,
# never as the system's services; docker-compose (the compose files are checked with it); chromium and
# its driver, which tests/e2e/test_docs_browser.py drives headless through /docs. The container
# stage (docker/ci-stack.sh) installs the Docker engine itself. Needs root (or sudo) only when something
# is missing.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || missing+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "the tests need ${missing[*]}: install them (apt-get install ${missing[*]}) or run this as root" >&2
    exit 1
fi
echo "installing ${missing[*]} (apt-get)"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# The README's test command (.ci/run runs it too), from the project's virtual environment:
#   1. the system packages the tests use, installed where missing (scripts/system-packages.sh);
#   2. the test suite (python -m pytest -q; arguments after the options below go to pytest);
#   3. the container stage (docker/ci-stack.sh: the images built, docker-compose up for real), as root.
#
#   bash scripts/test.sh                    # all three (about 20 + 15 minutes on 2 cores)
#   bash scripts/test.sh --no-containers    # 1 and 2
#   bash scripts/test.sh --no-containers tests/server -x
set -euo pipefail
cd "$(dirname "$0")/.."
containers=1
if [ "${1:-}" = "--no-containers" ]; then
    containers=0
    shift
fi
bash scripts/system-packages.sh
python -m pytest -q "$@"
if [ "$containers" -eq 1 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        bash docker/ci-stack.sh
    else
        sudo --preserve-env=PATH bash docker/ci-stack.sh
    fi
fi

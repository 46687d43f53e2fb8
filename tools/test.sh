#!/usr/bin/env bash
# Install everything the tests need from the project's own files, then run them.
#   bash tools/test.sh [pytest args...]
# Tests start their own redis-server, soketi and celery workers on free ports; they use
# PostgreSQL at 127.0.0.1:5432 (trust auth; override with RELAYCAST_TEST_POSTGRES) and
# skip what is missing locally, but fail in CI (CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

if [ -f tools/package-lock.json ]; then
    (cd tools && npm ci --no-audit --no-fund --loglevel=error)
else
    (cd tools && npm install --no-audit --no-fund --loglevel=error)
fi

if ! command -v redis-server >/dev/null 2>&1; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" apt-get install -y redis-server
fi

# The viewer's browser tests drive Debian's chromium (Playwright never downloads a browser here).
if [ ! -x /usr/bin/chromium ]; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" apt-get install -y chromium
fi

echo "python:       $(.venv/bin/python --version 2>&1)"
echo "node:         $(node --version)"
echo "soketi:       $(node -p "require('./tools/node_modules/@soketi/soketi/package.json').version")"
echo "redis-server: $(redis-server --version)"
echo "chromium:     $(/usr/bin/chromium --version 2>/dev/null)"

.venv/bin/ruff check .
.venv/bin/mypy

# Four pytest processes on two cores: most tests wait on servers and workers they start, not
# on the CPU, and no test bounds wall-clock time, so a busy machine makes the suite slower, not
# red. Tests are dealt out one by one (a file's slow tests do not queue behind each other;
# a module fixture such as the browser starts once per process that needs it).
# RELAYCAST_TEST_PROCESSES=0 runs everything in this process. The 25 slowest tests are listed.
processes=${RELAYCAST_TEST_PROCESSES:-4}
parallel=()
if [ "$processes" != "0" ]; then
    parallel=(-n "$processes" --dist load)
fi
status=0
.venv/bin/python -m pytest "${parallel[@]}" --durations=25 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: treating as a failure" >&2
    exit 1
fi
exit "$status"

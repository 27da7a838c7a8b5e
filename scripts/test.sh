#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite (lint, types, tests).
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
install_voxpipe "all,dev"

# The tests start their own redis-server, PostgreSQL and haproxy, run espeak-ng and chromium;
# install what is missing.
apt_updated=""
need() {  # need BINARY DEBIAN-PACKAGE WHY
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "==> installing $2 ($3)"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$1 is required ($3): install $2 with your package manager" >&2
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  $sudo apt-get install -y -qq "$2" >/dev/null
}
need redis-server redis-server "the session store tests start their own"
need espeak-ng espeak-ng "the espeak text-to-speech provider's tests run it"
need haproxy haproxy "the scale-out test load-balances two bots"
need chromium chromium "the call page's tests drive it with Playwright (no browser download)"
# PostgreSQL's server binaries live off the PATH, in /usr/lib/postgresql/VERSION/bin.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null \
  || need /usr/lib/postgresql/bin/postgres postgresql "the call records tests start their own PostgreSQL"

echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy --strict"
.venv/bin/mypy --strict voxpipe
echo "==> pytest"
.venv/bin/python -m pytest -q "$@"

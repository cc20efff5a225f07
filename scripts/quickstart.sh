#!/usr/bin/env bash
# Quick start: install everything, then run the main job on its embedded defaults: the
# scenario end to end in the lab (`flowlens demo`). Extra arguments go to it (e.g. --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/flowlens demo "$@"

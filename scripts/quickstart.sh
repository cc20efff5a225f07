#!/usr/bin/env bash
# Quick start: install everything, then run the main job on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/flowlens live "$@"

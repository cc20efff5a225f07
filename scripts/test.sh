#!/usr/bin/env bash
# Every check of the project: lint, layer contract, then the test suite on the real kernel.
# Needs root (network namespaces) and scripts/install.sh run once.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
.venv/bin/ruff check flowlens tests bench
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# The fault matrix: builds a lab, puts each fault of flowlens_lab/matrix.py in place under load,
# checks what the diagnosis says and how fast, runs 10 minutes of load with no fault, prints the
# scorecard and removes the lab. Needs root. Arguments go to it (--subset, --cell NAME,
# --interval S, --every S, --steady S).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
exec .venv/bin/python -m flowlens_lab.matrix "$@"

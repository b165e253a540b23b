#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (real models included) and build
# the documentation with warnings as errors (its gallery runs on the real models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check skdirection tests benchmarks examples
.venv/bin/ruff format --check skdirection tests benchmarks examples
.venv/bin/python -m pytest "$@"
.venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "documentation built: docs/_build/html/index.html"

#!/usr/bin/env bash
# Install what the tests need (scripts/setup.sh, idempotent), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the pipeline's layers (pyproject.toml [tool.importlinter]): a stage imports only the stages below it
.venv/bin/lint-imports --config pyproject.toml
exec .venv/bin/python -m pytest "$@"

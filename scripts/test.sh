#!/usr/bin/env bash
# Install what the tests need (scripts/setup.sh, idempotent), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"

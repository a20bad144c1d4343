#!/usr/bin/env bash
# Set up (idempotent) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Idle OpenMP threads must not spin: on 2 shared cores a spinning pool slows torch ~100x.
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest -n 2 "$@"

#!/usr/bin/env bash
# Create .venv and install mupspec with its test extras. torch==2.13.0 goes in
# first: on this project's machines that pins the local CPU build, and a later
# `torch>=2.2` requirement is then already satisfied (no CUDA download).
# Idempotent and quick: when pyproject.toml and this script are unchanged since
# the last complete run (a stamp in .venv records them), it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | "$PY" -c "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())")
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# The reference implementations the tests compare with: microsoft/mup 1.0.0 and
# graphcore-research/unit-scaling 0.3.5. --no-deps: mup's torchvision requirement
# would pull a CUDA torch; their runtime imports are listed here instead
# (pandas: mup.coord_check, which benchmarks/bench_coord.py compares with).
.venv/bin/python -m pip install -q --no-deps "mup==1.0.0" "unit-scaling==0.3.5"
.venv/bin/python -m pip install -q pyyaml docstring_parser einops tabulate pygments pandas
echo "$want" > "$STAMP"

#!/usr/bin/env bash
# Create .venv and install mupspec with its test extras. torch==2.13.0 goes in
# first: on this project's machines that pins the local CPU build, and a later
# `torch>=2.2` requirement is then already satisfied (no CUDA download).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# microsoft/mup, the reference implementation the codegen tests compare with.
# --no-deps: its torchvision requirement would pull a CUDA torch.
.venv/bin/python -c "import mup" 2>/dev/null || .venv/bin/python -m pip install -q --no-deps "mup==1.0.0"

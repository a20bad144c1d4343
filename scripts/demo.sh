#!/usr/bin/env bash
# Set up (idempotent) and run the main job on every bundled spec:
# format check, then the symbolic check report of each spec.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/mupspec fmt --check specs/*.mup
echo "all bundled specs are in canonical form"
# check exits 1 when a spec is not muP; here that is by design for SP (also tied), NTK,
# sp_lr_inv_width, seed_mlp (a muP_MLP that is really SP) and u-muP (its embedding LR)
.venv/bin/mupspec check specs/*.mup || [ $? -eq 1 ]
echo "(not muP by design: sp, sp_tied, ntk, sp_lr_inv_width, seed_mlp; umup and umup_gpt depart in their embedding LR)"

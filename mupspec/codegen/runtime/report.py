"""Runtime part `report`: the per-parameter table of a plan.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.rules import _family
from mupspec.codegen.runtime.spec_stub import SPEC_NAME

# ---- RUNTIME (everything below is copied into each generated module) ----


def format_table(plan, lr=None):
    """One line per parameter: name, shape, role, init std, multiplier, LR
    factor (or effective LR when `lr` is given), weight decay and eps factors."""
    lr_head = "lr" if lr is not None else "lr factor"
    head = ("name", "shape", "role", "init std", "mult", lr_head, "wd factor", "eps factor")
    rows = [head]
    for r in plan:
        std = "keep" if r.init_std is None else f"{r.init_std:.4g}"
        role = r.role + (" (res)" if r.branch else "")  # inside a residual branch
        role += " [Muon]" if plan.optimizer == "muon" and _family("muon", r.block) == "muon" else ""
        if r.slices:  # a fused parameter: each part's role and init std
            role += " [" + "|".join(s["role"] for s in r.slices) + "]"
            std = "|".join("keep" if s["init_std"] is None else f"{s['init_std']:.4g}" for s in r.slices)
        if r.tied_to is not None:
            role, std = f"{role} (tied to {r.tied_to})", "tied"
        mult = f"{r.mult:.4g}" + (" (folded)" if r.folded else "")
        lr_text = f"{r.lr_factor * lr:.4g}" if lr is not None else f"{r.lr_factor:.4g}"
        rows.append((r.name, "x".join(map(str, r.shape)) or "()", role, std, mult, lr_text,
                     f"{r.wd_factor:.4g}",
                     f"{r.eps_factor:.4g}" if _family(plan.optimizer, r.block) in ("adam", "adafactor") else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    title = f"{SPEC_NAME}: optimizer={plan.optimizer}, init={plan.init}, multipliers={plan.multipliers}"
    title += ", anchor=absolute" if plan.anchor == "absolute" else ""
    return "\n".join([title, lines[0], "  ".join("-" * w for w in widths)] + lines[1:])

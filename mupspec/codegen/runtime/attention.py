"""Runtime part `attention`: the attention-logit scale of the spec.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.rules import _dims, _hypers, _ratio
from mupspec.codegen.runtime.spec_stub import BLOCKS

# ---- RUNTIME (everything below is copied into each generated module) ----

def attention_scale(base_scale, widths, base_widths, hypers=None):
    """The attention-logit factor for q.k: base_scale (e.g. 1/sqrt(d_head) of
    the base model) times the spec's logit rule at `widths` over its value at
    `base_widths`."""
    if "attention" not in BLOCKS:
        return base_scale
    target = (1, 1, _dims(widths, None, "widths"))
    base = (1, 1, _dims(base_widths, None, "base_widths"))
    return base_scale * _ratio("attention", "logit", target, base, _hypers(hypers))

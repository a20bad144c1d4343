"""Runtime part `attention`: the spec's attention-logit scale, for
F.scaled_dot_product_attention(scale=...) and for hand-written attention.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.rules import _dims, _hypers, _ratio
from mupspec.codegen.runtime.spec_stub import BLOCKS, DERIVED_WIDTHS, WIDTH_SYMBOLS

# ---- RUNTIME (everything below is copied into each generated module) ----


def attention_scale(base_scale, widths, base_widths, hypers=None, anchor="base"):
    """The attention-logit factor for q.k: base_scale (e.g. 1/sqrt(d_head) of
    the base model) times the spec's logit rule at `widths` over its value at
    `base_widths`; with anchor="absolute" (as parametrize's) the rule's value
    itself, base_scale unused (u-muP's alpha_attn/d_head, unit-scaling's
    mult/d_head)."""
    if anchor not in ("base", "absolute"):
        raise ValueError(f"anchor must be 'base' or 'absolute', not {anchor!r}")
    if "attention" not in BLOCKS:
        return base_scale
    target = (1, 1, _dims(widths, None, "widths"))
    if anchor == "absolute":
        return _ratio("attention", "logit", target, None, _hypers(hypers))
    base = (1, 1, _dims(base_widths, None, "base_widths"))
    return base_scale * _ratio("attention", "logit", target, base, _hypers(hypers))


def attention_logit_scale(d_head, base_d_head, *, widths=None, base_widths=None, hypers=None, anchor="base"):
    """The scale of q.k for F.scaled_dot_product_attention(scale=...): the
    standard 1/sqrt(d_head) at the base model, times the spec's logit rule at
    the target over its value at the base (anchor="absolute": the rule's
    value at the target). The rule's width symbol stands for
    d_head: a spec that names a `d_head` width reads it from widths= (else
    from d_head), one with a single width symbol reads d_head for it; a rule
    in other symbols needs them in widths= / base_widths=."""
    def dims(given, head):
        dims = dict(given or {})
        symbol = "d_head" if "d_head" in WIDTH_SYMBOLS else WIDTH_SYMBOLS[0] if len(WIDTH_SYMBOLS) == 1 else None
        if symbol is not None and symbol not in DERIVED_WIDTHS:  # a derived d_head follows from widths=
            dims.setdefault(symbol, head)
        return dims
    return attention_scale(1.0 / math.sqrt(base_d_head), dims(widths, d_head), dims(base_widths, base_d_head), hypers,
                           anchor)


def attention(q, k, v, scale, *, causal=False, mask=None):
    """softmax(scale * q k^T + mask) v, written out (for code that cannot
    call F.scaled_dot_product_attention); q, k, v are (..., T, d_head)."""
    logits = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        t, s = logits.shape[-2], logits.shape[-1]
        future = torch.ones(t, s, dtype=torch.bool, device=logits.device).triu(s - t + 1)
        logits = logits.masked_fill(future, float("-inf"))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    return torch.matmul(torch.softmax(logits, dim=-1), v)

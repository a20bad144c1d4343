"""Runtime part `rules`: the spec's rules evaluated at given sizes, anchored at the base.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.spec_stub import (
    DEPTH_SYMBOL, DERIVED_WIDTHS, HYPER_DEFAULTS, MUON_BLOCKS, RULES, SPEC_NAME, WIDTH_SYMBOLS)

# ---- RUNTIME (everything below is copied into each generated module) ----


def _dims(widths, depth, which):
    dims = dict(widths or {})
    unknown = sorted(set(dims) - set(WIDTH_SYMBOLS))
    if unknown:
        raise ValueError(f"{which}: unknown width symbol(s) {unknown}; {SPEC_NAME} declares {list(WIDTH_SYMBOLS)}")
    derived = sorted(set(dims) & set(DERIVED_WIDTHS))
    if derived:
        free = [w for w in WIDTH_SYMBOLS if w not in DERIVED_WIDTHS]
        raise ValueError(f"{which}: {derived} follow from the other widths in {SPEC_NAME} (DERIVED_WIDTHS); "
                         f"pass only {free}")
    for name, size in DERIVED_WIDTHS.items():  # in declaration order: each from the sizes before it
        value = size(dims)
        if value is not None:
            dims[name] = value
    if DEPTH_SYMBOL is not None and depth is not None:
        dims[DEPTH_SYMBOL] = depth
    return dims


def _dim(dims, symbol, rule):
    if symbol not in dims:
        which = "depth=/base_depth=" if symbol == DEPTH_SYMBOL else "widths=/base_widths="
        raise ValueError(f"{SPEC_NAME}: rule {rule} uses `{symbol}`: pass {which} with a value for it")
    return dims[symbol]


def _hypers(overrides):
    unknown = sorted(set(overrides or {}) - set(HYPER_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; {SPEC_NAME} declares {sorted(HYPER_DEFAULTS)}")
    return {**HYPER_DEFAULTS, **(overrides or {})}


def _value(block, field, fan_in, fan_out, dims, hypers):
    try:
        rule = RULES.get((block, field)) or RULES[(SUBROLES.get(block, block), field)]  # a sub-role: its class's
        value = rule(fan_in, fan_out, dims, hypers)
    except ZeroDivisionError:
        raise ValueError(f"{SPEC_NAME}: {block}.{field} divides by zero at "
                         f"fan_in={fan_in}, fan_out={fan_out}") from None
    except (OverflowError, ValueError, TypeError) as err:  # huge powers, sqrt(<0), complex
        raise ValueError(f"{SPEC_NAME}: {block}.{field} has no finite real value at "
                         f"fan_in={fan_in}, fan_out={fan_out} ({err})") from None
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError(f"{SPEC_NAME}: {block}.{field} = {value} at fan_in={fan_in}, fan_out={fan_out}")
    return float(value)


def _family(optimizer, block="*"):
    """The spec's LR-rule family of a torch optimizer (adam covers AdamW);
    with Muon, a parameter whose rules (block or sub-role) have no `lr.muon`
    rule, or that has none, is AdamW's. block="*": the optimizer's own family."""
    if optimizer == "muon" and block != "*" and block not in MUON_BLOCKS:
        return "adam"
    return "adam" if optimizer == "adamw" else optimizer


def _optimizer_factors(ratio, optimizer, block="*"):
    """(lr, weight decay, eps) factors of a block for this optimizer, given the
    block's ratio(field); eps is Adam's only."""
    family = _family(optimizer, block)
    return ratio("lr." + family), ratio("wd." + family), (ratio("eps.adam") if family == "adam" else 1.0)


def _ratio(block, field, target, base, hypers):
    """rule(target sizes, hypers) / rule(base sizes, default hypers): the
    anchoring that makes the base model the standard one; base None
    (anchor="absolute"): the rule's value itself, as unit-scaling sets u-muP up."""
    top = _value(block, field, *target, hypers)
    if base is None:
        return top
    bottom = _value(block, field, *base, HYPER_DEFAULTS)
    if bottom == 0.0:
        if top == 0.0:
            return 0.0
        raise ValueError(f"{SPEC_NAME}: {block}.{field} is 0 at the base model but {top} at the target")
    return top / bottom

"""Numeric evaluation of IR expressions at concrete sizes (no sympy, no torch).

Used by codegen (to precompute nothing -- it emits code -- but to validate),
and by the empirical stage to turn a spec into per-layer numbers at a given
width and depth. Spec text is never evaluated: this walks the IR tree.
"""

from __future__ import annotations

import math
from typing import Mapping

from mupspec import ir
from mupspec.errors import Diagnostic, MupError


def evaluate(expr, env: Mapping[str, float]) -> float:
    """Value of `expr` with symbols bound by `env` (fan_in, fan_out, widths,
    depth, hyperparameters). Raises MupError on an unbound symbol or a
    division by zero at these sizes."""
    def sym(node):
        if node.name not in env:
            raise MupError(Diagnostic(f"no value for `{node.name}`", node.span))
        return float(env[node.name])

    def sqrt(value, node):
        if value < 0:
            raise MupError(Diagnostic("square root of a negative number at these sizes", node.span))
        return math.sqrt(value)

    def binary(node, left, right):
        try:
            return left ** right if node.op == "^" else ir.ARITHMETIC[node.op](left, right)
        except ZeroDivisionError:
            raise MupError(Diagnostic("division by zero at these sizes", node.span)) from None

    return ir.fold(expr, num=lambda node: node.numerator / node.denominator, sym=sym,
                   neg=lambda value, _: -value, sqrt=sqrt, binary=binary,
                   choose=lambda node, values: (min if node.func == "min" else max)(values))


def width_env(spec: ir.Spec, sizes: Mapping[str, float]) -> dict[str, float]:
    """Every width symbol's size from the free ones' (`sizes`): a derived
    symbol (`d_ff = 4*d_model`, `d_head = 64`) from its definition."""
    env = {}
    for name in spec.widths:
        value = spec.width_value(name)
        env[name] = float(sizes[name]) if value is None else evaluate(value, env)
    return env


def hyper_values(spec: ir.Spec, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    values = {h.name: evaluate(h.value, {}) for h in spec.hypers}
    return values | dict(overrides or {})


# fan_in / fan_out of each class as functions of the width, for a network
# whose input and output dimensions are `d_in` and `d_out` (TP5 App. B; a
# bias or norm gain has fan_in 1 and fan_out = its length).
def class_fans(kind: str, width: float, d_in: float, d_out: float) -> tuple[float, float]:
    return {
        "input": (d_in, width),
        "hidden": (width, width),
        "output": (width, d_out),
        "bias": (1.0, width),
        "norm": (1.0, width),
    }[kind]


def layer_value(spec: ir.Spec, kind: str, field: str, *, fan_in: float, fan_out: float,
                width: float, depth: float | None = None, hypers: Mapping[str, float] | None = None) -> float:
    """A rule's value for one parameter (`kind` a class or a sub-role): every
    free width symbol is bound to `width`, derived ones follow."""
    if spec.block(ir.role_class(kind)) is None:
        raise MupError(Diagnostic(f"spec `{spec.name}` has no `{ir.role_class(kind)}` block", spec.span,
                                  f"add a `{ir.role_class(kind)} {{ ... }}` block to the spec"))
    env = width_env(spec, {w: width for w in spec.free_widths}) | {"fan_in": fan_in, "fan_out": fan_out}
    if spec.depth:
        env[spec.depth] = depth if depth is not None else 1.0
    env |= hyper_values(spec, hypers)
    return evaluate(ir.role_rule(spec, kind, field), env)

"""Stage 6a: IR expressions -> Python expression text, and the name checks
that keep generated code safe.

Takes `ir.Expr` trees and returns Python source fragments built only from
numbers, `+ - * / **`, `math.sqrt`, the builtins `min`/`max` and prefixed identifiers
(`fan_in`, `fan_out`, `w_<width>`, `d_<depth>`, `h_<hyper>`). Spec text is
never evaluated or pasted: every identifier is re-checked against a strict
pattern and Python's keyword list, and comment text is reduced to
printable single-line characters.
"""

from __future__ import annotations

import keyword
import re

from mupspec import ir
from mupspec.errors import Diagnostic, MupError
from mupspec.printer import format_expr

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", "^": "**"}


def check_name(name: str, what: str, span: ir.Span | None = None) -> str:
    """`name` if it is a plain ASCII identifier that is not a Python keyword."""
    if not _IDENTIFIER.match(name) or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise MupError(Diagnostic(
            f"{what} `{name}` cannot be used in generated code", span,
            "names must match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters) and not be Python keywords"))
    return name


class Symbols:
    """Maps spec symbols to the Python names the rule functions bind."""

    def __init__(self, spec: ir.Spec):
        self.python: dict[str, str] = {"fan_in": "fan_in", "fan_out": "fan_out"}
        for width in spec.widths:
            self.python[check_name(width, "width symbol", spec.span)] = f"w_{width}"
        if spec.depth:
            self.python[check_name(spec.depth, "depth symbol", spec.span)] = f"d_{spec.depth}"
        for hyper in spec.hypers:
            self.python[check_name(hyper.name, "hyperparameter", hyper.span)] = f"h_{hyper.name}"

    def name(self, sym: ir.Sym) -> str:
        if sym.name not in self.python:
            raise MupError(Diagnostic(f"unknown symbol `{sym.name}`", sym.span,
                                      "declare it as a width, depth or hyper"))
        return self.python[sym.name]


def python_expr(expr, symbols: Symbols) -> str:
    """Fully parenthesized Python text for `expr` (floats, never integer division)."""
    if isinstance(expr, ir.Num):
        return number(expr)
    if isinstance(expr, ir.Sym):
        return symbols.name(expr)
    if isinstance(expr, ir.Neg):
        return f"(-{python_expr(expr.operand, symbols)})"
    if isinstance(expr, ir.Call):
        if expr.func != "sqrt":
            raise MupError(Diagnostic(f"unknown function `{expr.func}`", expr.span))
        return f"math.sqrt({python_expr(expr.arg, symbols)})"
    if isinstance(expr, ir.MinMax):  # the builtins: no generated name can shadow them (all are prefixed)
        return f"{expr.func}({', '.join(python_expr(a, symbols) for a in expr.args)})"
    if isinstance(expr, ir.BinOp):
        return f"({python_expr(expr.left, symbols)} {_OPERATORS[expr.op]} {python_expr(expr.right, symbols)})"
    raise MupError(Diagnostic(f"cannot generate code for {type(expr).__name__}"))


def number(num: ir.Num) -> str:
    """A float literal: exact for the decimals the language allows."""
    value = num.value
    text = format_expr(ir.Num.of(value))
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):  # the printer emits digits only; be sure
        raise MupError(Diagnostic(f"unexpected number text {text!r}", num.span))
    return text if "." in text else text + ".0"


def used_symbols(expr) -> list[str]:
    """Spec symbols of `expr`, in first-use order."""
    return list(dict.fromkeys(s.name for s in ir.symbols_in(expr)))


def comment(text: str) -> str:
    """Text safe inside a `#` comment: one line, printable characters only."""
    return "".join(c if c.isprintable() else "?" for c in text)

"""symbolic.py: IR -> sympy, leading exponents, per-class exponents and invariants.

Expected invariants come from docs/theory.md §3.1 (TP5 Tables 3/8/9, SP) and §5
(u-μP); leading exponents are cross-checked against float evaluation of the
same IR (mupspec.numeric), which does not use sympy.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from mupspec import ir, numeric
from mupspec.errors import MupError
from mupspec import symbolic as S
from mupspec.resolve import load_spec, parse_and_resolve

SPECS = Path(__file__).resolve().parents[1] / "specs"
R = sympy.Rational
n, L = S.N, S.Ldepth


def spec(name: str) -> ir.Spec:
    return load_spec(SPECS / f"{name}.mup")


def inv(ex: S.ClassExponents) -> tuple:
    return (ex.e_init, ex.e_sgd, ex.e_adam)


@pytest.mark.parametrize("f, k", [
    (sympy.Integer(7), 0),
    (n, 1),
    (1 / n**2, -2),
    (sympy.sqrt(n), R(1, 2)),
    (3 * n + n**2 / 7, 2),                       # a sum keeps its leading term
    (1 / n + 1 / sympy.sqrt(n), R(-1, 2)),
    ((n + 1) ** R(1, 3), R(1, 3)),
    (sympy.sqrt(n**2 + 1) - n, -1),              # cancelling leading terms: the limit fallback
    (n * L**2, 1),                               # depth counts as a constant in width
    (sympy.Symbol("eta", positive=True) * n, 1),
])
def test_leading_exponent_in_width(f, k):
    assert S.leading_exponent(f) == k


def test_leading_exponent_in_depth_treats_width_as_constant():
    assert S.leading_exponent(n * L**2, L) == 2
    assert S.leading_exponent(n / sympy.sqrt(L), L) == R(-1, 2)


def test_zero_vanishes_and_zero_init_has_infinite_b():
    assert S.leading_exponent(sympy.Integer(0)) == -sympy.oo
    assert S.leading_exponent(n - n) == -sympy.oo
    umup = S.spec_exponents(spec("umup"))
    assert umup["bias"].b == sympy.oo and umup["bias"].e_init == sympy.oo


def test_leading_coefficient_and_sign():
    coef, k = S.leading_term(2 * n**2 - 5 * n)
    assert (coef, k) == (2, 2)
    assert not S.positive_at_scale(n - n**2)


def test_class_env_fans_per_theory_section_8():
    s = spec("sp")
    assert (S.class_env(s, "input")["fan_in"], S.class_env(s, "input")["fan_out"]) == (S.D_IN, n)
    assert (S.class_env(s, "hidden")["fan_in"], S.class_env(s, "hidden")["fan_out"]) == (n, n)
    assert (S.class_env(s, "output")["fan_in"], S.class_env(s, "output")["fan_out"]) == (n, S.D_OUT)
    for kind in ("bias", "norm"):
        assert (S.class_env(s, kind)["fan_in"], S.class_env(s, kind)["fan_out"]) == (1, n)


def test_several_widths_and_hypers_map_to_n_and_constants():
    s = parse_and_resolve("parametrization t\nwidth d_model, d_ff\ndepth D\nhyper L = 2\n"
                          "hidden { init.var = 1/d_ff; mult = L; lr.adam = 1/(d_model + d_ff) }\n")
    env = S.class_env(s, "hidden")
    assert env["d_model"] == env["d_ff"] == n and env["D"] == L
    assert env["L"] != L and env["L"].is_positive  # a hyperparameter named L is not the depth symbol
    ex = S.class_exponents(s, "hidden")
    assert (ex.a, ex.b, ex.c_adam) == (0, R(1, 2), 1)


@pytest.mark.parametrize("name", ["mup_table3", "mup_table8", "mup_table9"])
def test_tp5_tables_have_mup_invariants(name):
    # docs/theory.md §3.1: e_init (0, 1/2, 1), e_sgd (-1, 0, 1), e_adam (0, 1, 1); biases like inputs.
    ex = S.spec_exponents(spec(name))
    assert inv(ex["input"]) == (0, -1, 0)
    assert inv(ex["hidden"]) == (R(1, 2), 0, 1)
    assert inv(ex["output"]) == (1, 1, 1)
    assert inv(ex["bias"]) == (0, -1, 0)


def test_tables_differ_in_abc_but_not_in_invariants():
    t3, t8, t9 = (S.spec_exponents(spec(f"mup_table{i}"))["output"] for i in (3, 8, 9))
    assert (t3.a, t3.b) == (0, 1) and (t8.a, t8.b) == (1, 0) and (t9.a, t9.b) == (R(1, 2), R(1, 2))


def test_sp_and_umup_invariants():
    sp = S.spec_exponents(spec("sp"))
    assert [sp[k].e_init for k in ("input", "hidden", "output")] == [0, R(1, 2), R(1, 2)]
    assert all(e.e_sgd == 0 and e.e_adam == 0 for e in sp.values())
    umup = S.spec_exponents(spec("umup"))
    assert umup["input"].e_adam == R(1, 2)   # docs/theory.md §5: embedding LR 1/sqrt(fan_out)
    assert inv(umup["hidden"])[::2] == (R(1, 2), 1) and umup["output"].e_adam == 1


def test_depth_exponents_tp6():
    d = S.depth_exponents(spec("depth_mup"))
    assert d.alpha == R(1, 2) and d.gamma("sgd") == R(1, 2) and d.gamma("adam") == R(1, 2)
    c = S.depth_exponents(spec("completep"))
    assert c.alpha == 1 and c.gamma("adam") == 0 and c.eps_adam == 1
    assert S.depth_exponents(spec("sp")) is None


def test_logit_exponent():
    assert S.logit_exponent(spec("sp")) == R(-1, 2)
    assert S.logit_exponent(spec("mup_table3")) == -1
    assert S.logit_exponent(spec("ntk")) is None


def test_fmt_exponent_is_exact():
    assert [S.fmt_exponent(v) for v in (R(1, 2), sympy.Integer(-1), sympy.oo, -sympy.oo)] == ["1/2", "-1", "oo", "-oo"]


# ---------------------------------------------------------------- vs floats

_ONE = ir.Num(numerator=1)


def _pow(k: Fraction) -> ir.Expr:
    exp = ir.BinOp(op="/", left=ir.Num(numerator=abs(k.numerator)), right=ir.Num(numerator=k.denominator))
    if k < 0:
        exp = ir.Neg(operand=exp)
    return ir.BinOp(op="^", left=ir.Sym(name="n"), right=exp)


@st.composite
def scale_exprs(draw, depth: int = 0) -> ir.Expr:
    """Positive expressions in n: powers, products, quotients, sums, sqrt."""
    k = Fraction(draw(st.integers(-8, 8)), draw(st.sampled_from([1, 2, 3, 4])))
    leaf = ir.BinOp(op="*", left=ir.Num(numerator=draw(st.integers(1, 9))), right=_pow(k))
    if depth >= 2 or draw(st.booleans()):
        return leaf
    op = draw(st.sampled_from(["+", "*", "/", "sqrt", "min", "max"]))
    if op == "sqrt":
        return ir.Call(func="sqrt", arg=draw(scale_exprs(depth + 1)))
    if op in ("min", "max"):
        return ir.MinMax(func=op, args=(leaf, draw(scale_exprs(depth + 1))))
    return ir.BinOp(op=op, left=leaf, right=draw(scale_exprs(depth + 1)))


@settings(max_examples=80)
@given(scale_exprs())
def test_leading_exponent_matches_float_slope(expr):
    k = S.leading_exponent(S.to_sympy(expr, {"n": n}))
    lo, hi = 2.0 ** 40, 2.0 ** 44
    slope = (math.log(numeric.evaluate(expr, {"n": hi})) - math.log(numeric.evaluate(expr, {"n": lo}))) / math.log(hi / lo)
    assert abs(slope - float(k)) < 0.02, (expr, k, slope)


@st.composite
def signed_exprs(draw, depth: int = 0) -> ir.Expr:
    """Like scale_exprs, with subtraction and fan_in/fan_out, so that leading
    terms may cancel (n - n + n^(-1/2)) and the sympy fallback is exercised."""
    sym = ir.Sym(name=draw(st.sampled_from(["n", "fan_in", "fan_out", "eta"])))
    k = Fraction(draw(st.integers(-4, 4)), draw(st.sampled_from([1, 2, 4])))
    leaf = ir.BinOp(op="^", left=sym, right=ir.Num.of(abs(k)) if k >= 0 else ir.Neg(operand=ir.Num.of(abs(k))))
    if depth >= 2 or draw(st.booleans()):
        return leaf
    op = draw(st.sampled_from(["+", "-", "*", "/"]))
    right = draw(signed_exprs(depth + 1))
    if op == "-" and draw(st.booleans()):  # x - x + rest: exact cancellation of the leading term
        return ir.BinOp(op="+", left=ir.BinOp(op="-", left=leaf, right=leaf), right=right)
    return ir.BinOp(op=op, left=leaf, right=right)


@settings(max_examples=80)
@given(signed_exprs(), st.sampled_from(["input", "hidden", "output", "bias"]))
def test_exact_path_equals_sympy_path(expr, kind):
    s = parse_and_resolve("parametrization t\nwidth n\nhyper eta = 3\n")
    try:
        via_sympy = S.leading_exponent(S.to_sympy(expr, S.class_env(s, kind)))
    except MupError:  # divides by an expression that is identically 0
        with pytest.raises(MupError):
            S.exact_exponent(s, kind, expr)
        return
    exact = S.exact_exponent(s, kind, expr)
    assert S.to_sympy_number(exact) == via_sympy, (expr, exact, via_sympy)


def test_check_imports_no_sympy_for_specs_without_subtraction():
    import subprocess
    import sys
    code = ("import sys; from mupspec.cli import main; main(['check', 'specs/mup_table9.mup', 'specs/umup.mup']); "
            "assert 'sympy' not in sys.modules, 'sympy imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=SPECS.parent, capture_output=True, text=True)
    assert proc.returncode in (0, 1) and "sympy imported" not in proc.stderr, proc.stderr


@settings(max_examples=60)
@given(scale_exprs())
def test_exact_path_equals_sympy_path_with_min_max(expr):
    s = parse_and_resolve("parametrization t\nwidth n\n")
    via_sympy = S.leading_exponent(S.to_sympy(expr, S.class_env(s, "hidden")))
    assert S.to_sympy_number(S.exact_exponent(s, "hidden", expr)) == via_sympy, expr

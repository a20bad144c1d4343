"""Stage 3a: symbolic scaling exponents of a spec (sympy behind one boundary).

Takes a resolved `ir.Spec`; returns, per layer class, the exponents of the
abc-parametrization (THEORY.md §0: A ∝ n^-a multiplier, B ∝ n^-b init std,
C ∝ n^-c learning rate) and the Lemma J.1 invariants

    e_init = a + b      (init scale of the effective weight A·w)
    e_sgd  = 2a + c_sgd (size of one SGD step on A·w, per unit gradient)
    e_adam = a + c_adam (size of one Adam step on A·w)

plus the depth exponents of the residual block (TP6: branch multiplier L^-α).
Used by `check` (verdicts), `convert`, `equiv` and `table`.

Expressions are turned into sympy trees by walking the IR (`to_sympy`); spec
text is never sympified. Every width symbol maps to one positive symbol `N`,
the depth symbol to `Ldepth`, hyperparameters to positive symbols (Θ(1)
constants). Leading exponents are read off the tree directly (products add
exponents, powers scale them, a sum keeps its largest term); sympy's `limit`
is only the fallback for a sum whose leading terms cancel.

Convention for zero: `leading_exponent(0) == -oo` ("vanishes faster than any
power"); so a zero init (B = 0) has b = +oo and e_init = +oo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy

from mupspec import ir
from mupspec.errors import Diagnostic, MupError

N = sympy.Symbol("n", positive=True)
Ldepth = sympy.Symbol("L", positive=True)
D_IN = sympy.Symbol("d_in", positive=True)    # the input dimension: finite, Θ(1) in width
D_OUT = sympy.Symbol("d_out", positive=True)  # the output dimension: finite
OO = sympy.oo
_RESERVED = {"n", "L", "d_in", "d_out"}

# fan_in / fan_out of each parameter class (TP5 App. B; THEORY.md §8):
# input maps finite -> n, hidden n -> n, output n -> finite, and a bias or a
# norm gain is a vector of length n (fan_in 1).
CLASS_FANS: dict[str, tuple[sympy.Expr, sympy.Expr]] = {
    "input": (D_IN, N),
    "hidden": (N, N),
    "output": (N, D_OUT),
    "bias": (sympy.Integer(1), N),
    "norm": (sympy.Integer(1), N),
}


# ---------------------------------------------------------------- IR -> sympy


def to_sympy(expr, env: dict[str, sympy.Expr]) -> sympy.Expr:
    """The sympy tree of an IR expression, symbols bound by `env`."""
    if isinstance(expr, ir.Num):
        return sympy.Rational(expr.numerator, expr.denominator)
    if isinstance(expr, ir.Sym):
        if expr.name not in env:
            raise MupError(Diagnostic(f"`{expr.name}` has no meaning here", expr.span,
                                      "fan_in/fan_out belong to parameter classes; use a width or depth symbol"))
        return env[expr.name]
    if isinstance(expr, ir.Neg):
        return -to_sympy(expr.operand, env)
    if isinstance(expr, ir.Call):
        return sympy.sqrt(to_sympy(expr.arg, env))
    left, right = to_sympy(expr.left, env), to_sympy(expr.right, env)
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    if expr.op == "*":
        return left * right
    if expr.op == "/":
        if right == 0:
            raise MupError(Diagnostic("division by zero", expr.span))
        return left / right
    return left ** right


def hyper_symbol(name: str) -> sympy.Symbol:
    """A hyperparameter: a positive Θ(1) constant (renamed if it would clash
    with one of the symbols this module reserves)."""
    return sympy.Symbol(name + "_" if name in _RESERVED else name, positive=True)


def base_env(spec: ir.Spec) -> dict[str, sympy.Expr]:
    """Widths -> N, depth -> Ldepth, hyperparameters -> positive constants."""
    env: dict[str, sympy.Expr] = {h.name: hyper_symbol(h.name) for h in spec.hypers}
    env |= {w: N for w in spec.widths}
    if spec.depth:
        env[spec.depth] = Ldepth
    return env


def class_env(spec: ir.Spec, kind: str) -> dict[str, sympy.Expr]:
    """`base_env` plus fan_in/fan_out of the class (none for attention/residual)."""
    env = base_env(spec)
    if kind in CLASS_FANS:
        env["fan_in"], env["fan_out"] = CLASS_FANS[kind]
    return env


def rule_sympy(spec: ir.Spec, kind: str, field: str) -> sympy.Expr:
    """The (possibly default) rule `field` of block `kind` as a sympy tree."""
    block = spec.block(kind) or ir.Block(kind=kind)
    return to_sympy(ir.rule_value(block, field, spec.widths), class_env(spec, kind))


# ---------------------------------------------------------------- leading terms


def leading_term(f: sympy.Expr, var: sympy.Symbol = N) -> tuple[sympy.Expr, sympy.Expr]:
    """(coef, k) with f = coef·var^k·(1 + o(1)) as var -> oo; every other
    symbol (widths when var is Ldepth, depth when var is N, hyperparameters)
    counts as a positive constant. f == 0 gives (0, -oo)."""
    if isinstance(f, int):  # never a string: spec text is not sympified
        f = sympy.Integer(f)
    return _lead(f, var)


def leading_exponent(f: sympy.Expr, var: sympy.Symbol = N) -> sympy.Expr:
    """k with f = Θ(var^k): a sympy Rational, or -oo when f == 0."""
    return leading_term(f, var)[1]


@lru_cache(maxsize=4096)
def _lead(f: sympy.Expr, var: sympy.Symbol) -> tuple[sympy.Expr, sympy.Expr]:
    if f == 0:
        return sympy.Integer(0), -OO
    if not f.has(var):
        return f, sympy.Integer(0)
    if f == var:
        return sympy.Integer(1), sympy.Integer(1)
    if f.is_Mul:
        coef, k = sympy.Integer(1), sympy.Integer(0)
        for factor in f.args:
            c, e = _lead(factor, var)
            coef, k = coef * c, k + e
        return coef, k
    if f.is_Pow and not f.exp.has(var) and f.exp.is_Rational:
        c, e = _lead(f.base, var)
        if c == 0:
            return (sympy.Integer(0), -OO) if f.exp > 0 else _limit_lead(f, var)
        return c ** f.exp, e * f.exp
    if f.is_Add:
        terms = [_lead(t, var) for t in f.args]
        top = max(e for _, e in terms)
        coef = sympy.Add(*[c for c, e in terms if e == top])
        if coef != 0 and coef.is_zero is not True:
            return coef, top
    return _limit_lead(f, var)  # leading terms cancel, or a form the fast path does not know


def _limit_lead(f: sympy.Expr, var: sympy.Symbol) -> tuple[sympy.Expr, sympy.Expr]:
    """Slow, general path: k = lim log|f|/log(var), coef = lim f/var^k."""
    if sympy.simplify(f) == 0:
        return sympy.Integer(0), -OO
    k = sympy.limit(sympy.log(sympy.Abs(f)) / sympy.log(var), var, OO)
    if not (k.is_Rational or k in (OO, -OO)):
        raise MupError(Diagnostic(f"cannot find the width/depth exponent of {f}",
                                  hint="write scales as products and powers of the symbols"))
    if k in (OO, -OO):
        return sympy.Integer(1), k
    return sympy.limit(f / var ** k, var, OO), k


def positive_at_scale(f: sympy.Expr, var: sympy.Symbol = N) -> bool:
    """False when f's leading coefficient is provably negative (a scale that
    turns negative at large width)."""
    return leading_term(f, var)[0].is_negative is not True


# ---------------------------------------------------------------- exponents


@dataclass(frozen=True)
class ClassExponents:
    """Width exponents of one parameter class (abc convention: A ∝ n^-a).

    b is +oo for a zero init. wd_* and eps_adam follow the same sign
    convention (value ∝ n^-exponent)."""

    kind: str
    a: sympy.Expr
    b: sympy.Expr
    c_sgd: sympy.Expr
    c_adam: sympy.Expr
    wd_sgd: sympy.Expr
    wd_adam: sympy.Expr
    eps_adam: sympy.Expr

    @property
    def e_init(self) -> sympy.Expr:
        return self.a + self.b

    @property
    def e_sgd(self) -> sympy.Expr:
        return 2 * self.a + self.c_sgd

    @property
    def e_adam(self) -> sympy.Expr:
        return self.a + self.c_adam

    def c(self, optimizer: str) -> sympy.Expr:
        return self.c_sgd if optimizer == "sgd" else self.c_adam

    def e_opt(self, optimizer: str) -> sympy.Expr:
        return self.e_sgd if optimizer == "sgd" else self.e_adam


def _neg_exponent(f: sympy.Expr, var: sympy.Symbol = N) -> sympy.Expr:
    return -leading_exponent(f, var)


def init_std(spec: ir.Spec, kind: str) -> sympy.Expr:
    """B: the init standard deviation; a norm gain starts at 1 (not random)."""
    if kind == "norm":
        return sympy.Integer(1)
    return sympy.sqrt(rule_sympy(spec, kind, "init.var"))


def class_exponents(spec: ir.Spec, kind: str) -> ClassExponents:
    """Width exponents of class `kind` (its block, or the defaults if absent)."""
    def neg(field: str) -> sympy.Expr:
        return _neg_exponent(rule_sympy(spec, kind, field))
    return ClassExponents(kind=kind, a=neg("mult"), b=_neg_exponent(init_std(spec, kind)),
                          c_sgd=neg("lr.sgd"), c_adam=neg("lr.adam"), wd_sgd=neg("wd.sgd"),
                          wd_adam=neg("wd.adam"), eps_adam=neg("eps.adam"))


def spec_exponents(spec: ir.Spec) -> dict[str, ClassExponents]:
    """ClassExponents of every layer class the spec has a block for."""
    return {k: class_exponents(spec, k) for k in ir.LAYER_KINDS if spec.block(k) is not None}


# ---------------------------------------------------------------- depth (TP6)


@dataclass(frozen=True)
class DepthExponents:
    """Depth exponents of the residual block (branch multiplier ∝ L^-alpha,
    residual-branch LR factor ∝ L^-c) and TP6's gamma per optimizer: a block's
    contribution to the residual stream moves by L^-(alpha+gamma) per step.
    SGD: the branch gradient carries the multiplier too, gamma = alpha + c_sgd;
    Adam normalizes it away, gamma = c_adam. Hidden-class rules that mention
    the depth symbol contribute to c as well."""

    alpha: sympy.Expr
    c_sgd: sympy.Expr
    c_adam: sympy.Expr
    eps_adam: sympy.Expr
    alpha_width: sympy.Expr  # width exponent of the residual multiplier (should be 0)

    def gamma(self, optimizer: str) -> sympy.Expr:
        return self.alpha + self.c_sgd if optimizer == "sgd" else self.c_adam


def depth_exponents(spec: ir.Spec) -> DepthExponents | None:
    """None when the spec declares no depth symbol and no residual block."""
    if spec.depth is None and spec.block("residual") is None:
        return None

    def neg_l(kind: str, field: str) -> sympy.Expr:
        return _neg_exponent(rule_sympy(spec, kind, field), Ldepth)

    mult = rule_sympy(spec, "residual", "mult")
    return DepthExponents(
        alpha=_neg_exponent(mult, Ldepth),
        c_sgd=neg_l("residual", "lr.sgd") + neg_l("hidden", "lr.sgd"),
        c_adam=neg_l("residual", "lr.adam") + neg_l("hidden", "lr.adam"),
        eps_adam=neg_l("residual", "eps.adam") + neg_l("hidden", "eps.adam"),
        alpha_width=_neg_exponent(mult, N),
    )


def logit_exponent(spec: ir.Spec) -> sympy.Expr | None:
    """Width exponent k of the attention logit scale (∝ n^k), None without an
    attention block: μP's 1/d is k = -1, SP's 1/sqrt(d) is k = -1/2."""
    block = spec.block("attention")
    if block is None:
        return None
    return leading_exponent(to_sympy(ir.rule_value(block, "logit", spec.widths), base_env(spec)))


def fmt_exponent(value: sympy.Expr) -> str:
    """Exact rational text: '1/2', '-1', 'oo', '-oo'."""
    if value == OO:
        return "oo"
    if value == -OO:
        return "-oo"
    return str(sympy.Rational(value))

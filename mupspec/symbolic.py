"""Stage 3a: symbolic scaling exponents of a spec (sympy behind one boundary).

Takes a resolved `ir.Spec`; returns, per layer class, the exponents of the
abc-parametrization (docs/theory.md §1: A ∝ n^-a multiplier, B ∝ n^-b init std,
C ∝ n^-c learning rate) and the Lemma J.1 invariants

    e_init = a + b      (init scale of the effective weight A·w)
    e_sgd  = 2a + c_sgd (size of one SGD step on A·w, per unit gradient)
    e_adam = a + c_adam (size of one Adam step on A·w)

plus the depth exponents of the residual block (TP6: branch multiplier L^-α).
Used by `check` (verdicts), `convert`, `equiv` and `table`.

Two paths give the same exponents. `to_sympy` + `leading_term` build sympy
trees by walking the IR (spec text is never sympified): every width symbol
maps to one positive symbol `N`, the depth symbol to `Ldepth`,
hyperparameters to positive symbols (Θ(1) constants); leading exponents are
read off the tree (products add exponents, powers scale them, a sum keeps its
largest term), sympy's `limit` only when leading terms cancel. The exact path
(`exact_exponent`, used by `check`) does the same walk on the IR with
Fractions and a sign per term; it hands the expression to the sympy path only
where a sum's leading terms have opposite signs (they may cancel), so that
checking an ordinary spec never pays for importing sympy. The public
`*_exponents` functions return sympy numbers (pass `exact=True` for Fractions
and float infinities).

Convention for zero: `leading_exponent(0) == -oo` ("vanishes faster than any
power"); so a zero init (B = 0) has b = +oo and e_init = +oo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache

from mupspec import ir
from mupspec.errors import Diagnostic, MupError
from mupspec.resolve import constant_value

INF = math.inf
_RESERVED = {"n", "L", "d_in", "d_out"}


@lru_cache(maxsize=1)
def _constants() -> dict:
    import sympy

    n, one = sympy.Symbol("n", positive=True), sympy.Integer(1)
    d_in, d_out = sympy.Symbol("d_in", positive=True), sympy.Symbol("d_out", positive=True)
    return {
        "N": n, "Ldepth": sympy.Symbol("L", positive=True), "D_IN": d_in, "D_OUT": d_out, "OO": sympy.oo,
        # fan_in / fan_out of each parameter class (TP5 App. B; docs/theory.md §7):
        # input maps finite -> n, hidden n -> n, output n -> finite, and a bias
        # or a norm gain is a vector of length n (fan_in 1).
        "CLASS_FANS": {"input": (d_in, n), "hidden": (n, n), "output": (n, d_out), "bias": (one, n), "norm": (one, n)},
    }


def __getattr__(name: str):
    """N, Ldepth, D_IN, D_OUT, OO, CLASS_FANS: sympy objects, built on first use
    so that importing this module does not import sympy (PEP 562)."""
    if name in ("N", "Ldepth", "D_IN", "D_OUT", "OO", "CLASS_FANS"):
        return _constants()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- IR -> sympy


def to_sympy(expr, env: dict):
    """The sympy tree of an IR expression, symbols bound by `env`."""
    import sympy

    def sym(node):
        if node.name not in env:
            raise MupError(Diagnostic(f"`{node.name}` has no meaning here", node.span,
                                      "fan_in/fan_out belong to parameter classes; use a width or depth symbol"))
        return env[node.name]

    def binary(node, left, right):
        if node.op == "/" and right == 0:
            raise MupError(Diagnostic("division by zero", node.span))
        return left ** right if node.op == "^" else ir.ARITHMETIC[node.op](left, right)

    return ir.fold(expr, num=lambda node: sympy.Rational(node.numerator, node.denominator), sym=sym,
                   neg=lambda value, _: -value, sqrt=lambda value, _: sympy.sqrt(value), binary=binary,
                   choose=lambda node, values: (sympy.Min if node.func == "min" else sympy.Max)(*values))


def hyper_symbol(name: str):
    """A hyperparameter: a positive Θ(1) constant (renamed if it would clash
    with one of the symbols this module reserves)."""
    import sympy

    return sympy.Symbol(name + "'" if name in _RESERVED else name, positive=True)  # `'`: no spec name has one


def base_env(spec: ir.Spec) -> dict:
    """Free widths -> N, derived widths -> their definitions, depth ->
    Ldepth, hyperparameters -> positive constants."""
    c = _constants()
    env = {h.name: hyper_symbol(h.name) for h in spec.hypers}
    for w in spec.widths:
        value = spec.width_value(w)
        env[w] = c["N"] if value is None else to_sympy(value, env)
    if spec.depth:
        env[spec.depth] = c["Ldepth"]
    return env


def class_env(spec: ir.Spec, kind: str) -> dict:
    """`base_env` plus fan_in/fan_out of the class (none for attention/residual)."""
    env = base_env(spec)
    fans = _constants()["CLASS_FANS"]
    if ir.role_class(kind) in fans:
        env["fan_in"], env["fan_out"] = fans[ir.role_class(kind)]
    return env


def _rule(spec: ir.Spec, kind: str, field: str):
    """The rule of a class or sub-role (a sub-role falls back to its class)."""
    return ir.role_rule(spec, kind, field)


def rule_sympy(spec: ir.Spec, kind: str, field: str):
    """The (possibly default) rule `field` of block `kind` as a sympy tree."""
    return to_sympy(_rule(spec, kind, field), class_env(spec, kind))


# ---------------------------------------------------------------- leading terms (sympy)


def leading_term(f, var=None) -> tuple:
    """(coef, k) with f = coef·var^k·(1 + o(1)) as var -> oo (var defaults to
    N); every other symbol (widths when var is Ldepth, depth when var is N,
    hyperparameters) counts as a positive constant. f == 0 gives (0, -oo)."""
    import sympy

    if isinstance(f, int):  # never a string: spec text is not sympified
        f = sympy.Integer(f)
    return _lead(f, var if var is not None else _constants()["N"])


def leading_exponent(f, var=None):
    """k with f = Θ(var^k): a sympy Rational, or -oo when f == 0."""
    return leading_term(f, var)[1]


@lru_cache(maxsize=4096)
def _lead(f, var) -> tuple:
    import sympy

    if f == 0:
        return sympy.Integer(0), -sympy.oo
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
            return (sympy.Integer(0), -sympy.oo) if f.exp > 0 else _limit_lead(f, var)
        return c ** f.exp, e * f.exp
    if isinstance(f, (sympy.Min, sympy.Max)):  # the term that is smallest / largest at large var
        picked = _asymptotic_pick([_lead(t, var) for t in f.args], largest=isinstance(f, sympy.Max))
        if picked is not None:
            return picked
    if f.is_Add:
        terms = [_lead(t, var) for t in f.args]
        top = max(e for _, e in terms)
        coef = sympy.Add(*[c for c, e in terms if e == top])
        if coef != 0 and coef.is_zero is not True:
            return coef, top
    return _limit_lead(f, var)  # leading terms cancel, or a form the fast path does not know


def _asymptotic_pick(terms: list, largest: bool):
    """Of leading terms (coef, exponent), the one largest (or smallest) at
    large var; None when their signs or sizes cannot be compared."""
    import sympy

    if all(c.is_positive for c, _ in terms):   # the usual case; coefficients may hold other widths
        top = (max if largest else min)(e for _, e in terms)
        return (sympy.Max if largest else sympy.Min)(*[c for c, e in terms if e == top]), top
    keys = [_growth_key(c, e) for c, e in terms]   # a negative or zero term among them (a bad scale,
    if None in keys:                               # reported later as such)
        return None
    try:
        top = (max if largest else min)(keys)
    except TypeError:   # symbolic coefficients that do not order
        return None
    return next(t for t, key in zip(terms, keys) if key == top)


def _growth_key(coef, exponent):
    """Orders terms coef * var^exponent by their value at large var: positive
    ones by exponent then coefficient, zero, then negative ones (the larger
    the exponent, the smaller). None when the coefficient's sign is unknown."""
    import sympy

    if exponent == -sympy.oo or coef == 0:
        return (1, 0, 0)
    if coef.is_positive:
        return (2, exponent, coef)
    if coef.is_negative:
        return (0, -exponent, coef)
    return None


def _limit_lead(f, var) -> tuple:
    """Slow, general path: k = lim log|f|/log(var), coef = lim f/var^k."""
    import sympy

    if f.is_polynomial(var):  # e.g. (n+1)^64 - n^64: expanding is instant, the limit takes seconds
        poly = sympy.Poly(f, var)
        if poly.is_zero:
            return sympy.Integer(0), -sympy.oo
        return poly.LC(), sympy.Integer(poly.degree())
    f = _factor_radicands(f)
    if sympy.simplify(f) == 0:
        return sympy.Integer(0), -sympy.oo
    series = _series_lead(f, var)
    if series is not None:
        return series
    unknown = MupError(Diagnostic(f"cannot find the width/depth exponent of {f}",
                                  hint="write scales as products and powers of the symbols"))
    try:
        k = sympy.limit(sympy.log(sympy.Abs(f)) / sympy.log(var), var, sympy.oo)
        if not (k.is_Rational or k in (sympy.oo, -sympy.oo)):
            raise unknown
        if k in (sympy.oo, -sympy.oo):
            return sympy.Integer(1), k
        return sympy.limit(f / var ** k, var, sympy.oo), k
    except (TypeError, ValueError, NotImplementedError, AttributeError) as err:  # sympy's own failures on
        raise unknown from err                                                   # forms its limit code lacks


def _series_lead(f, var):
    """The leading term of f's expansion in x = 1/var at x -> 0, or None when
    sympy cannot expand f. Radicals whose leading terms cancel, such as
    sqrt(n^2 + 2n + 1) - n, expand in milliseconds where `limit` of
    log|f|/log(var) ran for minutes. Spec expressions are algebraic, so a
    nonzero f has such an expansion; one that vanishes to every order tried
    is refused rather than guessed to be zero."""
    import sympy

    if f.atoms(sympy.Function):   # exp, log (sympy input, never a spec's): left to `limit`
        return None
    x = sympy.Dummy("x", positive=True)
    g = f.subs(var, 1 / x)
    for order in (2, 4, 8, 16, 32, 64):
        try:
            terms = sympy.series(g, x, 0, order).removeO()
        except (NotImplementedError, ValueError, TypeError):
            return None
        if terms != 0:
            coef, e = terms.as_leading_term(x).as_coeff_exponent(x)
            if coef == 0 or coef.has(x) or not e.is_Rational:
                return None
            return coef, -e
    raise MupError(Diagnostic(f"cannot find the width/depth exponent of {f}: its expansion in 1/{var} "
                              f"cancels to every order up to {var}^-64 (it may be exactly zero)",
                              hint="simplify the expression: write the scale it has at large width"))


def _factor_radicands(f):
    """sqrt(n^2 + 2n + 1) -> n + 1: a radicand that factors into a power is
    taken out (sympy does so for positive symbols), so that `simplify` sees
    exact cancellations."""
    import sympy

    return f.replace(lambda e: e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer,
                     lambda e: sympy.factor(e.base) ** e.exp)


def positive_at_scale(f, var=None) -> bool:
    """False when f's leading coefficient is provably negative (a scale that
    turns negative at large width)."""
    return leading_term(f, var)[0].is_negative is not True


# ---------------------------------------------------------------- leading terms (exact, no sympy)

# Exponents of each symbol in (width, depth); fan_in/fan_out per class as in
# CLASS_FANS; anything else (hyperparameters, d_in, d_out) is a constant.
_FAN_EXPONENTS = {"input": (0, 1), "hidden": (1, 1), "output": (1, 0), "bias": (0, 1), "norm": (0, 1)}


def _symbol_exponents(spec: ir.Spec, kind: str, axis: int) -> dict[str, Fraction]:
    env = width_exponents(spec) if axis == 0 else {w: Fraction(0) for w in spec.widths}
    if spec.depth:
        env[spec.depth] = Fraction(axis == 1)
    if ir.role_class(kind) in _FAN_EXPONENTS and axis == 0:
        env["fan_in"], env["fan_out"] = (Fraction(x) for x in _FAN_EXPONENTS[ir.role_class(kind)])
    return env


def width_exponents(spec: ir.Spec) -> dict[str, Fraction]:
    """Width exponent of every width symbol: 1 for a free one (all free
    symbols grow together), its definition's for a derived one (0 for a
    fixed size: `d_head = 64`)."""
    env: dict[str, Fraction] = {}
    for w in spec.widths:
        value = spec.width_value(w)
        if value is None:
            env[w] = Fraction(1)
            continue
        try:
            sign, k = _exact(value, env)
        except _MayCancel:
            sign, k = -1, 0
        if sign <= 0 or k == -INF:
            raise MupError(Diagnostic(f"cannot tell how width symbol `{w}` grows", value.span,
                                      "define it as a product of numbers, powers and earlier width symbols"))
        env[w] = k
    return env


class _MayCancel(Exception):
    """A sum whose leading terms have opposite signs: ask sympy."""


def _exact(expr, env: dict[str, Fraction]) -> tuple[int, Fraction | float]:
    """(sign, k) of expr = sign·Θ(var^k); (0, -inf) for zero. Every symbol is
    positive, so only `-` and negation can make a leading term cancel."""
    if isinstance(expr, ir.Num):
        return (1, Fraction(0)) if expr.numerator else (0, -INF)
    if isinstance(expr, ir.Sym):
        return 1, env.get(expr.name, Fraction(0))
    if isinstance(expr, ir.Neg):
        sign, k = _exact(expr.operand, env)
        return -sign, k
    if isinstance(expr, ir.Call):
        sign, k = _exact(expr.arg, env)
        if sign < 0:  # a definite sign: cancellations raised _MayCancel already
            raise _not_real(expr, "the square root of a scale that is negative at large width")
        return sign, k / 2
    if isinstance(expr, ir.MinMax):
        terms = [_exact(a, env) for a in expr.args]
        if any(sign < 0 for sign, _ in terms):
            raise _MayCancel
        if expr.func == "min":  # a zero term makes the min zero
            return (0, -INF) if any(sign == 0 for sign, _ in terms) else (1, min(k for _, k in terms))
        live = [k for sign, k in terms if sign > 0]
        return (1, max(live)) if live else (0, -INF)
    if expr.op in "+-":
        (s1, k1), (s2, k2) = _exact(expr.left, env), _exact(expr.right, env)
        s2 = -s2 if expr.op == "-" else s2
        if s1 == 0 or k2 > k1:
            return s2, k2
        if s2 == 0 or k1 > k2:
            return s1, k1
        if s1 != s2:
            raise _MayCancel
        return s1, k1
    if expr.op == "^":
        p = constant_value(expr.right)
        sign, k = _exact(expr.left, env)
        if p is None or (sign == 0 and p <= 0):
            raise _MayCancel
        if sign < 0 and p.denominator > 1:
            raise _not_real(expr, "a scale that is negative at large width raised to a fractional power")
        return sign ** p.numerator if sign < 0 else sign, (k * p if sign else -INF)
    (s1, k1), (s2, k2) = _exact(expr.left, env), _exact(expr.right, env)
    if expr.op == "/":
        if s2 == 0:
            raise _MayCancel
        k2 = -k2
    return (s1 * s2, k1 + k2) if s1 and s2 else (0, -INF)


def _not_real(expr, what: str) -> MupError:
    return MupError(Diagnostic(f"{what}: not a real number", expr.span,
                               "init variances, multipliers, learning rates and eps must stay positive; "
                               "check the signs of the terms"))


def exact_exponent(spec: ir.Spec, kind: str, expr, axis: int = 0) -> Fraction | float:
    """Leading exponent of `expr` (as it stands in block `kind`) in width
    (axis 0) or depth (axis 1): a Fraction, or -inf for zero. Falls back to
    the sympy path where leading terms may cancel."""
    try:
        sign, k = _exact(expr, _symbol_exponents(spec, kind, axis))
        if sign >= 0:
            return k
    except _MayCancel:
        pass
    c = _constants()
    var = c["N"] if axis == 0 else c["Ldepth"]
    coef, k = leading_term(to_sympy(expr, class_env(spec, kind)), var)
    if coef.is_extended_real is False:
        raise _not_real(expr, f"this scale is not real at large {'width' if axis == 0 else 'depth'} (it behaves "
                              f"like {coef}*{var}^{k})")
    if coef.is_negative:
        raise MupError(Diagnostic(f"this scale is negative at large {'width' if axis == 0 else 'depth'}: "
                                  f"it behaves like {coef}*{var}^{k}", expr.span,
                                  "init variances, multipliers, learning rates and eps must stay positive; "
                                  "check the signs of the terms"))
    return -INF if k == -c["OO"] else INF if k == c["OO"] else Fraction(int(k.p), int(k.q))


# ---------------------------------------------------------------- exponents


# How each optimizer family's step on the effective weight A·w scales
# (docs/checking.md, "Optimizer families"): e_opt = MULT_WEIGHT·a + c, plus b
# for Adafactor (its step is relative to the parameter's RMS: Everett et al.
# 2024) and the Muon shift below for a class optimized by Muon.
MULT_WEIGHT = {"sgd": 2, "adam": 1, "adafactor": 1, "lion": 1, "muon": 1}


def muon_shift(kind: str) -> Fraction:
    """Muon's orthogonalized step has spectral norm 1 (Yang, Simon & Bernstein
    2023's spectral condition). Aligned with a rank-one gradient it is u·vᵀ
    with unit vectors, entries Θ((fan_in·fan_out)^-1/2): the entry-wise
    equivalent of an Adam step shrunk by (fan_in·fan_out)^(1/2), i.e. the
    class's width exponents of fan_in and fan_out, halved and added."""
    fan_in, fan_out = _FAN_EXPONENTS[ir.role_class(kind)]
    return Fraction(fan_in + fan_out, 2)


@dataclass(frozen=True)
class ClassExponents:
    """Width exponents of one parameter class (abc convention: A ∝ n^-a).

    b is +oo for a zero init. wd_* and eps_adam follow the same sign
    convention (value ∝ n^-exponent). Values are sympy numbers, or Fractions
    and float infinities from the exact path. `on_muon`: the class has an
    `lr.muon` rule, so Muon (not AdamW) steps it in the muon family."""

    kind: str
    a: object
    b: object
    c_sgd: object
    c_adam: object
    wd_sgd: object
    wd_adam: object
    eps_adam: object
    c_adafactor: object = 0
    c_lion: object = 0
    c_muon: object = 0
    wd_adafactor: object = 0
    wd_lion: object = 0
    wd_muon: object = 0
    on_muon: bool = False

    @property
    def e_init(self):
        return self.a + self.b

    @property
    def e_sgd(self):
        return 2 * self.a + self.c_sgd

    @property
    def e_adam(self):
        return self.a + self.c_adam

    def family(self, optimizer: str) -> str:
        """The family that steps this class: Muon's hybrid puts classes
        without an `lr.muon` rule on AdamW."""
        return "adam" if optimizer == "muon" and not self.on_muon else optimizer

    def c(self, optimizer: str):
        return getattr(self, f"c_{self.family(optimizer)}")

    def wd(self, optimizer: str):
        return getattr(self, f"wd_{self.family(optimizer)}")

    def e_opt(self, optimizer: str):
        family = self.family(optimizer)
        e = MULT_WEIGHT[family] * self.a + self.c(optimizer)
        if family == "adafactor":  # relative step: scaled by the RMS of w (eps2's floor for a zero init)
            e += self.b if self.b != INF else 0
        if family == "muon":
            e += muon_shift(self.kind)
        return e


def to_sympy_number(value):
    """A Fraction / float infinity as a sympy number."""
    import sympy

    if value in (INF, -INF):
        return sympy.oo if value > 0 else -sympy.oo
    return sympy.Rational(value.numerator, value.denominator)


def _as_sympy(obj):
    fields = {f: to_sympy_number(getattr(obj, f)) for f in obj.__dataclass_fields__
              if f not in ("kind", "on_muon", "layers", "update")}
    return replace(obj, **fields)


def _neg(spec: ir.Spec, kind: str, expr, axis: int = 0):
    return -exact_exponent(spec, kind, expr, axis)


def init_std_exponent(spec: ir.Spec, kind: str, axis: int = 0):
    """b: minus the width (or depth) exponent of the init std; a norm gain starts at 1."""
    if ir.role_class(kind) == "norm":
        return Fraction(0)
    std = _given_std(spec, kind)
    if std is not None:  # the std itself, so that a negative one is refused as the parser refuses `-1`
        return _neg(spec, kind, std, axis)
    return _neg(spec, kind, _rule(spec, kind, "init.var"), axis) / 2


def _given_std(spec: ir.Spec, kind: str):
    """The `init.std` expression the init of class or sub-role `kind` comes
    from (the block `_rule` takes it from), or None where it is an init.var."""
    block = ir.answering_block(spec, kind, "init.var")
    std = block.rule("init.std") if block is not None else None
    return None if std is None else std.value


def _nonzero(spec: ir.Spec, kind: str, field: str, k, axis: int = 0):
    """A multiplier, LR or eps that vanishes identically (`n - n`, `0*n`) has
    no exponent: a located error, as a constant 0 is in validation."""
    if k == -INF:
        expr = _rule(spec, kind, field)
        raise MupError(Diagnostic(f"`{field}` of `{kind}` is zero at every {'width' if axis == 0 else 'depth'}",
                                  expr.span, "only init (zero init) and weight decay may be 0; "
                                  "a zero multiplier, LR or eps removes the layer"))
    return k


def class_exponents(spec: ir.Spec, kind: str, exact: bool = False, axis: int = 0) -> ClassExponents:
    """Width (axis 0) or depth (axis 1) exponents of class `kind` (its
    block, or the defaults if absent)."""
    def neg(field: str):
        k = exact_exponent(spec, kind, _rule(spec, kind, field), axis)
        return -(k if field.startswith("wd.") else _nonzero(spec, kind, field, k, axis))
    on_muon = any(ir.given_rule(spec.block(k), "lr.muon") is not None for k in (kind, ir.role_class(kind)))
    families = {f"{'c' if group == 'lr' else group}_{o}": neg(f"{group}.{o}") for group in ("lr", "wd")
                for o in ir.OPTIMIZERS if f"{group}.{o}" in ir.BLOCK_FIELDS[kind]}
    ex = ClassExponents(kind=kind, a=neg("mult"), b=init_std_exponent(spec, kind, axis), eps_adam=neg("eps.adam"),
                        on_muon=on_muon, **families)
    return ex if exact else _as_sympy(ex)


def spec_exponents(spec: ir.Spec, exact: bool = False) -> dict[str, ClassExponents]:
    """ClassExponents of every layer class the spec has a block for."""
    return {k: class_exponents(spec, k, exact) for k in ir.LAYER_KINDS if spec.block(k) is not None}


def subrole_exponents(spec: ir.Spec, exact: bool = False) -> dict[str, ClassExponents]:
    """ClassExponents of every sub-role the spec has a block for (its own
    rules where it states them, its class's elsewhere)."""
    return {r: class_exponents(spec, r, exact) for r in spec.subroles}


# ---------------------------------------------------------------- depth (TP6)


@dataclass(frozen=True)
class DepthExponents:
    """Depth exponents of a residual branch x += mult·g(x; W_1..W_k) (TP6),
    with every symbol of every field counted: the residual block's and the
    hidden class's (whose layers are the branches' layers).

    alpha: the branch output at init is L^-alpha (TP6's branch multiplier
      L^-α when the init does not depend on L; a depth factor in `init`, like
      GPT-2's std/sqrt(2L) on the branch's last layer, counts the same way).
    update[opt]: one step moves a branch's output by L^-update (TP6's α+γ):
      the largest change over the branch's k layers, each layer's own step
      carried through the others at init.
    gamma(opt) = update - alpha, TP6's γ. These are the Lemma J.1 invariants
    in L, so a conversion by a depth-dependent θ keeps them."""

    alpha: object
    update: dict
    mult_alpha: object   # the residual multiplier's own depth exponent
    eps_adam: object
    alpha_width: object  # width exponent of the residual multiplier (should be 0)
    layers: int = 1      # TP6's block depth: weight layers per branch

    def gamma(self, optimizer: str):
        return self.update[optimizer] - self.alpha

    @property
    def c_sgd(self):  # the depth exponent of the branch's SGD LR (JSON, schema 1)
        return self.update["sgd"] - 2 * self.mult_alpha

    @property
    def c_adam(self):
        return self.update["adam"] - self.mult_alpha


def _layer_change(layer_inits: list, j: int, a_layer, c, family: str, res_a):
    """The depth exponent of a branch output's change by layer j's step:
    mult · (layers above j at init) · ΔW_j · (layers below j at init). SGD's
    gradient at layer j carries mult and the other layers once more;
    Adafactor's step is relative to the layer's own init."""
    # summed, not `sum - own`: a zero init (inf) would give inf - inf = nan
    others = sum(init for i, init in enumerate(layer_inits) if i != j)
    if family == "sgd":
        return 2 * (res_a + a_layer + others) + c
    own_b = layer_inits[j] - a_layer  # Adafactor's RMS of w; a zero init steps from eps2's floor, as in e_opt
    return res_a + others + a_layer + c + (own_b if family == "adafactor" and own_b != INF else 0)


def _branch(spec: ir.Spec, end: str, layers: int, res_a, res_b) -> tuple[object, dict]:
    """(alpha, update per optimizer) of a branch of `layers` layers whose
    last layer is `end` (the others are hidden), in depth."""
    parts = [class_exponents(spec, "hidden", exact=True, axis=1)] * (layers - 1) + \
        [class_exponents(spec, end, exact=True, axis=1)]
    inits = [p.a + p.b for p in parts]
    inits[-1] += res_b  # the residual init factor scales each branch's last layer only
    alpha = res_a + sum(inits)
    update = {}
    for opt in ir.OPTIMIZERS:
        changes = []
        for j, p in enumerate(parts):
            family = p.family(opt)
            c = p.c(opt) + _neg(spec, "residual", _rule(spec, "residual", f"lr.{family}"), axis=1)
            changes.append(_layer_change(inits, j, p.a, c, family, res_a))
        update[opt] = min(changes)
    return alpha, update


def depth_exponents(spec: ir.Spec, exact: bool = False) -> DepthExponents | None:
    """None when the spec declares no depth symbol and no residual block."""
    if spec.depth is None and spec.block("residual") is None:
        return None

    def neg_l(kind: str, field: str):
        k = exact_exponent(spec, kind, _rule(spec, kind, field), axis=1)
        return -(k if field.startswith(("wd.", "init.")) else _nonzero(spec, kind, field, k, axis=1))

    res_a, res_b = neg_l("residual", "mult"), init_std_exponent(spec, "residual", axis=1)
    layers = int(constant_value(_rule(spec, "residual", "layers")) or 1)
    # each branch ends in a hidden layer, or in the sub-role that ends it
    # (attention's and the MLP's output projections: GPT-2's std/sqrt(2L))
    ends = [r for r in ("attn_out", "mlp_out") if spec.block(r) is not None] or ["hidden"]
    branches = [_branch(spec, end, layers, res_a, res_b) for end in ends]
    alpha = min(b[0] for b in branches)  # the largest branch decides
    update = {opt: min(b[1][opt] for b in branches) for opt in ir.OPTIMIZERS}
    d = DepthExponents(alpha=alpha, update=update, mult_alpha=res_a,
                       eps_adam=neg_l("residual", "eps.adam") + neg_l("hidden", "eps.adam"),
                       alpha_width=_neg(spec, "residual", _rule(spec, "residual", "mult")), layers=layers)
    if exact:
        return d
    return replace(_as_sympy(d), update={o: to_sympy_number(v) for o, v in update.items()})


def validate_scales(spec: ir.Spec) -> None:
    """Raise the located MupError `check` would for a rule that is negative,
    zero or not real at large width or depth (convert and codegen call this
    before they rewrite or emit anything)."""
    spec_exponents(spec, exact=True)
    depth_exponents(spec, exact=True)
    logit_exponent(spec, exact=True)


def logit_exponent(spec: ir.Spec, exact: bool = False):
    """Width exponent k of the attention logit scale (∝ n^k), None without an
    attention block: μP's 1/d is k = -1, SP's 1/sqrt(d) is k = -1/2."""
    if spec.block("attention") is None:
        return None
    k = exact_exponent(spec, "attention", _rule(spec, "attention", "logit"))
    return k if exact else to_sympy_number(k)


def head_exponent(spec: ir.Spec, exact: bool = False):
    """Width exponent of the attention head size (the number of terms q.k
    sums): 1 when d_head grows with width, 0 for a fixed d_head."""
    k = exact_exponent(spec, "attention", _rule(spec, "attention", "head_dim"))
    return k if exact else to_sympy_number(k)


def fmt_exponent(value) -> str:
    """Exact rational text: '1/2', '-1', 'oo', '-oo' (sympy, Fraction or inf);
    'undefined' for nan (TP6's γ = (α+γ) - α of a branch that starts and
    stays at zero is oo - oo)."""
    if value != value:
        return "undefined"
    if value == INF:
        return "oo"
    if value == -INF:
        return "-oo"
    return str(Fraction(value))

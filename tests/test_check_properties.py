"""Property tests of the checker.

1. TP4's classification theorem (docs/theory.md §4: r formula, stability and
   nontriviality conditions, written here straight from the paper) agrees with
   `check` on random abc-parametrizations with one global SGD LR.
2. For random per-class exponents written in varied forms (sums, sqrt,
   fan_in/fan_out, quotients), the symbolic verdict equals a direct float
   evaluation of the same size formulas at n = 2^k (mupspec.numeric, slopes
   fitted on log-log; no sympy).
3. Verdicts are invariant under the Lemma J.1 symmetry, applied to one class by
   editing the spec's expressions.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction as F
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mupspec import ir, numeric
from mupspec.check import check_spec
from mupspec.report import diagnose
from mupspec.resolve import load_spec, parse_and_resolve

SPECS = Path(__file__).resolve().parents[1] / "specs"
quarters = st.integers(-4, 6).map(lambda i: F(i, 4))


# ---------------------------------------------------------------- 1. TP4 theorem


def tp4_class(a1, a_hid, a_out, b_out, c) -> str:
    """TP4 (Yang & Hu 2021) §3 for an MLP whose init is stable
    (a1+b1 = 0, a_l+b_l = 1/2 imposed by the caller)."""
    r = min(a_out + b_out, 2 * a_out + c) + c - 1 + min(2 * a1 + 1, 2 * a_hid)
    stable = a_out + b_out >= F(1, 2) and r >= 0 and 2 * a_out + c >= 1 and a_out + b_out + r >= 1
    if not stable:
        return "unstable"
    if not (a_out + b_out + r == 1 or 2 * a_out + c == 1):
        return "trivial"
    return "feature_learning" if r == 0 else "kernel"


# TP4 Table 1 columns as (a1, a_hid, a_out, b_out, c): SP (LR 1/n), NTP, μP.
TP4_POINTS = [(F(0), F(0), F(0), F(1, 2), F(1)), (F(0), F(1, 2), F(1, 2), F(0), F(0)),
              (F(-1, 2), F(0), F(1, 2), F(1, 2), F(0))]


@st.composite
def tp4_params(draw) -> tuple:
    """Uniform draws hit mostly unstable/trivial; half the draws start from a
    Table 1 column, shifted by the J.1 symmetry (a+t, b-t, c-2t on every layer)
    and with at most one entry nudged, so that every regime comes up."""
    if draw(st.booleans()):
        return tuple(draw(quarters) for _ in range(5))
    a1, a_hid, a_out, b_out, c = draw(st.sampled_from(TP4_POINTS))
    t = draw(quarters)
    point = [a1 + t, a_hid + t, a_out + t, b_out - t, c - 2 * t]
    if draw(st.booleans()):
        point[draw(st.integers(0, 4))] += draw(st.sampled_from([F(-1, 2), F(-1, 4), F(1, 4), F(1, 2)]))
    return tuple(point)


@settings(max_examples=150)
@given(tp4_params())
def test_tp4_theorem_agrees_with_check(params):
    a1, a_hid, a_out, b_out, c = params
    layers = {"input": (a1, -a1), "hidden": (a_hid, F(1, 2) - a_hid), "output": (a_out, b_out)}
    text = "parametrization t\nwidth n\n" + "".join(
        f"{k} {{ mult = n^({-a}); init.var = n^({-2 * b}); lr.sgd = n^({-c}) }}\n" for k, (a, b) in layers.items())
    regime = check_spec(parse_and_resolve(text)).results["sgd"].regime
    assert {"mup": "feature_learning"}.get(regime, regime) == tp4_class(a1, a_hid, a_out, b_out, c)


# ---------------------------------------------------------------- 2. symbolic == numeric

KINDS = ("input", "hidden", "output", "bias")
FIELDS = ("mult", "init.var", "lr.sgd", "lr.adam")
FAN = {"input": "fan_out", "hidden": "fan_in", "output": "fan_in", "bias": "fan_out"}


@st.composite
def scale_text(draw, kind: str, p: F) -> str:
    """Text of an expression Θ(n^p) in one of several forms."""
    form = draw(st.integers(0, 4))
    if form == 0:
        return f"{draw(st.integers(1, 5))}*n^({p})"
    if form == 1:
        return f"n^({p}) + 3*n^({p - 1})"
    if form == 2:
        return f"sqrt(n^({2 * p}))"
    if form == 3:
        return f"1/n^({-p})"
    return f"{FAN[kind]}^({p})"


# μP Table 3 as powers of n (mult, init.var, lr.sgd, lr.adam): random specs are
# drawn near it so that every regime, not only "unstable", comes up.
TABLE3 = {"input": (0, 0, 1, 0), "hidden": (0, -1, 0, -1), "output": (0, -2, -1, -1), "bias": (0, 0, 1, 0)}
nudges = st.tuples(st.sampled_from(KINDS), st.sampled_from(FIELDS), st.sampled_from([F(-1, 2), F(-1, 4), F(1, 4), F(1, 2), F(1)]))


@st.composite
def random_specs(draw) -> tuple[str, dict]:
    if draw(st.integers(0, 3)) == 0:
        powers = {(k, f): draw(quarters) for k in KINDS for f in FIELDS}
    else:
        powers = {(k, f): F(TABLE3[k][i]) for k in KINDS for i, f in enumerate(FIELDS)}
        for kind, field, delta in draw(st.lists(nudges, max_size=4)):
            powers[kind, field] += delta
    lines = ["parametrization r", "width n"]
    for kind in KINDS:
        rules = "; ".join(f"{f} = {draw(scale_text(kind, powers[kind, f]))}" for f in FIELDS)
        lines.append(f"{kind} {{ {rules} }}")
    return "\n".join(lines) + "\n", powers


def sizes(spec: ir.Spec, n: float, opt: str) -> dict[str, float]:
    """Float sizes of the calculus' quantities at width n (docstring of check.py)."""
    v = {}
    for kind in KINDS:
        fan_in, fan_out = numeric.class_fans(kind, n, 3.0, 5.0)
        val = lambda f: numeric.layer_value(spec, kind, f, fan_in=fan_in, fan_out=fan_out, width=n)  # noqa: E731
        v[kind] = (val("mult"), math.sqrt(val("init.var")), val(f"lr.{opt}"))
    (ai, bi, ci), (ah, bh, ch), (ao, bo, co), (ab, bb, cb) = (v[k] for k in KINDS)
    p = 2 if opt == "sgd" else 1          # SGD's step carries A twice (e_sgd = 2a + c)
    w_out = max(ao * bo, ao ** p * co)    # W_out entries: init or after its own steps
    g = w_out if opt == "sgd" else 1.0    # Adam normalizes the backward signal
    own = {"input": ai ** p * ci * g, "bias": ab ** p * cb * g, "hidden": n * ah ** p * ch * g}
    dx = max(own.values())
    return {"init_input": ai * bi, "init_hidden": math.sqrt(n) * ah * bh, "init_bias": ab * bb,
            "init_output": math.sqrt(n) * ao * bo, **{f"own_{k}": x for k, x in own.items()},
            "out_own": n * ao ** p * co, "out_prop": n * w_out * dx}


def fitted_slopes(spec: ir.Spec, opt: str, ks=(22, 26, 30, 34)) -> dict[str, float]:
    """Least-squares slope of log size against log n over n = 2^k."""
    xs = [k * math.log(2) for k in ks]
    table = [sizes(spec, 2.0 ** k, opt) for k in ks]
    x_bar = sum(xs) / len(xs)
    slopes = {}
    for q in table[0]:
        ys = [math.log(row[q]) for row in table]
        y_bar = sum(ys) / len(ys)
        slopes[q] = sum((x - x_bar) * (y - y_bar) for x, y in zip(xs, ys)) / sum((x - x_bar) ** 2 for x in xs)
    return slopes


def numeric_regime(spec: ir.Spec, opt: str) -> str:
    slopes = fitted_slopes(spec, opt)
    k = {q: round(s * 8) / 8 for q, s in slopes.items()}  # multiples of 1/4 in the spec, 1/8 for a std
    assert all(abs(s - k[q]) < 0.01 for q, s in slopes.items()), {q: s for q, s in slopes.items() if abs(s - k[q]) >= 0.01}
    init_exact = [k["init_input"], k["init_hidden"]]
    if any(x > 0 for x in k.values()):
        return "unstable"
    if any(x < 0 for x in init_exact) or max(k["out_own"], k["out_prop"]) < 0:
        return "trivial"
    r = -max(k["own_input"], k["own_bias"], k["own_hidden"])
    if r > 0:
        return "kernel"
    maximal = all(k[q] == 0 for q in ("own_input", "own_bias", "own_hidden", "out_own"))
    return "mup" if maximal else "feature_learning"


@settings(max_examples=60)
@given(random_specs())
def test_symbolic_verdict_equals_numeric_evaluation(drawn):
    text, _ = drawn
    spec = parse_and_resolve(text)
    result = check_spec(spec)
    for opt in ("sgd", "adam"):
        assert result.results[opt].regime == numeric_regime(spec, opt), (opt, text)
    errors = [f for f in diagnose(result) if f.severity == "error"]
    assert bool(errors) == (not result.ok)  # a diagnostic for every failure, none without one


# ---------------------------------------------------------------- 3. Lemma J.1


def _times_power(expr: ir.Expr, width: str, k: F) -> ir.Expr:
    exponent = ir.BinOp(op="/", left=ir.Num.of(abs(k.numerator)), right=ir.Num.of(k.denominator))
    if k < 0:
        exponent = ir.Neg(operand=exponent)
    return ir.BinOp(op="*", left=expr, right=ir.BinOp(op="^", left=ir.Sym(name=width), right=exponent))


def apply_symmetry(spec: ir.Spec, kind: str, t: F) -> ir.Spec:
    """(a, b, c) -> (a+t, b-t, c-2t) for SGD and (a+t, b-t, c-t) for Adam on one
    class: mult × n^-t, init.var × n^2t, lr.sgd × n^2t, lr.adam × n^t, eps.adam × n^-t."""
    width = spec.widths[0]
    block = spec.block(kind)
    factors = {"mult": -t, "init.var": 2 * t}
    factors |= {f"lr.{o}": (2 * t if o == "sgd" else t) for o in ir.optimizers(spec)}  # keep coverage
    factors["eps.adam"] = -t  # docs/theory.md §3.1: exact for Adam only if eps scales with θ like the gradient
    rules = [r for r in block.rules if r.field not in factors and r.field != "init.std"]
    for field, k in factors.items():
        rules.append(ir.Rule(field=field, value=_times_power(ir.rule_value(block, field, spec.widths), width, k)))
    blocks = tuple(b.model_copy(update={"rules": tuple(rules)}) if b.kind == kind else b for b in spec.blocks)
    return spec.model_copy(update={"blocks": blocks})


def summary(spec: ir.Spec):
    result = check_spec(spec)
    per_opt = {o: (r.regime, tuple(r.names), r.r, tuple(sorted(r.desiderata.items())), r.depth_class)
               for o, r in result.results.items()}
    invariants = {k: (e.e_init,) + tuple(e.e_opt(o) for o in result.results) for k, e in result.exponents.items()}
    # eps exponents move with the symmetry (found and needed shift together): compare presence
    findings = sorted((f.kind, f.field, f.optimizer or "") + ((f.found, f.needed) if f.field != "eps.adam" else ())
                      for f in diagnose(result))
    return per_opt, invariants, findings


@functools.cache
def bundled(name: str) -> ir.Spec:
    return load_spec(SPECS / f"{name}.mup")


BUNDLED = ["sp", "sp_lr_inv_width", "ntk", "mean_field", "mup_table3", "mup_table8", "mup_table9",
           "umup", "depth_mup", "completep", "seed_mlp"]


@settings(max_examples=50)
@given(st.sampled_from(BUNDLED), st.sampled_from(["input", "hidden", "output", "bias"]),
       st.sampled_from([F(-1), F(-1, 2), F(1, 4), F(1, 2), F(1), F(3, 2)]))
def test_verdicts_invariant_under_lemma_j1(name, kind, t):
    spec = bundled(name)
    if spec.block(kind) is None:
        return
    assert summary(apply_symmetry(spec, kind, t)) == summary(spec)


# ---------------------------------------------------------------- 4. the fixes fix


def apply_fixes(path: Path) -> ir.Spec:
    """Every error's `fix` written as an override block of a spec extending `path`."""
    result = check_spec(load_spec(path))
    edits: dict[str, list[str]] = {}
    for f in diagnose(result):
        if f.severity == "error":
            edits.setdefault(f.kind, []).append(f.fix.split("  (")[0])  # the edit, without the remark
    text = f'parametrization fixed extends "{path.name}"\n' + "".join(
        f"{kind} {{ {'; '.join(rules)} }}\n" for kind, rules in edits.items())
    return parse_and_resolve(text, str(path.parent / "fixed.mup"))


def test_applying_every_fix_to_a_bundled_spec_gives_mup():
    for name in BUNDLED:
        fixed = check_spec(apply_fixes(SPECS / f"{name}.mup"))
        assert fixed.ok, (name, [f.message for f in diagnose(fixed) if f.severity == "error"])


@settings(max_examples=25)
@given(random_specs())
def test_applying_every_fix_to_a_random_spec_gives_mup(drawn):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.mup"
        path.write_text(drawn[0])
        assert check_spec(apply_fixes(path)).ok, drawn[0]

"""Property tests for convert/equiv (hypothesis): round trips, exact
equivalence, an equivalence relation, and check's verdict preserved.

Drawn specs are printed to text and parsed back, so they are real specs. Their
rules are positive expressions (monomials c·fan_in^p·fan_out^q·n^r, sometimes
with depth, sometimes a sum of two), init and LR rules always written out and
mult/wd/eps rules only when not at their default: the normal form convert
writes (docs/converting.md), so that a round trip can be compared as text."""

import os

import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mupspec.check import check_spec
from mupspec.commands.equiv import compare
from mupspec.convert import Setting, convert, normal_form, to_ir
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import parse_and_resolve

ORDER = ("fan_in", "fan_out", "n", "L", "alpha")  # the order convert writes symbols in (raw_env)
FAN_IN, FAN_OUT, N, L, ALPHA = (sympy.Symbol(s, positive=True) for s in ORDER)
CLASSES = ("input", "hidden", "output", "bias")
DEFAULTS = {"mult": 1, "wd.sgd": 1, "wd.adam": 1, "eps.adam": 1}
# More examples for a deeper run: MUPSPEC_EXAMPLES=300 pytest tests/test_convert_properties.py
SETTINGS = settings(max_examples=int(os.environ.get("MUPSPEC_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

halves = st.integers(-4, 4).map(lambda k: sympy.Rational(k, 2))
coefficients = st.sampled_from([sympy.Integer(1), sympy.Integer(1), sympy.Integer(2), sympy.Rational(1, 2),
                                sympy.Integer(3)])


@st.composite
def monomials(draw, depth=False, hyper=False):
    m = draw(coefficients) * FAN_IN ** draw(halves) * FAN_OUT ** draw(halves) * N ** draw(halves)
    if depth and draw(st.booleans()):
        m *= L ** draw(halves)
    if hyper and draw(st.booleans()):
        m *= ALPHA ** draw(st.integers(-1, 1))
    return m


@st.composite
def scales(draw, depth=False, hyper=False):
    """A positive scale: usually a monomial, sometimes a sum of two."""
    first = draw(monomials(depth, hyper))
    return normal_form(first + draw(monomials(depth, hyper))) if draw(st.integers(0, 5)) == 0 else first


def text(value) -> str:
    return format_expr(to_ir(value, ORDER))


@st.composite
def spec_texts(draw):
    depth, hyper = draw(st.booleans()), draw(st.booleans())
    optimizers = draw(st.sampled_from([("sgd",), ("adam",), ("sgd", "adam")]))
    lines = ["parametrization drawn", "", "width n"] + (["depth L"] if depth else [])
    lines += ["hyper alpha = 2"] if hyper else []
    for kind in CLASSES:
        lines += ["", f"{kind} {{"]
        zero = kind == "bias" and draw(st.integers(0, 4)) == 0
        lines.append(f"  init.var = {'0' if zero else text(draw(scales(depth, hyper)))}")
        fields = ["mult"] + [f"lr.{o}" for o in optimizers] + [f"wd.{o}" for o in optimizers]
        fields += ["eps.adam"] if "adam" in optimizers else []
        for field in fields:
            if field.startswith("lr.") or draw(st.integers(0, 2)) == 0:
                value = draw(scales(depth, hyper))
                if value != DEFAULTS.get(field):
                    lines.append(f"  {field} = {text(value)}")
        lines.append("}")
    return "\n".join(lines) + "\n"


specs = spec_texts().map(parse_and_resolve)
thetas = st.one_of(st.just(sympy.Integer(1)), scales())


def by_theta(spec, chosen):
    return tuple(Setting(kind, "theta", to_ir(t), f"{kind}.theta") for kind, t in chosen.items())


def equivalent(a, b, strict=False):
    return not [d for d in compare(a, b)[0] if strict or not d.strict_only]


def verdict(spec):
    result = check_spec(spec)
    return {opt: (r.regime, tuple(r.names), tuple(sorted(r.desiderata.items())), r.depth_class, r.r)
            for opt, r in result.results.items()}


@SETTINGS
@given(specs, st.fixed_dictionaries({k: thetas for k in CLASSES}))
def test_convert_then_back_is_the_identity(spec, chosen):
    there = convert(spec, settings=by_theta(spec, chosen)).spec
    back = convert(there, settings=by_theta(there, {k: 1 / t for k, t in chosen.items()})).spec
    assert format_spec(back) == format_spec(spec)


@SETTINGS
@given(specs, st.fixed_dictionaries({k: thetas for k in CLASSES}))
def test_convert_is_exact_and_keeps_checks_verdict(spec, chosen):
    moved = convert(spec, settings=by_theta(spec, chosen)).spec
    text = format_spec(moved)
    assert format_spec(parse_and_resolve(text)) == text  # valid and canonical
    assert equivalent(spec, moved, strict=True)
    assert verdict(moved) == verdict(spec)


@SETTINGS
@given(specs, st.sampled_from(["table3", "table8", "table9", "unit"]))
def test_named_forms_keep_equivalence_and_verdict(spec, form):
    moved = convert(spec, form).spec
    assert equivalent(spec, moved, strict=True)
    assert verdict(moved) == verdict(spec)


@st.composite
def triples(draw):
    """Three specs, each next one either drawn afresh or a conversion of the
    previous one, so that equivalent and inequivalent pairs both occur."""
    out = [draw(specs)]
    for _ in range(2):
        if draw(st.booleans()):
            out.append(convert(out[-1], settings=by_theta(out[-1], draw(
                st.fixed_dictionaries({k: thetas for k in CLASSES})))).spec)
        else:
            out.append(draw(specs))
    return out


@SETTINGS
@given(triples(), st.booleans())
def test_equiv_is_an_equivalence_relation(triple, strict):
    a, b, c = triple
    assert equivalent(a, a, strict)
    assert equivalent(a, b, strict) == equivalent(b, a, strict)
    if equivalent(a, b, strict) and equivalent(b, c, strict):
        assert equivalent(a, c, strict)

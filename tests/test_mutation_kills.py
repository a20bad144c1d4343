"""Tests that pin the verdict logic where mutation testing
(benchmarks/mutate.py, see docs/reliability.md) found it unpinned: each asserts desiderata, names,
terms or produced forms -- not only the regime -- so that a flipped
comparison, a dropped term or an and/or swap changes a test's outcome."""

from __future__ import annotations

from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mupspec import ir
from mupspec.check import check_spec, depth_class, named_matches
from mupspec.convert import convert
from mupspec.printer import format_expr
from mupspec.resolve import load_spec, parse_and_resolve
from mupspec.symbolic import (INF, DepthExponents, class_env, depth_exponents, exact_exponent, leading_term,
                              spec_exponents, to_sympy)
from tests.strategies import expressions

SPECS = "specs"


def spec(text: str):
    return parse_and_resolve("parametrization t\n" + text + "\n")


def bundled(name: str):
    return load_spec(f"{SPECS}/{name}.mup")


def term(result, role: str, kind: str):
    return next(t for t in result.terms if t.role == role and t.kind == kind)


MUP_ADAM = ("input { lr.adam = 1 }\nhidden { init.var = 1/fan_in; lr.adam = 1/fan_in }\n"
            "output { init.var = 1/fan_in^2; lr.adam = 1/fan_in }")


# ---------------------------------------------------------------- desiderata


def test_stable_after_step_is_false_when_a_term_grows_by_exactly_n():
    res = check_spec(bundled("sp")).results["adam"]  # SP with Adam: ΔW·x of hidden grows like n^1
    assert term(res, "own_update", "hidden").k == 1
    assert res.desiderata["stable_after_step"] is False
    assert res.desiderata["maximal_updates"] is False and res.desiderata["feature_learning"] is False
    assert res.regime == "unstable"


def test_mup_is_stable_with_terms_at_exactly_zero():
    res = check_spec(spec(MUP_ADAM)).results["adam"]
    assert all(t.k <= 0 for t in res.terms) and any(t.k == 0 for t in res.terms)
    assert res.desiderata == {"init_activations": True, "output_bounded": True, "stable_after_step": True,
                              "maximal_updates": True, "feature_learning": True}


def test_output_bounded_needs_the_output_at_init():
    # readout init Var = 1 (output at init Θ(n^1/2)), features slowed to n^-1 so that W_out·Δx
    # stays O(1): only the output at init breaks boundedness
    res = check_spec(spec("input { lr.adam = 1/fan_out }\nhidden { init.var = 1/fan_in; lr.adam = 1/fan_in^2 }\n"
                          "output { init.var = 1; lr.adam = 1/fan_in }")).results["adam"]
    assert term(res, "output_init", "output").k == F(1, 2)
    assert term(res, "output_change", "output").k == 0 and term(res, "output_change", "output").ok
    assert res.desiderata["output_bounded"] is False


def test_output_bounded_needs_the_output_change_through_the_features():
    # μP readout init, but hidden layers updated so that features move by n^(1/2): W_out·Δx grows
    res = check_spec(spec(MUP_ADAM.replace("hidden { init.var = 1/fan_in; lr.adam = 1/fan_in }",
                                           "hidden { init.var = 1/fan_in; lr.adam = 1/sqrt(fan_in) }"))).results["adam"]
    assert term(res, "output_init", "output").ok
    assert term(res, "output_change", "output").k == F(1, 2)
    assert res.desiderata["output_bounded"] is False


def test_a_norm_gain_multiplier_that_grows_with_width_is_caught_with_its_sign():
    res = check_spec(spec(MUP_ADAM + "\nnorm { mult = fan_out }")).results["adam"]
    init = term(res, "init", "norm")
    assert init.k == 1 and init.grows  # k = -e_init = -(a + b), a = -1: grows, does not vanish
    assert res.desiderata["init_activations"] is False
    assert res.regime == "unstable"
    shrinking = check_spec(spec(MUP_ADAM + "\nnorm { mult = 1/fan_out }")).results["adam"]
    assert term(shrinking, "init", "norm").k == -1
    assert shrinking.regime == "trivial"


# ---------------------------------------------------------------- attention


def test_the_attention_logit_decides_maximality_and_stability():
    mup = check_spec(spec(MUP_ADAM + "\nattention { logit = 1/n }")).results["adam"]
    assert mup.regime == "mup" and term(mup, "attention", "attention").k == 0
    sp_logit = check_spec(spec(MUP_ADAM + "\nattention { logit = 1/sqrt(n) }")).results["adam"]
    assert term(sp_logit, "attention", "attention").k == F(1, 2)  # logit + max(1/2, 1 - r), r = 0
    assert sp_logit.desiderata["stable_after_step"] is False and sp_logit.regime == "unstable"
    small = check_spec(spec(MUP_ADAM + "\nattention { logit = 1/n^2 }")).results["adam"]
    assert term(small, "attention", "attention").k == -1
    assert small.desiderata["stable_after_step"] is True
    assert small.desiderata["maximal_updates"] is False  # only a logit of exactly 1/n is maximal
    assert small.regime == "feature_learning"


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name,sgd,adam", [
    ("mup_table8", ["mup", "mean_field"], ["mup", "mean_field"]),  # under Adam MF and μP coincide (Everett et al. 2024)
    ("sp", ["sp"], ["sp"]),
    ("sp_lr_inv_width", ["sp_lr_inv_width"], ["sp_lr_inv_width"]),
    ("ntk", ["ntk"], None),
    ("umup", None, ["umup"]),
])
def test_named_matches_are_exact(name, sgd, adam):
    ex = spec_exponents(bundled(name), exact=True)
    for opt, wanted in (("sgd", sgd), ("adam", adam)):
        if wanted is not None:
            assert named_matches(ex, opt) == wanted


def test_a_name_needs_both_init_and_optimizer_to_match():
    ex = spec_exponents(bundled("mup_table8"), exact=True)
    wrong_lr = dict(ex, hidden=ex["hidden"].__class__(**{**ex["hidden"].__dict__, "c_adam": F(0)}))
    assert named_matches(wrong_lr, "adam") == []  # init matches μP, optimizer does not
    wrong_init = dict(ex, hidden=ex["hidden"].__class__(**{**ex["hidden"].__dict__, "b": F(0)}))
    assert named_matches(wrong_init, "adam") == []  # optimizer matches (for this class), init does not


def test_zero_init_matches_only_where_the_template_allows_it():
    mup_zero_out = spec(MUP_ADAM.replace("output { init.var = 1/fan_in^2", "output { init.var = 0"))
    assert "mup" in named_matches(spec_exponents(mup_zero_out, exact=True), "adam")
    sp_zero_out = spec("input { lr.adam = 1 }\nhidden { lr.adam = 1 }\noutput { init.var = 0; lr.adam = 1 }")
    assert "sp" not in named_matches(spec_exponents(sp_zero_out, exact=True), "adam")  # SP's readout is n^-1/2
    zero_hidden = spec(MUP_ADAM.replace("hidden { init.var = 1/fan_in", "hidden { init.var = 0"))
    assert named_matches(spec_exponents(zero_hidden, exact=True), "adam") == []  # hidden: no zero init


# ---------------------------------------------------------------- depth


def _depth(alpha, gamma_adam):
    """A branch with output L^-alpha at init whose Adam step moves it by L^-(alpha+gamma)."""
    return DepthExponents(alpha=F(alpha), update={"adam": F(alpha) + F(gamma_adam)}, mult_alpha=F(alpha),
                          eps_adam=F(0), alpha_width=F(0))


@pytest.mark.parametrize("alpha,gamma_adam,cls", [
    ("1/4", "3/4", "unstable at init"),
    ("1/2", "1/4", "unstable"),
    ("1/2", "1", "trivial"),
    ("1/2", "1/2", "Depth-μP"),
    ("1", "0", "CompleteP"),
    ("3/4", "1/4", "ODE-like"),
    ("3/2", "-1/2", "outside TP6"),
])
def test_depth_classes_every_band(alpha, gamma_adam, cls):
    assert depth_class(_depth(alpha, gamma_adam), "adam") == cls


def test_depth_class_sgd_gamma_carries_alpha():
    # Depth-μP's constant SGD LR: the branch multiplier L^-1/2 also scales the step, gamma_sgd = alpha
    d = depth_exponents(bundled("depth_mup"), exact=True)
    assert d.alpha == F(1, 2) and d.gamma("sgd") == F(1, 2) and depth_class(d, "sgd") == "Depth-μP"


def test_residual_and_hidden_depth_terms_add():
    s = spec("depth L\nhidden { lr.sgd = 1/L; lr.adam = 1/L^2 }\nresidual { mult = 1/sqrt(L); lr.sgd = 1/L; lr.adam = L }")
    d = depth_exponents(s, exact=True)
    assert d.alpha == F(1, 2)
    assert d.c_sgd == 2  # residual 1 + hidden 1
    assert d.c_adam == 1  # residual -1 + hidden 2


# ---------------------------------------------------------------- exact path vs sympy


@settings(max_examples=60)
@given(st.sampled_from(["input", "hidden", "output", "bias"]), expressions(("fan_in", "fan_out", "n", "a"), 8))
def test_the_exact_path_agrees_with_sympy(kind, expr):
    s = spec("hyper a = 3")
    try:
        exact = exact_exponent(s, kind, expr)
    except Exception:  # noqa: BLE001 -- a negative or non-real scale: not comparable
        return
    coef, k = leading_term(to_sympy(expr, class_env(s, kind)))
    expected = -INF if coef == 0 else F(int(k.p), int(k.q))
    assert exact == expected, format_expr(expr)


# ---------------------------------------------------------------- convert's forms


def _rule(s, kind, field):
    return format_expr(ir.rule_value(s.block(kind), field, s.widths))


@pytest.mark.parametrize("src", ["mup_table8", "mup_table9", "sp"])
def test_convert_produces_the_named_form(src):
    s = bundled(src)
    t3 = convert(s, "table3").spec
    assert {k: _rule(t3, k, "mult") for k in ("input", "hidden", "output")} == dict.fromkeys(
        ("input", "hidden", "output"), "1")
    t9 = convert(s, "table9").spec
    assert {k: _rule(t9, k, "lr.sgd") for k in ("input", "hidden", "output")} == dict.fromkeys(
        ("input", "hidden", "output"), "1")
    t8 = convert(s, "table8").spec
    assert _rule(t8, "output", "init.var") == "1" and _rule(t8, "hidden", "mult") == "1"
    unit = convert(s, "unit").spec
    assert all(_rule(unit, k, "init.var") == "1" for k in ("input", "hidden", "output"))


def test_table9_for_an_adam_only_spec_pins_init():
    t9 = convert(bundled("umup"), "table9").spec
    assert _rule(t9, "input", "init.var") == "1/fan_out"
    assert _rule(t9, "hidden", "init.var") == "1/fan_in"


def test_terms_carry_their_role_class_and_need():
    """verify maps (role, class) to what it measures, and `need` decides `ok`:
    a relabelled term changes verify's comparison even when no verdict moves."""
    res = check_spec(spec(MUP_ADAM + "\nbias { lr.adam = 1 }\nnorm { lr.adam = 1 }\nattention { logit = 1/n }")
                     ).results["adam"]
    assert [(t.role, t.kind, t.need) for t in res.terms] == [
        ("init", "input", "=0"), ("init", "hidden", "=0"), ("init", "bias", "<=0"), ("init", "norm", "=0"),
        ("output_init", "output", "<=0"), ("own_update", "input", "=0"), ("own_update", "bias", "=0"),
        ("own_update", "norm", "=0"), ("own_update", "hidden", "=0"), ("features", "hidden", "=0"),
        ("own_update", "output", "=0"), ("output_change", "output", "<=0"), ("attention", "attention", "<=0")]


# ---------------------------------------------------------------- regime: what counts as the output moving


def test_the_output_moving_through_the_features_alone_is_not_trivial():
    # readout LR too small for its own update (n^-1), but W_out·Δx is Θ(1): the output still moves
    res = check_spec(spec(MUP_ADAM.replace("output { init.var = 1/fan_in^2; lr.adam = 1/fan_in }",
                                           "output { init.var = 1/fan_in^2; lr.adam = 1/fan_in^2 }"))).results["adam"]
    assert term(res, "own_update", "output").k == -1 and term(res, "output_change", "output").k == 0
    assert res.desiderata["feature_learning"] is True and res.desiderata["maximal_updates"] is False
    assert res.regime == "feature_learning"


def test_the_output_moving_by_its_own_update_alone_is_kernel_not_trivial():
    # features frozen (r = 1), the readout's own update Θ(1): the kernel regime (TP4), not trivial
    res = check_spec(spec(MUP_ADAM.replace("hidden { init.var = 1/fan_in; lr.adam = 1/fan_in }",
                                           "hidden { init.var = 1/fan_in; lr.adam = 1/fan_in^2 }")
                          .replace("input { lr.adam = 1 }", "input { lr.adam = 1/fan_out }"))).results["adam"]
    assert term(res, "own_update", "output").k == 0 and term(res, "output_change", "output").k == -1
    assert res.r == 1 and res.desiderata["feature_learning"] is False
    assert res.regime == "kernel"


@pytest.mark.parametrize("lr,name", [("1", "sp"), ("1/n", "sp_lr_inv_width")])
def test_sp_is_named_under_lion_and_adafactor(lr, name):
    """SP's global LR names the spec under every family that has its form:
    Lion like Adam (e = a + c), Adafactor with its relative step (e = e_init + c)."""
    rules = f"lr.lion = {lr}; lr.adafactor = {lr}"
    s = spec(f"input {{ {rules} }}\nhidden {{ init.var = 1/fan_in; {rules} }}\noutput {{ init.var = 1/fan_in; {rules} }}")
    ex = spec_exponents(s, exact=True)
    assert named_matches(ex, "lion") == [name]
    assert named_matches(ex, "adafactor") == [name]


def test_the_named_alignments():
    from mupspec.check import ALIGNMENTS, parse_alignment

    assert set(ALIGNMENTS) == {"full", "everett", "none"}
    assert (parse_alignment("none").update, parse_alignment("none").readout) == (F(1, 2), F(1, 2))
    assert (parse_alignment("everett").update, parse_alignment("everett").readout) == (1, F(1, 2))
    assert (parse_alignment("full").update, parse_alignment("full").readout) == (1, 1)


@pytest.mark.parametrize("name,cls", [("depth_mup", "Depth-μP"), ("completep", "CompleteP")])
def test_depth_classes_add_their_name(name, cls):
    res = check_spec(bundled(name))
    for r in res.results.values():
        assert r.depth_class == cls
        assert r.names[-1] == name and "mup" in r.names
    assert res.matches(name)


# ---------------------------------------------------------------- convert: forms, spelling, exactness


def test_table8_of_a_zero_init_readout_pins_its_multiplier():
    t8 = convert(bundled("gpt_mup"), "table8").spec  # readout init.var = 0: no init to pin
    assert _rule(t8, "output", "init.var") == "0"
    assert _rule(t8, "output", "mult") == "1/fan_in"


def test_to_ir_spells_factors_in_a_fixed_order():
    import sympy

    from mupspec.convert import to_ir

    fan_in, fan_out, n = sympy.symbols("fan_in fan_out n", positive=True)
    assert format_expr(to_ir(fan_out * fan_in)) == "fan_in*fan_out"  # the default order: fans first, in order
    assert format_expr(to_ir(3 * n * fan_in)) == "3*fan_in*n"  # then other names
    a = sympy.Symbol("a", positive=True)
    assert format_expr(to_ir(a * fan_out)) == "fan_out*a"  # fan_out ranks before any other name
    assert format_expr(to_ir(3 * n * fan_in, ("n", "fan_in"))) == "3*n*fan_in"
    # coefficient, numbers' roots, symbols, then compound bases; negative powers below the bar
    assert format_expr(to_ir(sympy.sqrt(fan_in + 1) * fan_in * sympy.sqrt(2) / fan_out)) == \
        "sqrt(2)*fan_in*sqrt(fan_in + 1)/fan_out"


def test_convert_is_exact_unless_adam_eps_is_held_fixed_while_a_class_moves():
    plain = convert(bundled("mup_table3"), "table8")
    assert plain.exact and plain.notes == []
    unmoved = convert(bundled("mup_table3"), "table3", fixed_eps=True)
    assert unmoved.thetas == {} and unmoved.exact and unmoved.notes == []
    sgd_only = convert(bundled("ntk"), "table8", fixed_eps=True)
    assert sgd_only.thetas and sgd_only.exact  # no Adam in the spec: no eps to hold


def test_a_subrole_keeps_only_the_rules_it_states():
    s = spec(MUP_ADAM + "\nquery { init.var = 1/fan_in }")
    query = convert(s, "unit").spec.block("query")
    assert [(r.field, format_expr(r.value)) for r in query.rules] == [("init.var", "1")]


def test_adafactor_lr_and_wd_do_not_move():
    s = bundled("mup_adafactor")
    before = {k: _rule(s, k, "lr.adafactor") for k in ("input", "hidden", "output")}
    moved = convert(s, "unit")
    assert moved.thetas
    assert {k: _rule(moved.spec, k, "lr.adafactor") for k in before} == before
    assert all(moved.spec.block(k).rule("wd.adafactor") is None for k in before)


# ---------------------------------------------------------------- symbolic: the exact path, widths, depth

DERIVED = "width n, d = 4*n, h = sqrt(n)/2, k = 64\ndepth L\nhyper a = 3"


@settings(max_examples=40)
@given(st.sampled_from(["input", "hidden", "output", "bias"]), st.sampled_from([0, 1]),
       expressions(("fan_in", "fan_out", "n", "d", "h", "k", "L", "a"), 8))
def test_the_exact_path_agrees_with_sympy_in_derived_widths_and_depth(kind, axis, expr):
    """width_exponents (derived widths) and the depth axis against sympy's
    substitution of each definition (N in width, L in depth)."""
    from mupspec.symbolic import _constants

    s = spec(DERIVED)
    try:
        exact = exact_exponent(s, kind, expr, axis)
    except Exception:  # noqa: BLE001 -- a negative or non-real scale: not comparable
        return
    var = _constants()["N" if axis == 0 else "Ldepth"]
    coef, k = leading_term(to_sympy(expr, class_env(s, kind)), var)
    assert exact == (-INF if coef == 0 else F(int(k.p), int(k.q))), format_expr(expr)


def test_width_exponents_of_derived_widths():
    from mupspec.symbolic import width_exponents

    assert width_exponents(spec(DERIVED)) == {"n": 1, "d": 1, "h": F(1, 2), "k": 0}


@pytest.mark.parametrize("definition", ["n - n/2", "0*n", "-n", "n - n"])
def test_a_width_that_may_cancel_or_vanish_is_a_located_error(definition):
    from mupspec.errors import MupError
    from mupspec.symbolic import width_exponents

    with pytest.raises(MupError, match="cannot tell how width symbol `d` grows"):
        width_exponents(spec(f"width n, d = {definition}"))


@pytest.mark.parametrize("text,k", [("n^2 + n*n", 2), ("fan_in + 2*sqrt(fan_in)", 1), ("3*n/n^2", -1),
                                    ("min(n, 0)", -INF), ("max(1/n, 0)", -1), ("(0*n)^2", -INF), ("(0*n)^1", -INF), ("(0*n)^(1/2)", -INF),
                                    ("n*0", -INF)])
def test_the_exact_path_needs_no_sympy_for_sums_that_cannot_cancel(monkeypatch, text, k):
    from mupspec import symbolic

    s = spec("width n\nhyper a = 3\nhidden { mult = " + text + " }")
    expr = s.block("hidden").rule("mult").value
    monkeypatch.setattr(symbolic, "leading_term", lambda *a, **kw: pytest.fail("fell back to sympy"))
    assert exact_exponent(s, "hidden", expr) == k


def test_a_zero_init_residual_branch_starts_at_zero_and_moves_by_its_own_step():
    # residual init.var = 0: the branch's last layer starts at zero (alpha = inf); its own step
    # moves the branch by mult * step: L^-(1/2 + 1) under Adam, L^-(2*(1/2) + 1) under SGD
    rules = "hidden { init.var = 1/fan_in; lr.sgd = 1/L; lr.adam = 1/L; lr.adafactor = 1/L }\n"
    for layers in (1, 2):  # with two layers the first one's step is multiplied by the zero last layer
        d = depth_exponents(spec(f"depth L\n{rules}residual {{ mult = 1/sqrt(L); init.var = 0; layers = {layers} }}"),
                            exact=True)
        assert d.alpha == INF and d.layers == layers
        assert d.update["adam"] == F(3, 2) and d.update["sgd"] == 2
        assert d.update["adafactor"] == F(3, 2)  # relative to a zero init: eps2's floor, no init factor


def test_adafactor_steps_in_depth_carry_the_layer_init():
    # init std L^-1/4 on a branch with mult L^-1/2: alpha = 3/4; Adafactor's step, relative to w, adds b = 1/4
    d = depth_exponents(spec("depth L\nhidden { init.var = 1/(fan_in*sqrt(L)); lr.adam = 1/L; lr.adafactor = 1/L }\n"
                             "residual { mult = 1/sqrt(L) }"), exact=True)
    assert d.alpha == F(3, 4)
    assert d.update["adam"] == F(3, 2)  # 1/2 + 1
    assert d.update["adafactor"] == F(3, 2) + F(1, 4)


def test_depth_exponents_default_to_one_layer_per_branch():
    assert _depth("1/2", "1/2").layers == 1
    assert depth_exponents(bundled("depth_mup"), exact=True).layers == 1


def test_class_exponents_default_to_unit_lr_and_no_decay_for_the_other_families():
    import sympy

    from mupspec.symbolic import ClassExponents, head_exponent

    e = ClassExponents("hidden", a=F(0), b=F(1, 2), c_sgd=F(0), c_adam=F(1), wd_sgd=F(0), wd_adam=F(0), eps_adam=F(0))
    assert (e.c("lion"), e.c("adafactor"), e.wd("lion"), e.on_muon) == (0, 0, 0, False)
    assert e.e_opt("adafactor") == F(1, 2)  # a + c + b: relative to the init's RMS
    assert e.e_opt("muon") == e.e_adam  # without an lr.muon rule Muon's hybrid steps it with AdamW
    s = spec(MUP_ADAM + "\nattention { logit = 1/n }")
    assert isinstance(head_exponent(s), sympy.Basic) and head_exponent(s) == 1  # sympy unless exact=True
    assert head_exponent(s, exact=True) == 1 and not isinstance(head_exponent(s, exact=True), sympy.Basic)


# ---------------------------------------------------------------- sub-roles


@pytest.mark.parametrize("role", ["query", "key", "attn_out", "mlp_out", "router", "readout"])
def test_zero_init_is_allowed_for_the_subroles_that_feed_a_live_sum(role):
    res = check_spec(spec(MUP_ADAM + f"\n{role} {{ init.var = 0 }}"))
    assert res.ok and res.results["adam"].regime == "mup"
    assert not [t for t in res.results["adam"].terms if t.kind == role]  # checked with its class's init


def test_zero_init_elsewhere_is_a_trivial_subrole():
    res = check_spec(spec(MUP_ADAM + "\nvalue { init.var = 0 }")).results["adam"]
    assert [(t.role, t.kind, t.k) for t in res.terms if t.kind == "value"] == [("init", "value", -INF),
                                                                                ("own_update", "value", 0)]
    assert res.regime == "trivial"


def test_a_subrole_that_differs_from_its_class_is_checked_under_its_own_name():
    res = check_spec(spec(MUP_ADAM + "\nmlp_out { lr.adam = 1 }")).results["adam"]
    assert [(t.role, t.kind, t.k) for t in res.terms if t.kind == "mlp_out"] == [("init", "mlp_out", 0),
                                                                                  ("own_update", "mlp_out", 1)]
    assert res.regime == "unstable" and res.desiderata["stable_after_step"] is False


@pytest.mark.parametrize("text,name", [("none", "none"), ("everett", "everett"), ("full", "full"),
                                       ("0.75", "measured 3/4")])
def test_the_alignment_is_named_in_the_result(text, name):
    from mupspec.check import parse_alignment

    assert check_spec(spec(MUP_ADAM), alignment=parse_alignment(text)).alignment.name == name  # in JSON output


# ---------------------------------------------------------------- symbolic: sympy's slow path, defaults


def test_the_slow_path_of_leading_term():
    import sympy

    from mupspec.errors import MupError
    from mupspec.symbolic import _constants

    n = _constants()["N"]
    cancels = (n + 1) ** 2 - n ** 2 - 2 * n - 1  # a polynomial that is zero: Poly
    assert leading_term(cancels) == (0, -sympy.oo)
    assert leading_term(cancels ** 2) == (0, -sympy.oo)  # a power of a base that vanishes
    root = (sympy.sqrt(n) + 1) ** 2 - n - 2 * sympy.sqrt(n) - 1  # not a polynomial, zero: simplify
    assert leading_term(root) == (0, -sympy.oo)
    assert leading_term(sympy.Min(2 * n, 3 * n ** 2)) == (2, 1)  # the smallest term, with its coefficient
    assert leading_term(sympy.Max(2 * n, 3 * n ** 2)) == (3, 2)
    assert leading_term(sympy.sqrt(n ** 2 + n) - n) == (F(1, 2), 0)  # cancels to a constant: the limits
    assert leading_term(sympy.exp(-n)) == (1, -sympy.oo)  # faster than any power (sympy input only)
    assert leading_term(sympy.exp(n)) == (1, sympy.oo)
    with pytest.raises(MupError, match="cannot find the width/depth exponent"):
        leading_term(n ** sympy.sqrt(2))


def test_public_exponents_are_sympy_numbers_unless_exact():
    import sympy

    d = depth_exponents(bundled("depth_mup"))
    assert isinstance(d.alpha, sympy.Basic) and all(isinstance(v, sympy.Basic) for v in d.update.values())
    assert d.alpha == F(1, 2)
    exact = depth_exponents(bundled("depth_mup"), exact=True)
    assert not isinstance(exact.alpha, sympy.Basic) and exact.alpha == d.alpha


def test_a_fixed_head_dim_is_read_from_the_attention_block():
    from mupspec.symbolic import head_exponent

    assert head_exponent(spec(MUP_ADAM + "\nattention { logit = 1/n }"), exact=True) == 1  # default: grows
    fixed = spec(MUP_ADAM + "\nattention { head_dim = 64; logit = 1/n }")
    assert head_exponent(fixed, exact=True) == 0
    assert check_spec(fixed).head == 0


# ---------------------------------------------------------------- convert: init.std, --set hints


def test_convert_rewrites_init_std_where_the_spec_states_it():
    s = spec("input { lr.adam = 1 }\nhidden { init.std = 1/sqrt(fan_in); lr.adam = 1/fan_in }\n"
             "output { init.std = 1/fan_in; lr.adam = 1/fan_in }")
    unit = convert(s, "unit").spec
    for kind in ("hidden", "output"):
        block = unit.block(kind)
        assert format_expr(block.rule("init.std").value) == "1" and block.rule("init.var") is None


@pytest.mark.parametrize("setting,hint", [
    ("norm.mult=2", "norm gains start at 1"),
    ("attention.mult=2", "not parameter classes"),
    ("outptu.mult=1", "output"),
    ("zzz.mult=1", "classes are: input, hidden, output, bias"),
])
def test_set_on_a_class_that_cannot_move_says_why(setting, hint):
    from mupspec.convert import parse_setting
    from mupspec.errors import MupError

    with pytest.raises(MupError) as err:
        parse_setting(setting, bundled("mup_table3"))
    assert hint in err.value.diagnostics[0].hint


def test_a_tie_says_which_readout_multiplier_restores_the_readout():
    res = check_spec(spec(MUP_ADAM + "\ntie token_embedding, readout"))
    assert not res.tie.shareable and res.tie.differs == ["b", "c_adam"]
    assert res.tie.fix_a == 1  # readout mult 1/n with the embedding's init and LR: e_init = e_adam = 1
    zero = check_spec(spec(MUP_ADAM.replace("input { lr.adam = 1 }", "input { init.var = 0; lr.adam = 1 }")
                           + "\ntie token_embedding, readout"))
    assert zero.tie.fix_a is None  # a zero-init embedding: no multiplier gives the readout its init


def test_a_measured_alignment_may_be_one_half_and_moves_the_readout_target():
    from mupspec.check import mup_targets, parse_alignment

    half = parse_alignment("0.5")
    assert (half.update, half.readout) == (F(1, 2), F(1, 2))
    assert parse_alignment("1").update == 1  # both ends of [1/2, 1] are allowed
    init, opt = mup_targets(parse_alignment("everett"))
    assert init["output"] == F(1, 2) and init["hidden"] == F(1, 2)  # the readout may start as small as W_out·Δx allows
    assert opt["adam"]["hidden"] == 1 and opt["adam"]["output"] == 1  # update alignment 1: μP's steps


def test_an_ode_like_depth_class_is_still_mup():
    # alpha = 3/4, Adam step L^-(3/4 + 1/4): between Depth-μP and CompleteP (TP6's ODE-like band)
    s = spec("depth L\n" + MUP_ADAM.replace("hidden { init.var = 1/fan_in; lr.adam = 1/fan_in }",
                                            "hidden { init.var = 1/fan_in; lr.adam = 1/(fan_in*L^(1/4)) }")
             + "\nresidual { mult = 1/L^(3/4) }")
    res = check_spec(s)
    assert res.results["adam"].depth_class == "ODE-like" and res.results["adam"].regime == "mup"
    assert res.ok


def test_a_tie_multiplier_must_restore_every_optimizer():
    # mup_table3's embedding with a constant SGD LR: a readout mult 1/n restores Adam's step, not SGD's
    text = open(f"{SPECS}/mup_table3.mup").read().replace("  lr.sgd = fan_out\n", "  lr.sgd = 1\n", 1)
    tied = check_spec(parse_and_resolve(text + "\ntie token_embedding, readout\n")).tie
    assert tied.fix_a is None
    untouched = check_spec(parse_and_resolve(open(f"{SPECS}/mup_table3.mup").read() + "\ntie token_embedding, readout\n"))
    assert untouched.tie.fix_a == 1


def test_table9_for_an_adam_only_spec_pins_a_bias_by_fan_out():
    t9 = convert(spec(MUP_ADAM + "\nbias { init.var = 1; lr.adam = 1 }"), "table9").spec
    assert _rule(t9, "bias", "init.var") == "1/fan_out" and _rule(t9, "input", "init.var") == "1/fan_out"


def test_convert_writes_a_min_back_as_a_min():
    s = spec(MUP_ADAM.replace("hidden { init.var = 1/fan_in; lr.adam = 1/fan_in }",
                              "hidden { init.var = 1/fan_in; lr.adam = min(1, 1/fan_in) }"))
    assert _rule(convert(s, "unit").spec, "hidden", "lr.adam") == "sqrt(fan_in)*min(1, 1/fan_in)"


def test_adam_eps_in_depth_adds_the_residual_and_hidden_exponents():
    d = depth_exponents(spec("depth L\nhidden { eps.adam = 1/L^2 }\nresidual { mult = 1/sqrt(L); eps.adam = 1/L }"),
                        exact=True)
    assert d.eps_adam == 3

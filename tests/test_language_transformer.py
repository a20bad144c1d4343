"""The Transformer constructs of the language (docs/language.md, "Transformer
parts"): sub-roles, ties, derived and fixed width symbols with the attention
head size, and min/max -- parsed, printed back, checked, converted and
compiled, with located errors for misuse; and the bundled Transformer specs."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction as F
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mupspec import ir
from mupspec.check import check_spec, shareable_ties, tie_between
from mupspec.cli import main
from mupspec.codegen import generate, load_module
from mupspec.convert import convert
from mupspec.errors import MupError
from mupspec.numeric import evaluate, layer_value
from mupspec.printer import format_spec
from mupspec.report import diagnose
from mupspec.resolve import constant_value, load_spec, parse_and_resolve
from mupspec.symbolic import class_exponents, exact_exponent, width_exponents

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

# Table 8 written out, with the Transformer constructs added by each test.
TABLE8 = """parametrization t8
width {widths}
{extra}
input {{
  init.var = 1/fan_in
  lr.sgd = fan_out
  lr.adam = 1
}}

hidden {{
  init.var = 1/fan_in
  lr.sgd = 1
  lr.adam = 1/fan_in
}}

output {{
  init.var = 1
  mult = 1/fan_in
  lr.sgd = fan_in
  lr.adam = 1
}}
{blocks}
"""


def table8(widths: str = "n", extra: str = "", blocks: str = "", file: str | None = None) -> ir.Spec:
    return parse_and_resolve(TABLE8.format(widths=widths, extra=extra, blocks=blocks), file)


def round_trips(spec: ir.Spec) -> bool:
    text = format_spec(spec)
    return format_spec(parse_and_resolve(text)) == text


# ---------------------------------------------------------------- sub-roles


def test_subrole_states_only_what_differs_and_follows_its_class_elsewhere():
    spec = table8(blocks="query {\n  init.var = 0\n}\nreadout {\n  mult = 2/fan_in\n}")
    assert spec.subroles == ("query", "readout")
    assert constant_value(ir.role_rule(spec, "query", "init.var")) == 0
    assert ir.role_rule(spec, "query", "lr.adam") == spec.block("hidden").rule("lr.adam").value
    assert ir.role_rule(spec, "key", "lr.adam") == spec.block("hidden").rule("lr.adam").value  # no block: the class
    assert ir.subrole_differs(spec, "readout", "mult") and not ir.subrole_differs(spec, "readout", "lr.adam")
    assert layer_value(spec, "query", "lr.adam", fan_in=256, fan_out=256, width=256) == 1 / 256
    assert round_trips(spec)
    assert format_spec(spec).index("query {") > format_spec(spec).index("output {")  # canonical: after the classes


def test_zero_init_query_is_allowed_but_zero_init_mlp_in_is_not():
    query = check_spec(table8(blocks="query {\n  init.var = 0\n}"))
    assert query.ok and any("query: zero init" in n for n in query.notes)
    mlp_in = check_spec(table8(blocks="mlp_in {\n  init.var = 0\n}"))
    assert not mlp_in.ok and all(r.regime == "trivial" for r in mlp_in.results.values())
    assert [f.kind for f in diagnose(mlp_in) if f.severity == "error"] == ["mlp_in"]


def test_a_subrole_with_a_wrong_lr_fails_with_a_diagnostic_at_its_own_rule():
    spec = table8(blocks="value {\n  lr.adam = 1\n}", file="v.mup")
    result = check_spec(spec)
    assert result.results["sgd"].regime == "mup" and result.results["adam"].regime == "unstable"
    assert any(t.kind == "value" and not t.ok for t in result.results["adam"].terms)
    (finding,) = [f for f in diagnose(result) if f.severity == "error"]
    text = TABLE8.format(widths="n", extra="", blocks="value {\n  lr.adam = 1\n}").split("\n")
    assert (finding.kind, finding.field) == ("value", "lr.adam") and text[finding.span.line - 1] == "  lr.adam = 1"
    assert text[finding.span.line - 2] == "value {"
    assert finding.fix.startswith("lr.adam = 1/fan_in")
    assert result.subroles["value"].c_adam == 0 and class_exponents(spec, "hidden", exact=True).c_adam == 1


def test_subrole_errors_are_located(tmp_path):
    with pytest.raises(MupError, match="refines the `hidden` class, which this spec has no block for") as err:
        parse_and_resolve("parametrization x\nquery { init.var = 0 }\n")
    assert err.value.diagnostics[0].span.line == 2
    with pytest.raises(MupError, match="`init.var` is not a rule of `norm_gain` blocks"):
        parse_and_resolve("parametrization x\nnorm { }\nnorm_gain { init.var = 1 }\n")
    with pytest.raises(MupError, match="unknown block `qurey`") as err:
        parse_and_resolve("parametrization x\nhidden { }\nqurey { init.var = 0 }\n")
    assert "did you mean `query`" in err.value.diagnostics[0].hint


def test_a_derived_spec_may_refine_its_base_class(tmp_path):
    (tmp_path / "base.mup").write_text(TABLE8.format(widths="n", extra="", blocks=""))
    (tmp_path / "d.mup").write_text("parametrization d extends base\nquery {\n  init.var = 0\n}\n")
    spec = load_spec(tmp_path / "d.mup")
    assert spec.subroles == ("query",) and check_spec(spec).ok


# ---------------------------------------------------------------- ties


def test_table8_can_tie_and_stays_mup():
    result = check_spec(table8(extra="tie token_embedding, readout"))
    assert result.tie.shareable and result.tie.differs == [] and result.ok
    assert any("can share one tensor" in n for n in result.notes)
    assert round_trips(table8(extra="tie input, output"))


def test_table3_cannot_tie_as_written_and_the_checker_says_how():
    text = (SPECS / "mup_table3.mup").read_text() + "\ntie input, output\n"
    result = check_spec(parse_and_resolve(text, str(SPECS / "t3.mup")))
    assert not result.tie.shareable and set(result.tie.differs) == {"b", "c_sgd", "c_adam"}
    # tied, the readout takes the embedding's init (Θ(1) entries) with multiplier 1: the output blows up
    assert not result.ok and all(r.regime == "unstable" for r in result.results.values())
    assert result.tie.fix_a == 1  # a readout multiplier 1/fan_in restores it: Table 8
    assert any("readout `mult` ∝ n^-1" in n for n in result.notes)
    fixed = parse_and_resolve(text.replace("init.var = 1/fan_in^2", "init.var = 1/fan_in")
                              .replace("output {", "output {\n  mult = 1/fan_in", 1)
                              .replace("lr.sgd = 1/fan_in", "lr.sgd = fan_in").replace("lr.adam = 1/fan_in\n}\n\nbias", "lr.adam = 1\n}\n\nbias"),
                              str(SPECS / "t3.mup"))
    assert check_spec(fixed).ok


def test_no_multiplier_can_fix_a_tie_whose_init_and_lr_disagree():
    spec = table8(extra="tie input, output", blocks="")
    spec = parse_and_resolve(format_spec(spec).replace("  lr.adam = 1\n}\n\nhidden", "  lr.adam = 1/fan_out\n}\n\nhidden"))
    result = check_spec(spec)
    assert not result.tie.shareable and result.tie.fix_a is None and not result.ok


def test_tie_between_answers_for_undeclared_pairs_and_sub_roles():
    """The question the generated module's SHAREABLE_TIES answers: can this
    embedding's and this readout's rules share one tensor as written?"""
    assert tie_between(load_spec(SPECS / "mup_table8.mup"), "input", "output").shareable
    assert tie_between(load_spec(SPECS / "umup.mup"), "input", "output").differs == ["c_adam"]
    assert tie_between(load_spec(SPECS / "sp.mup"), "input", "output").differs == ["b"]
    # a sub-role block is read where it has one: a zero-init readout cannot share with Table 8's embedding
    spec = table8(blocks="readout {\n  init.var = 0\n}")
    assert tie_between(spec, "input", "readout").differs == ["b"] and tie_between(spec, "input", "output").shareable
    assert shareable_ties(spec) == (("input", "output"),)
    assert shareable_ties(table8(blocks="token_embedding {\n  init.var = 1\n}")) == (
        ("input", "output"), ("token_embedding", "output"))


def test_tie_errors_are_located():
    with pytest.raises(MupError) as err:
        parse_and_resolve("parametrization x\ntie query, output\ntie input, output\n")
    messages = [(d.message, d.span.line, d.span.column) for d in err.value.diagnostics]
    assert ("`tie` is declared twice", 3, 1) in messages
    assert ("`query` cannot be the embedding of a tie", 2, 5) in messages


def test_convert_refuses_to_move_tied_classes_apart():
    with pytest.raises(MupError, match="must move by one θ"):
        convert(load_spec(SPECS / "gpt_table8_tied.mup"), "table3")
    assert convert(load_spec(SPECS / "gpt_table8_tied.mup"), "table8").thetas == {}


# ---------------------------------------------------------------- widths and the attention head size


def test_derived_and_fixed_widths_have_the_right_exponents():
    spec = table8(widths="d_model, d_ff = 4*d_model, d_head = 64, heads = d_model/d_head, root = sqrt(d_model)")
    assert spec.free_widths == ("d_model",)
    assert width_exponents(spec) == {"d_model": 1, "d_ff": 1, "d_head": 0, "heads": 1, "root": F(1, 2)}
    assert exact_exponent(spec, "hidden", ir.Sym(name="d_head")) == 0
    assert round_trips(spec)
    assert "width d_model, d_ff = 4*d_model, d_head = 64" in format_spec(spec)


@pytest.mark.parametrize(("head", "logit", "mup"), [
    ("d_head = 64", "1/d_head", True),        # heads grow at fixed d_head: the scale is constant
    ("d_head = 64", "1/d_model", False),      # the old trap: 1/n where n is not d_head
    ("d_head = d_model/8", "1/d_head", True),  # d_head grows (fixed heads)
    ("d_head = d_model/8", "1/sqrt(d_head)", False),  # SP's scale
])
def test_attention_logit_is_held_to_one_over_d_head(head, logit, mup):
    spec = table8(widths=f"d_model, {head}", blocks=f"attention {{\n  head_dim = d_head\n  logit = {logit}\n}}")
    result = check_spec(spec)
    assert result.ok is mup
    findings = [f for f in diagnose(result) if f.kind == "attention"]
    assert (findings == []) is mup
    if not mup:
        assert findings[0].fix == "logit = 1/d_head"


def test_without_head_dim_the_first_width_symbol_is_d_head_and_the_checker_says_so():
    result = check_spec(table8(widths="d_model, d_ff = 4*d_model", blocks="attention {\n  logit = 1/d_model\n}"))
    assert result.ok and any("d_head is taken to be `d_model`" in n for n in result.notes)


def test_width_definition_errors_are_located():
    cases = {
        "width d_head = d_model/12, d_model": ("declared after it", 2, 16),
        "hyper r = 4\nwidth d_model, d_ff = r*d_model": ("not `r`", 3, 23),
        "width d_head = 64": ("nothing grows", 2, 7),
        "width d, e = 0*2": ("has size 0", 2, 14),
        "width d, e = fan_in": ("not `fan_in`", 2, 14),
    }
    for decl, (message, line, column) in cases.items():
        with pytest.raises(MupError) as err:
            parse_and_resolve(f"parametrization x\n{decl}\n")
        diag = err.value.diagnostics[0]
        assert message in diag.message and (diag.span.line, diag.span.column) == (line, column), decl


# ---------------------------------------------------------------- min / max

SPECTRAL = "init.std = min(1, sqrt(fan_out/fan_in))/sqrt(fan_in)"


def test_min_max_parse_print_and_evaluate():
    spec = table8(blocks="")
    spec = parse_and_resolve(format_spec(spec).replace("init.var = 1/fan_in\n  lr.sgd = 1\n", SPECTRAL + "\n  lr.sgd = 1\n"))
    rule = spec.block("hidden").rule("init.std").value
    assert isinstance(rule.left, ir.MinMax) and rule.left.func == "min" and len(rule.left.args) == 2
    assert round_trips(spec)
    assert evaluate(rule, {"fan_in": 4.0, "fan_out": 16.0}) == 0.5  # min(1, 2)/2
    assert evaluate(rule, {"fan_in": 16.0, "fan_out": 4.0}) == 0.125  # min(1, 1/2)/4
    assert constant_value(parse_and_resolve(
        "parametrization x\nhidden { mult = max(1, 2, 1.5)*min(3, 4) }\n").block("hidden").rule("mult").value) == 6


@pytest.mark.parametrize(("kind", "b"), [("input", 0), ("hidden", F(1, 2)), ("output", 1)])
def test_min_max_leading_exponents(kind, b):
    """The spectral init std min(1, sqrt(fan_out/fan_in))/sqrt(fan_in): input Θ(1),
    hidden n^-1/2, output n^-1 (Yang, Simon, Bernstein 2023)."""
    text = f"parametrization x\n{kind} {{\n  {SPECTRAL}\n}}\n"
    assert class_exponents(parse_and_resolve(text), kind, exact=True).b == b


def test_min_max_with_cancelling_terms_takes_the_sympy_path():
    spec = parse_and_resolve("parametrization x\nhidden { mult = max(n - 1, 1) }\noutput { mult = min(2*n - n, n^2) }\n")
    assert exact_exponent(spec, "hidden", spec.block("hidden").rule("mult").value) == 1
    assert exact_exponent(spec, "output", spec.block("output").rule("mult").value) == 1


def test_min_max_in_generated_code_match_the_numeric_value(tmp_path):
    text = "parametrization x\nwidth n\nhidden {\n  " + SPECTRAL + "\n  mult = max(1, n/64)\n}\n"
    module = load_module(parse_and_resolve(text), "x.mup", str(tmp_path))
    assert "min(1.0, math.sqrt((fan_out / fan_in)))" in generate(parse_and_resolve(text), "x.mup")
    assert module.RULES[("hidden", "init.var")](16, 4, {}, {}) == pytest.approx(0.125 ** 2)
    assert module.RULES[("hidden", "mult")](1, 1, {"n": 256}, {}) == 4.0


def test_min_max_misuse_is_a_located_error():
    with pytest.raises(MupError, match="expected ','") as err:
        parse_and_resolve("parametrization x\nhidden { mult = min(n) }\n")
    assert "two or more arguments" in err.value.diagnostics[0].hint
    with pytest.raises(MupError, match="`max` is a built-in name"):
        parse_and_resolve("parametrization x\nhyper max = 2\n")


# ---------------------------------------------------------------- codegen constants


def test_generated_module_has_subroles_ties_and_derived_widths(tmp_path):
    module = load_module(load_spec(SPECS / "gpt_table8_tied.mup"), "gpt_table8_tied.mup", str(tmp_path))
    assert module.TIES == (("token_embedding", "readout"),) and module.SUBROLES == {}
    assert module.WIDTH_SYMBOLS == ("d_model", "d_ff", "d_head", "heads")
    assert module._dims({"d_model": 256}, None, "widths") == {"d_model": 256, "d_ff": 1024.0, "d_head": 64.0,
                                                              "heads": 4.0}
    with pytest.raises(ValueError, match=r"\['d_ff'\] follow from the other widths"):
        module._dims({"d_model": 256, "d_ff": 1000}, None, "widths")
    assert module.attention_scale(0.125, {"d_model": 1024}, {"d_model": 256}) == 0.125  # d_head fixed

    gpt = load_module(load_spec(SPECS / "gpt_mup.mup"), "gpt_mup.mup", str(tmp_path))
    assert gpt.SUBROLES == {"query": "hidden"} and gpt.SUBROLE_OWN_FIELDS == {"query": ("init.var",)}
    assert gpt.RULES[("query", "init.var")](256, 768, {}, {}) == 0.0
    assert gpt.RULES[("query", "lr.adam")](256, 768, {}, {}) == gpt.RULES[("hidden", "lr.adam")](256, 768, {}, {})
    assert gpt.attention_scale(0.125, {"d_model": 1024}, {"d_model": 256}) == 0.125 / 4  # 1/d_head, d_head grows


def test_a_slice_sensitive_subrole_is_exposed_for_the_runtime_to_refuse():
    spec = table8(blocks="query {\n  init.var = 0\n  lr.adam = 2/fan_in\n}\nkey {\n  lr.adam = 1/fan_in\n}")
    source = generate(spec, "q.mup")
    assert 'SUBROLE_OWN_FIELDS = {"query": ("init.var", "lr.adam",), "key": ()}' in source


# ---------------------------------------------------------------- bundled Transformer specs


@pytest.mark.parametrize(("name", "expect"), [
    ("gpt_mup", None), ("gpt_table8_tied", None), ("completep_gpt", "completep"), ("umup_gpt", "umup")])
def test_bundled_transformer_specs_check_and_are_canonical(name, expect, capsys):
    path = str(SPECS / f"{name}.mup")
    assert main(["check", path] + (["--expect", expect] if expect else [])) == 0
    assert main(["fmt", "--check", path]) == 0
    assert "Source:" in (SPECS / f"{name}.mup").read_text()


def test_the_bundled_gpt_specs_drive_the_generated_runtime_on_the_reference_gpt(tmp_path):
    """End to end with the runtime: gpt_mup zeroes only the query third of the
    fused c_attn (key and value keep their class's init), the attention scale
    follows 1/d_head with d_head derived from d_model; the tied Table 8 spec
    puts the readout multiplier on the tied lm_head."""
    import torch

    from mupspec.empirical.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    gpt = load_module(load_spec(SPECS / "gpt_mup.mup"), "gpt_mup.mup", str(tmp_path))
    model = GPT(GPTConfig(d_model=96, n_heads=4, tie=None))
    plan = gpt.parametrize(model, GPT(GPTConfig(d_model=48, n_heads=4, tie=None)), optimizer="adamw",
                           widths={"d_model": 96}, base_widths={"d_model": 48})
    c_attn = model.transformer.h[0].attn.c_attn.weight.detach()
    assert c_attn[:96].abs().max() == 0 and c_attn[96:].abs().min() > 0
    assert [s["role"] for s in plan["transformer.h.0.attn.c_attn.weight"].slices] == ["query", "key", "value"]
    assert gpt.attention_logit_scale(24, 12, widths={"d_model": 96}, base_widths={"d_model": 48}) == \
        pytest.approx(12 ** -0.5 / 2)

    tied = load_module(load_spec(SPECS / "gpt_table8_tied.mup"), "t.mup", str(tmp_path))
    model = GPT(GPTConfig(d_model=256, n_heads=4, d_head=64, tie="wte"))
    plan = tied.parametrize(model, GPT(GPTConfig(d_model=128, n_heads=2, d_head=64, tie="wte")), optimizer="adam",
                            widths={"d_model": 256}, base_widths={"d_model": 128})
    assert plan["lm_head.weight"].mult == 0.5 and plan["transformer.wte.weight"].role == "input"


def test_table_and_convert_handle_min_max_and_show_what_a_subrole_inherits(tmp_path, capsys):
    path = tmp_path / "s.mup"
    path.write_text("parametrization s\nwidth n\nhidden {\n  " + SPECTRAL + "\n  lr.adam = max(1/fan_in, 1/n^2)\n}\n")
    assert main(["table", str(path), "--format", "latex"]) == 0
    assert "\\max\\left(\\frac{1}{\\mathrm{fan\\_in}}, \\frac{1}{n^{2}}\\right)" in capsys.readouterr().out
    assert main(["table", str(path), "--format", "text"]) == 0
    assert "max(1/fan_in, 1/n^2)" in capsys.readouterr().out
    unit = convert(load_spec(path), "unit").spec
    assert format_spec(unit).count("min(1, sqrt(fan_out)/sqrt(fan_in))") == 4  # mult, lr, wd and eps move with θ
    assert check_spec(unit).results["adam"].regime == check_spec(load_spec(path)).results["adam"].regime
    assert main(["table", str(SPECS / "gpt_mup.mup")]) == 0
    adam_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Adam LR"))
    assert adam_row.split()[-2] == "1/fan_in"  # the query column: hidden's LR, inherited


def test_a_tie_needs_both_classes():
    with pytest.raises(MupError, match="needs the `output` class, which this spec has no block for") as err:
        parse_and_resolve("parametrization x\ninput { }\ntie input, output\n")
    assert err.value.diagnostics[0].span.line == 3


# ---------------------------------------------------------------- properties

_POWERS = st.sampled_from(["1", "fan_in", "1/fan_in", "fan_out", "1/fan_out", "1/fan_in^2", "sqrt(fan_in)"])


@settings(max_examples=40, deadline=None)
@given(st.tuples(_POWERS, _POWERS, _POWERS, _POWERS, _POWERS, _POWERS))
def test_a_shareable_tie_changes_nothing_and_the_fix_restores_the_readout(rules):
    """Tying two rules that share their init and LR exponents leaves every
    verdict as it was; otherwise, where the checker proposes a readout
    multiplier, the tied readout with it has the spec's readout invariants."""
    in_var, in_adam, out_var, out_mult, out_adam, out_sgd = rules
    text = (f"parametrization t\nwidth n\ninput {{\n  init.var = {in_var}\n  lr.sgd = fan_out\n  lr.adam = {in_adam}\n}}\n"
            "hidden {\n  init.var = 1/fan_in\n  lr.sgd = 1\n  lr.adam = 1/fan_in\n}\n"
            f"output {{\n  init.var = {out_var}\n  mult = {out_mult}\n  lr.sgd = {out_sgd}\n  lr.adam = {out_adam}\n}}\n")
    untied, tied = check_spec(parse_and_resolve(text)), check_spec(parse_and_resolve(text + "tie input, output\n"))
    out = untied.exponents["output"]
    if tied.tie.shareable:
        assert {o: (r.regime, r.desiderata) for o, r in tied.results.items()} == \
            {o: (r.regime, r.desiderata) for o, r in untied.results.items()}
    elif tied.tie.fix_a is not None:
        fixed = replace(tied.tie.tied, a=tied.tie.fix_a)
        assert (fixed.e_init, fixed.e_sgd, fixed.e_adam) == (out.e_init, out.e_sgd, out.e_adam)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["4*d", "64", "d/8", "sqrt(d)", "d^2/3", "min(d, 64)", "max(d, 64)", "d*sqrt(d)"]))
def test_derived_width_exponent_matches_its_growth(definition):
    spec = parse_and_resolve(f"parametrization x\nwidth d, e = {definition}\n")
    k = width_exponents(spec)["e"]
    value = spec.width_value("e")
    lo, hi = evaluate(value, {"d": 2.0 ** 40}), evaluate(value, {"d": 2.0 ** 44})
    assert abs(math.log(hi / lo) / math.log(2.0 ** 4) - float(k)) < 1e-9, (definition, k)


def test_the_runtime_refuses_a_fused_part_whose_lr_differs_and_names_the_rule(tmp_path):
    import torch

    from mupspec.empirical.gpt import GPT, GPTConfig

    text = (SPECS / "gpt_mup.mup").read_text().replace("query {\n  init.var = 0\n}",
                                                       "query {\n  init.var = 0\n  lr.adam = 1\n}")
    module = load_module(parse_and_resolve(text, str(SPECS / "q.mup")), "q.mup", str(tmp_path))
    torch.manual_seed(0)
    message = (r"c_attn.weight: fused query \| key \| value, but gpt_mup's `query` block states its own lr.adam: .*"
               r"may differ only in init.var; split the tensor into separate parameters")
    with pytest.raises(ValueError, match=message):
        module.parametrize(GPT(GPTConfig(d_model=96, n_heads=4, tie=None)), GPT(GPTConfig(d_model=48, n_heads=4, tie=None)),
                           optimizer="adam", widths={"d_model": 96}, base_widths={"d_model": 48})
    # at the base width every factor is 1, so only the rule as written can tell: refused there too
    with pytest.raises(ValueError, match=message):
        module.parametrize(GPT(GPTConfig(d_model=48, n_heads=4, tie=None)), GPT(GPTConfig(d_model=48, n_heads=4, tie=None)),
                           delta=GPT(GPTConfig(d_model=96, n_heads=4, tie=None)), optimizer="adam",
                           widths={"d_model": 48}, base_widths={"d_model": 48})
    # separate q/k/v projections may have their own LR: the refusal is about the fused tensor only
    plan = module.parametrize(GPT(GPTConfig(d_model=96, n_heads=4, tie=None, fused_qkv=False)),
                              GPT(GPTConfig(d_model=48, n_heads=4, tie=None, fused_qkv=False)), optimizer="adam",
                              widths={"d_model": 96}, base_widths={"d_model": 48})
    query, key = plan["transformer.h.0.attn.q_proj.weight"], plan["transformer.h.0.attn.k_proj.weight"]
    assert (query.role, query.lr_factor, key.role, key.lr_factor) == ("query", 1.0, "hidden", 0.5)


def test_checking_a_transformer_spec_imports_neither_sympy_nor_torch():
    import subprocess
    import sys

    code = ("import contextlib, io, sys\nfrom mupspec.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['check', 'specs/gpt_mup.mup', 'specs/gpt_table8_tied.mup'])\n"
            "print('sympy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

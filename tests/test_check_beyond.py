"""Issue 13's "Found" list: each silently wrong verdict of the checker, as a
careful user met it, now right (depth in every field, the α > 1 diagnostic,
named classes, convert's error, vanishing hidden layers, incomplete specs,
the one-line multiplier fix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mupspec.check import check_spec
from mupspec.cli import main
from mupspec.convert import convert, parse_setting
from mupspec.errors import MupError
from mupspec.printer import format_spec
from mupspec.report import diagnose, render_text
from mupspec.resolve import load_spec, parse_and_resolve

SPECS = Path(__file__).resolve().parent.parent / "specs"


def derived(tmp_path: Path, text: str, name: str = "x") -> Path:
    """A spec file beside copies of the bundled specs (so `extends` finds them)."""
    for spec in SPECS.glob("*.mup"):
        (tmp_path / spec.name).write_text(spec.read_text())
    path = tmp_path / f"{name}.mup"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- depth in every field


def test_a_depth_theta_conversion_keeps_the_depth_verdict_and_strict_equivalence(tmp_path, capsys):
    base = derived(tmp_path, "parametrization unused\n", "unused").parent / "depth_mup.mup"
    spec = load_spec(base)
    moved = convert(spec, settings=(parse_setting("hidden.theta=sqrt(L)", spec),)).spec
    out = tmp_path / "moved.mup"
    out.write_text(format_spec(moved.model_copy(update={"name": "moved"})))
    result = check_spec(load_spec(out))
    assert result.ok and {r.depth_class for r in result.results.values()} == {"Depth-μP"}
    assert main(["equiv", "--strict", str(base), str(out)]) == 0


def test_a_depth_factor_in_the_hidden_init_is_not_depth_mup(tmp_path, capsys):
    path = derived(tmp_path, "parametrization x extends depth_mup\nhidden {\n  init.var = 1/(fan_in*L)\n}\n")
    assert main(["equiv", str(tmp_path / "depth_mup.mup"), str(path)]) == 1
    assert "alpha" in capsys.readouterr().out
    result = check_spec(load_spec(path))
    # branches start L^-1/2 smaller: α = 1, and with Depth-μP's LRs α+γ = 1 -- CompleteP's class
    assert result.depth.alpha == 1 and {r.depth_class for r in result.results.values()} == {"CompleteP"}
    assert not any("depth_mup" in r.names for r in result.results.values())


def test_gpt2_branch_output_init_is_classified_by_tp6_not_unstable_at_init(tmp_path):
    text = ("parametrization gpt2 extends mup_table8\ndepth L\n"
            "residual {\n  layers = 2\n  init.var = 1/(2*L)\n}\n")
    result = check_spec(load_spec(derived(tmp_path, text)))
    assert result.depth.alpha == 1 / 2 and result.depth.layers == 2
    # stable at init; with a depth-independent LR the blocks' updates add up: unstable (α+γ = 0 < 1)
    assert {r.depth_class for r in result.results.values()} == {"unstable"}
    fixes = {f.fix for f in diagnose(result) if f.kind == "residual"}
    assert fixes == {"lr.sgd = 1/L", "lr.adam = 1/L"}
    text_report = render_text(result, diagnose(result), "gpt2.mup")
    assert "block depth 2" in text_report and "fundamental limitations" in text_report
    fixed = text.replace("}\n", "  lr.sgd = 1/L\n  lr.adam = 1/L\n}\n")
    again = check_spec(load_spec(derived(tmp_path, fixed, "fixed")))
    assert {r.depth_class for r in again.results.values()} == {"Depth-μP"}


def test_alpha_above_one_is_blamed_on_the_multiplier_not_on_an_lr_it_already_has(tmp_path):
    text = "parametrization a32 extends depth_mup\nresidual {\n  mult = L^(-3/2)\n  lr.sgd = L^2\n}\n"
    result = check_spec(load_spec(derived(tmp_path, text)), only=("sgd",))
    findings = [f for f in diagnose(result) if f.kind == "residual"]
    assert [(f.field, f.fix.split("  ")[0]) for f in findings] == [("mult", "mult = 1/L")]
    assert not result.ok


# ---------------------------------------------------------------- named classes


MFP_ONE_HIDDEN_LAYER = """parametrization mfp1
input {
  init.var = 1
  lr.sgd = n
}
output {
  init.var = 1
  mult = 1/fan_in
  lr.sgd = n
}
"""


def test_tp4_mfp_with_one_hidden_layer_is_mean_field_when_declared_without_hidden(tmp_path, capsys):
    path = derived(tmp_path, MFP_ONE_HIDDEN_LAYER)
    assert main(["equiv", str(path), str(tmp_path / "mean_field.mup")]) == 0
    assert main(["check", str(path), "--expect", "mean_field"]) == 1  # incomplete unless declared
    assert main(["check", str(path), "--without", "hidden", "--expect", "mean_field"]) == 0


def test_mean_field_under_adam_is_mean_field(tmp_path):
    text = """parametrization mf_adam
input {
  init.var = 1
  lr.adam = 1
}
hidden {
  init.var = 1
  mult = 1/sqrt(fan_in)
  lr.adam = 1/sqrt(fan_in)
}
output {
  init.var = 1
  mult = 1/fan_in
  lr.adam = 1
}
"""
    result = check_spec(parse_and_resolve(text))
    assert result.matches("mean_field") and result.matches("mup")


def test_a_readout_initialized_below_mups_is_still_named_mup(tmp_path):
    text = "parametrization z extends mup_table3\noutput {\n  init.var = 1/fan_in^4\n}\n"
    result = check_spec(load_spec(derived(tmp_path, text)))
    assert result.ok and all("mup" in r.names for r in result.results.values())


# ---------------------------------------------------------------- convert, desiderata, completeness


def test_convert_to_a_zero_init_names_the_field_the_user_set():
    spec = load_spec(SPECS / "mup_table3.mup")
    with pytest.raises(MupError) as err:
        convert(spec, settings=(parse_setting("hidden.init.var=0", spec),))
    assert "`init.var`" in str(err.value) and "`mult`" not in str(err.value)
    with pytest.raises(MupError) as err:
        parse_setting("hidden.lr.adam=0", spec)
    assert "`lr.adam` is zero" in str(err.value)


def test_a_hidden_layer_that_vanishes_at_init_does_not_learn_features(tmp_path):
    text = "parametrization v extends mup_table3\nhidden {\n  init.var = 1/fan_in^2\n}\n"
    result = check_spec(load_spec(derived(tmp_path, text)))
    for res in result.results.values():
        assert not res.desiderata["init_activations"] and not res.desiderata["feature_learning"]


def test_a_spec_with_only_a_hidden_block_fails_unless_declared_partial(tmp_path, capsys):
    path = derived(tmp_path, "parametrization h\nhidden {\n  lr.adam = 1/fan_in\n}\n")
    assert main(["check", str(path)]) == 1
    assert "incomplete spec: no input, output block" in capsys.readouterr().out
    assert main(["check", str(path), "--without", "input", "--without", "output"]) == 0
    assert main(["check", str(path), "--without", "hidden"]) == 2  # the spec has one


def test_a_forgotten_output_multiplier_gets_the_one_line_fix(tmp_path):
    text = "parametrization nomult extends mup_table8\noutput {\n  mult = 1\n}\n"
    result = check_spec(load_spec(derived(tmp_path, text)))
    output = [f for f in diagnose(result) if f.kind == "output"]
    assert [(f.field, f.fix.split("  ")[0]) for f in output] == [("mult", "mult = 1/fan_in")]


def test_gpt2_init_on_the_output_projection_sub_roles_is_classified_by_tp6(tmp_path):
    text = ("parametrization gpt2 extends gpt_mup\ndepth L\nresidual {\n  layers = 2\n}\n"
            "attn_out {\n  init.var = 1/(2*fan_in*L)\n}\nmlp_out {\n  init.var = 1/(2*fan_in*L)\n}\n")
    result = check_spec(load_spec(derived(tmp_path, text)))
    assert result.depth.alpha == 1 / 2
    assert {r.depth_class for r in result.results.values()} == {"unstable"}  # Θ(1) Adam LR in depth
    assert [f.fix for f in diagnose(result) if f.kind == "residual"] == ["lr.adam = 1/L"]
    fixed = text.replace("  layers = 2\n", "  layers = 2\n  lr.adam = 1/L\n")
    again = check_spec(load_spec(derived(tmp_path, fixed, "fixed")))
    assert {r.depth_class for r in again.results.values()} == {"Depth-μP"}

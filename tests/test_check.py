"""`mupspec check` against the papers: TP4 Table 1, TP5 Tables 3/8/9, SP, u-μP,
Depth-μP / CompleteP (TP6), attention (TP5 §6.1); and the CLI contract
(exit codes, --expect, --format json/markdown, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction as F
from pathlib import Path

import pytest
import sympy

from mupspec.check import CORE, check_spec
from mupspec.cli import main
from mupspec.report import diagnose
from mupspec.resolve import load_spec, parse_and_resolve

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
HALF = sympy.Rational(1, 2)


def bundled(name: str):
    return load_spec(SPECS / f"{name}.mup")


def power(k: F) -> str:
    return f"n^({k})"


def abc_spec(layers: dict[str, tuple], c: F) -> str:
    """A spec written straight from TP4's abc numbers: W = n^-a w, w ~ N(0, n^-2b),
    SGD LR n^-c (one global c, as in TP4)."""
    lines = ["parametrization tp4", "width n"]
    for kind, (a, b) in layers.items():
        lines.append(f"{kind} {{ mult = {power(-F(a))}; init.var = {power(-2 * F(b))}; lr.sgd = {power(-F(c))} }}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- TP4 Table 1

TP4_TABLE1 = {
    # name: (layers {kind: (a, b)}, c, regime, r)
    "SP (LR 1/n)": ({"input": (0, 0), "hidden": (0, F(1, 2)), "output": (0, F(1, 2))}, 1, "kernel", HALF),
    "NTP": ({"input": (0, 0), "hidden": (F(1, 2), 0), "output": (F(1, 2), 0)}, 0, "kernel", HALF),
    "MFP (L=1)": ({"input": (0, 0), "output": (1, 0)}, -1, "feature_learning", 0),
    "μP": ({"input": (F(-1, 2), F(1, 2)), "hidden": (0, F(1, 2)), "output": (F(1, 2), F(1, 2))}, 0,
           "feature_learning", 0),
}


@pytest.mark.parametrize("name", TP4_TABLE1)
def test_tp4_table1_from_abc(name):
    layers, c, expected, r = TP4_TABLE1[name]
    # MFP (L=1) is a one-hidden-layer net: no hidden class, declared as such
    result = check_spec(parse_and_resolve(abc_spec(layers, c)), without=tuple(k for k in CORE if k not in layers))
    sgd = result.results["sgd"]
    assert sgd.r == r
    assert result.matches(expected)
    assert sgd.desiderata["stable_after_step"]
    assert sgd.desiderata["feature_learning"] == (expected == "feature_learning")


def test_tp4_mup_is_maximal_and_named():
    layers, c, _, _ = TP4_TABLE1["μP"]
    sgd = check_spec(parse_and_resolve(abc_spec(layers, c))).results["sgd"]
    assert sgd.regime == "mup" and "mup" in sgd.names


@pytest.mark.parametrize("name, regime, r, named", [
    ("sp_lr_inv_width", "kernel", HALF, "sp_lr_inv_width"),
    ("ntk", "kernel", HALF, "ntk"),
    ("mean_field", "mup", 0, "mean_field"),   # MFP = μP for SGD (Everett et al.: same class)
])
def test_tp4_bundled_specs_sgd(name, regime, r, named):
    sgd = check_spec(bundled(name), only=("sgd",)).results["sgd"]
    assert (sgd.regime, sgd.r) == (regime, r) and named in sgd.names


def test_sp_with_lr_inv_width_is_stable_kernel_not_trivial():
    sgd = check_spec(bundled("sp_lr_inv_width"), only=("sgd",)).results["sgd"]
    out = {t.name: t.k for t in sgd.terms if t.kind == "output"}
    assert max(k for name, k in out.items() if "change" in name) == 0   # the output still moves Θ(1)
    assert all(t.k <= 0 for t in sgd.terms)


# ---------------------------------------------------------------- TP5 tables


@pytest.mark.parametrize("name", ["mup_table3", "mup_table8", "mup_table9"])
def test_tp5_tables_are_mup_for_sgd_and_adam(name, capsys):
    result = check_spec(bundled(name))
    assert set(result.results) == {"sgd", "adam"}
    for opt, res in result.results.items():
        assert res.regime == "mup" and "mup" in res.names and all(res.desiderata.values()), opt
    assert result.ok and [f for f in diagnose(result) if f.severity == "error"] == []
    assert main(["check", str(SPECS / f"{name}.mup")]) == 0
    assert "verdict: μP" in capsys.readouterr().out


# ---------------------------------------------------------------- SP and the original muP_MLP


def findings_by_rule(name: str) -> dict[tuple, object]:
    result = check_spec(bundled(name))
    return {(f.kind, f.field): f for f in diagnose(result)}


def test_adam_eps_above_the_gradient_scale_is_a_warning():
    found = findings_by_rule("mup_table8")
    hidden = found[("hidden", "eps.adam")]
    assert (hidden.severity, hidden.found, hidden.needed, hidden.fix) == ("warning", "0", ">= 1", "eps.adam = 1/fan_in")
    assert ("hidden", "eps.adam") not in findings_by_rule("completep")   # CompleteP scales eps by 1/m_N
    # Table 9's input multiplier sqrt(fan_out) makes its input gradient Θ(n^-1/2), not Θ(n^-1)
    assert findings_by_rule("mup_table9")[("input", "eps.adam")].needed == ">= 1/2"


def test_sp_with_constant_lr_is_unstable_and_names_the_layers():
    result = check_spec(bundled("sp"))
    for opt in ("sgd", "adam"):
        res = result.results[opt]
        assert res.regime == "unstable" and "sp" in res.names
        growing = {(t.kind, t.role) for t in res.terms if t.k > 0}
        assert ("hidden", "own_update") in growing and ("output", "own_update") in growing
    found = findings_by_rule("sp")
    assert found[("output", "init.var")].fix.startswith("init.var = 1/fan_in^2")
    assert found[("hidden", "lr.adam")].fix.startswith("lr.adam = 1/fan_in")
    assert found[("output", "lr.sgd")].fix.startswith("lr.sgd = 1/fan_in")
    assert found[("input", "lr.sgd")].fix.startswith("lr.sgd = fan_out")


def test_seed_mlp_diagnostics_point_at_the_output_rule(capsys):
    assert main(["check", str(SPECS / "seed_mlp.mup")]) == 1
    out = capsys.readouterr().out
    assert "seed_mlp.mup:23:3" in out                       # output { init.var = 1/n }
    assert "init.var = 1/n [here init.var = 1/fan_in]" in out and "SP's" in out
    assert "fix: init.var = 1/fan_in^2" in out
    assert "fix: lr.adam = 1/fan_in" in out                 # hidden and output under Adam
    assert "equivalent to SP" in out
    f = findings_by_rule("seed_mlp")[("output", "init.var")]
    assert (f.found, f.needed, f.span.line) == ("1/2", "1", 23)


def test_sp_attention_logit_is_reported():
    f = findings_by_rule("sp")[("attention", "logit")]
    assert (f.found, f.needed, f.fix) == ("-1/2", "-1", "logit = 1/n")
    res = check_spec(bundled("sp_lr_inv_width"), only=("sgd",)).results["sgd"]
    # kernel regime: q, k barely move, so 1/sqrt(d) logits stay Θ(1)
    assert [t.k for t in res.terms if t.kind == "attention"] == [0]


# ---------------------------------------------------------------- u-μP


def test_umup_embedding_lr_departure_reported_precisely():
    result = check_spec(bundled("umup"))
    adam = result.results["adam"]
    assert list(result.results) == ["adam"]
    assert result.exponents["input"].e_adam == HALF
    assert adam.regime == "feature_learning" and "umup" in adam.names
    assert adam.desiderata["stable_after_step"] and not adam.desiderata["maximal_updates"]
    own_input = [t.k for t in adam.terms if t.kind == "input" and t.role == "own_update"]
    assert own_input == [-HALF]  # under-updated embedding, not unstable
    findings = diagnose(result)
    errors = [f for f in findings if f.severity == "error"]
    assert [(f.kind, f.field, f.found, f.needed) for f in errors] == [("input", "lr.adam", "1/2", "0")]
    findings = errors
    assert "vanishes" in findings[0].why and findings[0].fix.startswith("lr.adam = 1")


def test_umup_cli_expect():
    path = str(SPECS / "umup.mup")
    assert main(["check", path]) == 1
    assert main(["check", path, "--expect", "umup"]) == 0
    assert main(["check", path, "--expect", "feature_learning"]) == 0
    assert main(["check", path, "--expect", "mup"]) == 1


# ---------------------------------------------------------------- depth (TP6)


def test_depth_mup_is_tp6_alpha_half():
    result = check_spec(bundled("depth_mup"))
    assert result.depth.alpha == HALF
    for opt in ("sgd", "adam"):
        assert result.depth.alpha + result.depth.gamma(opt) == 1
        assert result.results[opt].depth_class == "Depth-μP"
    assert result.ok and result.matches("depth_mup")


def test_completep_is_alpha_one_for_adam():
    result = check_spec(bundled("completep"), only=("adam",))
    assert result.depth.alpha == 1 and result.results["adam"].depth_class == "CompleteP"
    assert result.ok and result.matches("completep")


def test_completep_sgd_rule_is_derived_from_tp6():
    # the bundled spec's SGD rule lr.sgd = L is alpha + gamma = 1 with alpha = 1
    result = check_spec(bundled("completep"))
    assert result.ok and result.results["sgd"].depth_class == "CompleteP"


def test_alpha_one_with_constant_sgd_lr_is_lazy_in_depth_and_the_fix_says_so():
    # alpha = 1 with an SGD LR constant in depth: each block moves by L^-(2α+c) = L^-2 -> trivial.
    text = "parametrization d extends mup_table8\ndepth L\nresidual { mult = 1/L; lr.adam = 1 }\n"
    result = check_spec(parse_and_resolve(text, str(SPECS / "d.mup")), only=("sgd",))
    assert result.results["sgd"].depth_class == "trivial"
    (f,) = [f for f in diagnose(result) if f.kind == "residual" and f.severity == "error"]
    assert (f.field, f.found, f.fix) == ("lr.sgd", "2", "lr.sgd = L")


def test_depth_alpha_below_half_is_unstable():
    text = "parametrization d extends mup_table8\ndepth L\nresidual { mult = L^(-1/4); lr.adam = L^(-3/4) }\n"
    result = check_spec(parse_and_resolve(text, str(SPECS / "d.mup")), only=("adam",))
    assert result.results["adam"].depth_class == "unstable at init" and not result.ok
    assert any(f.kind == "residual" and f.fix == "mult = 1/sqrt(L)" for f in diagnose(result))


# ---------------------------------------------------------------- CLI contract


def test_json_schema(capsys):
    assert main(["check", str(SPECS / "sp.mup"), str(SPECS / "mup_table8.mup"), "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "mupspec.check/1" and doc["ok"] is False
    sp, mup = doc["reports"]
    assert sp["results"]["sgd"]["regime"] == "unstable" and mup["ok"] is True
    assert mup["exponents"]["output"] == {"a": "1", "b": "0", "c_sgd": "-1", "c_adam": "0", "e_init": "1",
                                          "e_sgd": "1", "e_adam": "1", "wd_sgd": "0", "wd_adam": "0", "eps_adam": "0"}
    diag = sp["diagnostics"][0]
    assert set(diag) == {"severity", "class", "field", "optimizer", "file", "line", "column", "found", "needed",
                         "message", "why", "fix"}


def test_markdown_and_expect(capsys):
    assert main(["check", str(SPECS / "ntk.mup"), "--format", "markdown", "--expect", "kernel"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## ") and "| class | a | b |" in out
    assert main(["check", str(SPECS / "sp.mup"), "--expect", "sp"]) == 0
    assert main(["check", str(SPECS / "sp.mup"), "--expect", "kernel"]) == 1
    assert main(["check", str(SPECS / "sp_lr_inv_width.mup"), "--optimizer", "sgd", "--expect", "kernel"]) == 0


def test_absent_classes_are_said_not_checked():
    result = check_spec(parse_and_resolve("parametrization h\nhidden { lr.adam = 1/fan_in }\n"))
    assert result.absent == ["input", "output", "bias", "norm"]
    assert any("not checked" in note and "input" in note for note in result.notes)


def test_errors_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.mup")]) == 2
    bad = tmp_path / "bad.mup"
    bad.write_text("parametrization bad\nhidden { lr.adam = 1/fan_inn }\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.mup:2:" in err and "fan_in" in err and "Traceback" not in err


def test_check_does_not_import_torch():
    code = ("import sys; from mupspec.cli import main; rc = main(['check', 'specs/sp.mup']); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr


def test_negative_scale_at_large_width_is_an_input_error(tmp_path, capsys):
    spec = tmp_path / "neg.mup"
    spec.write_text("parametrization neg\nwidth n\nhidden { lr.adam = 1 - n }\n")
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "neg.mup:3:20" in err and "negative at large width" in err


def test_cancelling_sum_goes_through_sympy(tmp_path):
    # sqrt(n^2 + 1) - n = Θ(1/n): the leading terms cancel, the next one decides
    text = "parametrization c\nwidth n\nhidden { lr.adam = sqrt(n^2 + 1) - n }\n"
    result = check_spec(parse_and_resolve(text))
    assert result.exponents["hidden"].c_adam == 1 and result.results["adam"].regime == "mup"


def test_depth_without_residual_block_points_at_the_depth_declaration():
    text = "parametrization d extends mup_table8\ndepth L\n"
    result = check_spec(parse_and_resolve(text, str(SPECS / "d.mup")), only=("adam",))
    (f,) = [f for f in diagnose(result) if f.kind == "residual"]
    assert f.span.line == 2 and f.fix == "mult = 1/sqrt(L)"


def test_depth_names_are_listed_with_width_names():
    assert "depth_mup" in check_spec(bundled("depth_mup")).results["adam"].names
    assert "completep" in check_spec(bundled("completep")).results["adam"].names
    assert "completep" in check_spec(bundled("completep")).results["sgd"].names


def test_spec_without_layer_blocks_is_not_mup(tmp_path, capsys):
    spec = tmp_path / "empty.mup"
    spec.write_text("parametrization e\nwidth n\nattention { logit = 1/n }\n")
    assert main(["check", str(spec)]) == 1
    assert "nothing to check" in capsys.readouterr().out


def test_optimizer_the_spec_does_not_cover_is_an_error(capsys):
    assert main(["check", str(SPECS / "ntk.mup"), "--optimizer", "adam"]) == 2
    assert "covers: sgd" in capsys.readouterr().err


def test_every_error_finding_comes_with_a_failing_verdict():
    # a vanishing bias init (Var 1/n) is harmless: no error, still μP
    text = 'parametrization b extends mup_table8\nbias { init.var = 1/fan_out }\n'
    result = check_spec(parse_and_resolve(text, str(SPECS / "b.mup")))
    assert result.ok and not [f for f in diagnose(result) if f.severity == "error"]
    for path in sorted(SPECS.glob("*.mup")):
        result = check_spec(load_spec(path))
        errors = [f for f in diagnose(result) if f.severity == "error"]
        assert bool(errors) == (not result.ok), path.name


@pytest.mark.parametrize("spec, name", [("mup_table8", "muP"), ("mup_table8", "μP"), ("mean_field", "mean-field"),
                                        ("mean_field", "MF"), ("depth_mup", "Depth-muP"), ("completep", "CompleteP"),
                                        ("umup", "u-muP"), ("sp", "SP"), ("sp", "standard"), ("ntk", "Kernel")])
def test_check_expect_takes_the_class_names_coord_check_takes(spec, name):
    assert main(["check", str(SPECS / f"{spec}.mup"), "--expect", name]) == 0


def test_check_expect_an_unknown_class_is_exit_2_with_the_list(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check", str(SPECS / "sp.mup"), "--expect", "mupp"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no class `mupp`" in err and "mean_field" in err and "Traceback" not in err
    assert main(["check", str(SPECS / "sp.mup"), "--expect", "muP"]) == 1

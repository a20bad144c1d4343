"""Tests of the empirical stage and `mupspec verify`: fitting, networks built
from specs, predictions taken from the checker, and the command end to end
on small grids (the full default grid runs in benchmarks/bench_verify.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mupspec.commands import verify
from mupspec.empirical.fit import fit_exponents, slope, summarize, t95
from mupspec.empirical.measure import Sample
from mupspec.empirical.models import Arch, build
from mupspec.numeric import layer_value
from mupspec.resolve import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SMALL = ["--widths", "64,256,1024", "--depths", "3", "--seeds", "3", "--steps", "1"]


def mupspec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mupspec", *args], cwd=ROOT, capture_output=True, text=True)


# ---------------------------------------------------------------- fitting


def test_slope_recovers_a_power_law():
    xs = [64, 128, 256, 512]
    assert slope(xs, [3.0 * x ** 0.7 for x in xs]) == pytest.approx(0.7)
    assert math.isnan(slope(xs, [1.0, 0.0, 1.0, 1.0]))  # a zero has no logarithm


def test_summarize_is_mean_with_student_t_interval():
    mean, ci = summarize([0.9, 1.0, 1.1])
    assert mean == pytest.approx(1.0)
    assert ci == pytest.approx(t95(2) * 0.1 / math.sqrt(3))
    assert summarize([0.5]) == (0.5, math.inf)


def test_fit_exponents_groups_replicates():
    samples = [Sample("sgd", w, d, s, 1, "hidden", "own", (1 + 0.01 * s) * w ** -0.5 * d)
               for w in (64, 128, 256) for d in (3, 4) for s in (0, 1)]
    (fit,) = fit_exponents(samples)
    assert fit.replicates == 4
    assert fit.exponent == pytest.approx(-0.5)
    (depth_fit,) = fit_exponents(samples, axis="depth")
    assert depth_fit.exponent == pytest.approx(1.0)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("name", ["sp", "mup_table3", "mup_table8", "mup_table9"])
def test_network_follows_the_spec(name):
    spec = load_spec(SPECS / f"{name}.mup")
    net = build(spec, 512, 3, arch=Arch(d_in=16, d_out=4), seed=0)
    for layer in net.layers:
        fan_out, fan_in = layer.weight.shape
        std = math.sqrt(layer_value(spec, layer.kind, "init.var", fan_in=fan_in, fan_out=fan_out, width=512))
        mult = layer_value(spec, layer.kind, "mult", fan_in=fan_in, fan_out=fan_out, width=512)
        assert float(layer.weight.detach().std()) == pytest.approx(std, rel=0.1)
        assert layer.scale.mult == pytest.approx(mult)
    groups = net.param_groups("sgd", base_lr=0.1)
    hidden = net.layers[1].weight
    (group,) = [g for g in groups if any(p is hidden for p in g["params"])]
    assert group["lr"] == pytest.approx(0.1 * layer_value(spec, "hidden", "lr.sgd", fan_in=512, fan_out=512, width=512))


def test_residual_prenorm_network_runs_and_records_every_layer():
    spec = load_spec(SPECS / "depth_mup.mup")
    net = build(spec, 64, 4, arch=Arch(kind="residual-prenorm"), seed=0)
    record: list = []
    out = net(torch.randn(2, 16, dtype=torch.float32), record)
    assert out.shape == (2, 4) and len(record) == 6
    assert [l.branch for l in net.layers if l.kind == "hidden"] == pytest.approx([0.5] * 4)  # 1/sqrt(L), L = 4
    assert any(name.startswith("g") for name, _ in net.named_parameters())


# ---------------------------------------------------------------- predictions


def test_equivalent_tables_have_equal_predictions():
    preds = {n: {o: verify.predictions(load_spec(SPECS / f"{n}.mup"), o) for o in ("sgd", "adam")}
             for n in ("mup_table3", "mup_table8", "mup_table9")}
    assert preds["mup_table3"] == preds["mup_table8"] == preds["mup_table9"]


def test_first_step_predictions_differ_from_asymptotic_only_when_w_out_outgrows_its_init():
    mup, sp = load_spec(SPECS / "mup_table8.mup"), load_spec(SPECS / "sp.mup")
    assert verify.predictions(mup, "sgd") == verify.predictions(mup, "sgd", first_steps=False)
    early, late = verify.predictions(sp, "sgd"), verify.predictions(sp, "sgd", first_steps=False)
    assert early[("own", "output")] == late[("own", "output")]
    assert early[("prop", "output")] < late[("prop", "output")]


# ---------------------------------------------------------------- the command


def test_verify_passes_on_mup_and_writes_plots(tmp_path):
    result = mupspec("verify", "specs/mup_table3.mup", *SMALL, "--optimizer", "sgd", "--plot", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: all" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coord_mup_table3_sgd.png"]


def test_verify_holding_sp_to_mup_fails_and_names_layers():
    result = mupspec("verify", "specs/sp.mup", "--expect", "muP", *SMALL, "--optimizer", "adam")
    assert result.returncode == 1, result.stdout + result.stderr
    tail = result.stdout.split("Layers that differ:")[1]
    assert "hidden" in tail and "output" in tail


def test_verify_expect_takes_class_names_files_and_bundled_names():
    assert verify.expected_spec("Mean-Field").name == "mean_field"
    assert verify.expected_spec("CompleteP").name == "completep"
    assert verify.expected_spec("mup_table3").name == "mup_table3"  # a bundled spec that is no class
    assert verify.expected_spec(str(ROOT / "specs" / "ntk.mup")).name == "ntk"


@pytest.mark.parametrize("args, message", [
    (["specs/nope.mup"], "no such file"),
    (["specs/sp.mup", "--expect", "nosuch"], "a class: muP, SP, NTK, mean-field, Depth-muP, CompleteP, u-muP"),
    (["specs/sp.mup", "--widths", "64"], "two distinct widths"),
    (["specs/sp.mup", "--arch", "mlp", "--depths", "2"], "depth >= 3"),
    (["specs/sp.mup", "--widths", "64,abc"], "comma-separated integers"),
])
def test_verify_bad_input_is_a_clear_error(args, message):
    result = mupspec("verify", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name, kind", [("mup_table8", "mlp"), ("umup", "mlp"), ("depth_mup", "residual"),
                                        ("completep", "residual-prenorm")])
def test_codegen_built_network_is_the_generated_modules_network(name, kind):
    """verify builds MLPs through `mupspec codegen`'s module: our forward,
    which reads the plan's multipliers to record every layer, must equal the
    generated code's own forward (its hooks)."""
    from mupspec.empirical.models import build_codegen

    spec = load_spec(SPECS / f"{name}.mup")
    net = build_codegen(spec, 256, 3, "adam", arch=Arch(kind=kind), seed=1, dtype=torch.float64)
    x = torch.randn(4, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net(x), net.model(x), rtol=1e-12, atol=1e-12)
    assert {l.kind for l in net.layers} == {"input", "hidden", "output"}


def test_a_hidden_part_with_a_large_constant_does_not_hide_the_leading_exponent(tmp_path):
    """μP with the hidden LR cut by n^-1/2: the features still move Θ(1)
    (the input layer's update propagates), but at widths <= 1024 the hidden
    layers' own n^-1/2 updates are the larger part of the change, so the
    total's fitted slope is far below 0. verify compares the fastest part."""
    path = tmp_path / "cut.mup"
    path.write_text(f'parametrization cut "hidden LR cut" extends "{SPECS / "mup_table3.mup"}"\n'
                    "hidden {\n  lr.adam = 1/n^1.5\n}\n")
    spec = load_spec(path)
    rows, _, fits, _ = verify.verify_spec(spec, widths=(64, 256, 1024), depths=(3,), seeds=3, steps=1,
                                          optimizers=("adam",))
    assert all(r.agrees for r in rows)
    (features,) = [r for r in rows if r.quantity == "delta"]
    assert features.source == "input" and abs(features.measured) < 0.15
    assert fits[("adam", 1, "hidden", "delta")].exponent < -0.25  # the total, dominated by the hidden part


def test_depth_exponents_are_reported_for_depth_specs():
    result = mupspec("verify", "specs/depth_mup.mup", "--widths", "64,128", "--depths", "2,4,8", "--seeds", "2",
                     "--steps", "1", "--optimizer", "adam", "--depth-exponents")
    assert result.returncode == 0, result.stdout + result.stderr
    depth_table = result.stdout.split("measured depth exponents")[1]
    # Depth-μP: each block's own update shrinks with depth (branch 1/sqrt(L) x Adam LR 1/sqrt(L))
    own = next(line for line in depth_table.splitlines() if "hidden  own-update" in line)
    assert float(own.split()[-3]) < -0.5

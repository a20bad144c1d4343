"""Tests of the coordinate check of any nn.Module (mupspec.empirical.coord)
and `mupspec coord-check`: the user's own MLP and GPT (tests/data/user_models.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mupspec.commands import verify
from mupspec.empirical import coord
from mupspec.empirical.coord import Recorder, Run, coord_check, module_sites, role_predictions, train_and_record
from mupspec.resolve import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
MODELS = ROOT / "tests" / "data" / "user_models.py"
sys.path.insert(0, str(MODELS.parent))
import user_models  # noqa: E402

FAST = dict(steps=2, seeds=2)


def mupspec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mupspec", *args], cwd=ROOT, capture_output=True, text=True)


def main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (torch is already imported: fast)."""
    from mupspec.cli import main as cli_main

    try:
        code = cli_main(list(args))
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- predictions


@pytest.mark.parametrize("name, family, expected", [
    ("mup_table8", "adam", {("hidden", "act"): 0, ("output", "act"): -0.5, ("hidden", "own"): 0,
                            ("hidden", "delta"): 0, ("output", "delta"): 0, ("logits", "act"): -0.5,
                            ("logits", "delta"): 0, ("tied-out", "act"): 0}),
    ("sp", "adam", {("hidden", "own"): 1, ("hidden", "delta"): 1, ("output", "own"): 1, ("output", "prop"): 1.5,
                    ("output", "delta"): 1.5, ("logits", "act"): 0, ("logits", "delta"): 1.5}),
    ("sp", "sgd", {("input", "own"): -0.5, ("hidden", "own"): 0.5, ("output", "prop"): 1.0}),
])
def test_role_predictions(name, family, expected):
    preds = role_predictions(load_spec(SPECS / f"{name}.mup"), family)
    assert {k: preds[k] for k in expected} == expected


def test_verify_takes_its_predictions_from_the_same_place():
    spec = load_spec(SPECS / "sp.mup")
    assert verify.predictions(spec, "adam")[("prop", "output")] == 1.5
    assert verify.predictions(spec, "adam", first_steps=False)[("prop", "output")] == 2.0  # W_out moved by n^0


def test_adam_relative_update_is_init_std_over_lr():
    preds = role_predictions(load_spec(SPECS / "mup_table8.mup"), "adam")
    assert preds[("hidden", "upd")] == -0.5  # std n^-1/2, LR n^-1
    assert role_predictions(load_spec(SPECS / "sp.mup"), "adam")[("hidden", "upd")] == 0.5


# ---------------------------------------------------------------- --expect CLASS


@pytest.mark.parametrize("names, spec", [
    (("muP", "mup", "μP", "MUP"), "mup_table8"), (("SP", "sp", "Standard"), "sp"), (("NTK", "ntp"), "ntk"),
    (("mean-field", "MF", "mean_field", "Mean Field", "mfp"), "mean_field"), (("Depth-muP", "depth_mup"), "depth_mup"),
    (("CompleteP", "completep"), "completep"), (("u-muP", "umup", "u-μP"), "umup"),
])
def test_expect_class_names_resolve_to_their_bundled_spec(names, spec):
    from mupspec import bundled
    from mupspec.resolve import load_expected

    for name in names:
        assert load_expected(name).name == spec, name
    assert bundled.class_spec(names[0]).stem == spec and bundled.class_spec("no-such-class") is None


def test_expect_class_predictions_tell_sp_from_mup():
    """The class's exponents are its bundled spec's: SP's hidden own-update
    term grows like n under Adam, μP's is Θ(1)."""
    from mupspec.resolve import load_expected

    assert role_predictions(load_expected("SP"), "adam")[("hidden", "own")] == 1.0
    assert role_predictions(load_expected("muP"), "adam")[("hidden", "own")] == 0.0


def test_expect_sp_holds_for_an_sp_model():
    result = coord_check(user_models.mlp, [64, 128, 256, 512], spec=str(SPECS / "sp.mup"), expect="sp",
                         optimizer="adam", **FAST)
    assert result.ok, result.render()


@pytest.mark.parametrize("expect, message", [
    ("nosuch", "a class: muP, SP, NTK, mean-field, Depth-muP, CompleteP, u-muP"),
    ("NTK", "`ntk` states no adam rules (it covers sgd)"),
])
def test_cli_expect_unknown_or_uncovered_class_exit_2(expect, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = main(capsys, "coord-check", "specs/mup_table8.mup", "--model", f"{MODELS}:mlp", "--steps", "1",
                          "--seeds", "1", "--optimizer", "adam", "--expect", expect)
    assert code == 2, out + err
    assert message in err and "Traceback" not in err


# ---------------------------------------------------------------- the own-update term


def test_own_update_term_includes_the_hook_multiplier():
    """For a Linear whose multiplier is a forward pre-hook, the recorded
    own-update term is exactly mult * (W_t - W_0) x_t."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3, bias=False)).double()
    model[1].register_forward_pre_hook(lambda m, args: (args[0] * 0.25,))
    sites = module_sites(model, {"0.weight": "input", "0.bias": "bias", "1.weight": "output"})
    x = torch.randn(4, 5, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w0 = model[1].weight.detach().clone()
    by_step = train_and_record(Run(model, opt, (x,), {}, None, {}, sites), 1, coord.QUANTITIES, seed=0)
    with torch.no_grad():
        h = model[0](x)
        expected = coord.rms(0.25 * h @ (model[1].weight - w0).T)
    assert by_step[1][("1", "own")] == pytest.approx(expected, rel=1e-12)
    assert by_step[1][("1:input", "act")] == pytest.approx(coord.rms(h), rel=1e-12)  # the readout's features
    assert ("1.weight", "upd") in by_step[1]


def test_tied_readout_takes_the_output_role():
    from mupspec.codegen import load_module

    P = load_module(load_spec(SPECS / "mup_table8.mup"), "mup_table8.mup")
    model = user_models.gpt(128)
    base = P.base_shapes(user_models.gpt(64))
    roles, sites = coord._roles_and_sites(P, model, base, dict(optimizer="adam", widths={"n": 128},
                                                                base_widths={"n": 64}), "gpt", 128)
    by_name = {s.name: s.role for s in sites}
    assert roles["wte.weight"] == "input" and by_name["wte"] == "input"
    assert roles["lm_head.weight"] == "output" and by_name["lm_head"] == "tied-out"


# ---------------------------------------------------------------- verdicts on real models


def test_mlp_under_mup_passes_and_sp_fails_against_mup():
    trained = []
    mup = coord_check(user_models.mlp, [64, 128, 256, 512], spec=str(SPECS / "mup_table8.mup"),
                      optimizer="adam", on_run=lambda: trained.append(1), **FAST)
    assert mup.ok, mup.render()
    seeds = FAST.get("seeds", 3)
    assert len(trained) == 4 * (seeds if isinstance(seeds, int) else len(seeds))  # the progress bar's unit: one network
    assert {r.role for r in mup.rows} >= {"input", "hidden", "output", "features"}
    sp = coord_check(user_models.mlp, [64, 128, 256, 512], spec=str(SPECS / "sp.mup"), expect="muP",
                     optimizer="adam", **FAST)
    assert not sp.ok
    text = sp.render()
    failed = {(r.role, r.quantity) for r in sp.rows if not r.agrees}
    assert ("hidden", "own") in failed and ("hidden", "upd") in failed
    hidden_own = next(r for r in sp.rows if (r.role, r.quantity) == ("hidden", "own"))
    assert hidden_own.measured == pytest.approx(1.0, abs=0.2)  # SP + Adam: ΔW·x grows like n
    assert "2 +" in text and "(predicted +0.00)" in text  # names the failing layer and the gap
    assert "against `mup_table8`'s predictions" in text  # the class muP is the bundled Table 8 spec


def test_gpt_with_sqrt_attention_fails_mup_on_the_logits_only():
    """The user's GPT parametrized by μP Table 8 but keeping 1/sqrt(d_head)
    attention: every weight scales as μP says, the attention logits do not."""
    result = coord_check(user_models.gpt_untied, [64, 128, 256], spec=str(SPECS / "mup_table8.mup"),
                         make_input=user_models.tokens, optimizer="adam", **FAST)
    failed = {r.role for r in result.rows if not r.agrees}
    assert failed == {"logits"}, result.render()
    fixed = coord_check(user_models.gpt_mup_attention, [64, 128, 256], spec=str(SPECS / "mup_table8.mup"),
                        make_input=user_models.tokens, optimizer="adam", **FAST)
    assert fixed.ok, fixed.render()


def test_tied_gpt_passes_mup_and_its_readout_is_measured_as_tied_output():
    """A readout tied to the token embedding: its output at init is Θ(1)
    (the self-logit: the stream still carries the token's embedding, n
    aligned terms times μP's 1/n), not the CLT's n^-1/2; a readout without
    the 1/n multiplier would grow like n."""
    result = coord_check(user_models.gpt_tied_mup_attention, [128, 256, 512], spec=str(SPECS / "mup_table8.mup"),
                         make_input=user_models.tokens, optimizer="adam", **FAST)
    assert result.ok, result.render()
    output = next(r for r in result.rows if (r.role, r.quantity) == ("tied-out", "act"))
    assert {"lm_head", "[output]"} == {s.site for s in output.sites} and output.predicted == 0.0


# ---------------------------------------------------------------- the command


def test_cli_passes_json_and_plot(tmp_path):
    out = mupspec("coord-check", "specs/mup_table8.mup", "--model", f"{MODELS}:mlp", "--widths", "64,128,256,512",
                  "--steps", "1", "--seeds", "2", "--format", "json", "--plot", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] and data["rows"] and all(r["agrees"] for r in data["rows"])
    assert Path(data["figures"][0]).stat().st_size > 10_000


def test_cli_exit_1_names_the_failing_layers(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = main(capsys, "coord-check", "specs/sp.mup", "--model", f"{MODELS}:mlp", "--widths",
                          "64,128,256,512", "--steps", "1", "--seeds", "2", "--expect", "MUP")
    assert code == 1, out + err
    assert "FAIL" in out and "hidden own-update term" in out


@pytest.mark.parametrize("args, message", [
    (["--model", f"{MODELS}:not_a_module"], "not_a_module(width=64) returned list, not a torch.nn.Module"),
    (["--model", f"{MODELS}:fails_at_large_width"], "fails_at_large_width(width=512) failed: RuntimeError"),
    (["--model", f"{MODELS}:nope"], "defines no function `nope`"),
    (["--model", "missing.py:f"], "no such file missing.py"),
    (["--model", f"{MODELS}:mlp", "--widths", "64,32,128"], "strictly increasing"),
    (["--model", f"{MODELS}:mlp", "--widths", "64,128"], "at least 3 widths"),
    (["--model", f"{MODELS}:gpt", "--input", f"{MODELS}:mlp"], "input function failed"),
])
def test_cli_bad_input_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = main(capsys, "coord-check", "specs/mup_table8.mup", *args, "--steps", "1", "--seeds", "1")
    assert code == 2, out + err
    assert message in err
    assert "Traceback" not in err


def test_forward_failing_at_a_width_names_it():
    def bad_input():
        return torch.randn(2, 3)  # the MLP wants 16 features
    with pytest.raises(coord.MupError, match=r"mlp\(width=64\): the forward/backward pass failed"):
        coord_check(user_models.mlp, [64, 128, 256], spec=str(SPECS / "mup_table8.mup"), make_input=bad_input,
                    steps=1, seeds=1)


# ---------------------------------------------------------------- mupspec.testing and the built-in MLP


def test_assert_coord_check_on_the_built_in_mlp_factory():
    from mupspec.empirical.models import mlp_factory
    from mupspec.testing import assert_coord_check

    result = assert_coord_check(mlp_factory(depth=3), SPECS / "mup_table8.mup", optimizer="sgd", **FAST)
    assert result.ok and len(result.rows) >= 8
    with pytest.raises(AssertionError, match="hidden own-update term"):
        assert_coord_check(mlp_factory(depth=3), str(SPECS / "sp.mup"), expect=str(SPECS / "mup_table8.mup"),
                           optimizer="adam", **FAST)


def test_package_api_is_lazy():
    import mupspec

    assert mupspec.coord_check is coord_check
    assert callable(mupspec.audit)
    code = "import mupspec, sys; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


class QK(torch.nn.Module):
    """q, k = one Linear's halves; forward returns attend(q, k)."""

    def __init__(self, attend):
        super().__init__()
        self.qk, self.attend = torch.nn.Linear(8, 16, bias=False), attend

    def forward(self, x):
        return self.attend(*self.qk(x).split(8, dim=-1))

    def causal_logits(self, x, scale=0.125):
        """q.k * scale on the entries a causal mask keeps, as recorded."""
        q, k = self.qk(x).detach().split(8, dim=-1)
        t = x.shape[-2]
        return (q @ k.transpose(-2, -1) * scale).masked_select(torch.ones(t, t, dtype=torch.bool).tril())


def record_first_step(model, x) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    return train_and_record(Run(model, opt, (x,), {}, None, {}, module_sites(model, {})), 1, ("act",), seed=0)[0]


def test_logits_through_the_generated_attention_helper_are_recorded():
    from mupspec.codegen import load_module

    P = load_module(load_spec(SPECS / "mup_table8.mup"), "mup_table8.mup")
    torch.manual_seed(0)
    model, x = QK(lambda q, k: P.attention(q, k, k, 0.125, causal=True)).double(), torch.randn(2, 5, 8).double()
    values = record_first_step(model, x)
    assert values[("attention[0]", "act")] == pytest.approx(coord.rms(model.causal_logits(x)), rel=1e-12)
    assert ("attention[1]", "act") not in values  # the helper's own torch.softmax is not a second record
    assert P.attention.__name__ == "attention"  # put back


def test_hand_written_attention_logits_are_recorded_in_every_softmax_spelling():
    """q @ k^T * scale, causally masked, then torch.softmax, F.softmax or
    Tensor.softmax: each is one logit record (the entries attention uses);
    a softmax over a non-square tensor (a classifier's) is not."""
    import torch.nn.functional as F

    spellings = (lambda a: torch.softmax(a, -1), lambda a: F.softmax(a, dim=-1), lambda a: a.softmax(dim=-1))
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)

    def attend(q, k):
        att = (q @ k.transpose(-2, -1) * 0.125).masked_fill(future, float("-inf"))
        classes = F.softmax(q[:, 0, :3], dim=-1)  # (batch, 3): no attention
        return sum(softmax(att) @ k for softmax in spellings) + classes.sum()

    torch.manual_seed(0)
    model, x = QK(attend).double(), torch.randn(2, 5, 8).double()
    originals = (torch.softmax, F.softmax, torch.Tensor.softmax)
    values = record_first_step(model, x)
    recorded = sorted(site for site, _ in values if site.startswith("attention["))
    assert recorded == ["attention[0]", "attention[1]", "attention[2]"]
    for site in recorded:
        assert values[(site, "act")] == pytest.approx(coord.rms(model.causal_logits(x)), rel=1e-12)
    assert (torch.softmax, F.softmax, torch.Tensor.softmax) == originals  # put back
    assert "softmax" not in vars(torch.Tensor)  # uncovered, not shadowed


@pytest.mark.parametrize("fill", [float("-inf"), torch.finfo(torch.float64).min, -1e4])
def test_hand_written_attention_mask_fills_are_not_logits(fill):
    """Whatever a causal mask writes (-inf, finfo.min, HF's -1e4), only the
    entries attention uses are measured."""
    torch.manual_seed(0)
    att = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    keep = torch.ones(6, 6, dtype=torch.bool).tril()
    recorder = Recorder(torch.nn.Linear(1, 1), [], ("act",))
    recorder.softmax(torch.softmax)(att.masked_fill(~keep, fill), -1)
    assert recorder.values[("attention[0]", "act")] == pytest.approx(coord.rms(att.masked_select(keep)), rel=1e-12)
    recorder.softmax(torch.softmax)(att[..., :5], -1)  # not square: no attention
    recorder.softmax(torch.softmax)(att, 1)  # not over the last axis
    assert list(recorder.values) == [("attention[0]", "act")]


def test_gpt_with_hand_written_attention_sp_and_mup_logits_told_apart():
    """nanoGPT-style attention by hand: with 1/sqrt(d_head) the logits fail
    μP's prediction (and nothing else does); with 1/d_head they pass."""
    sp = coord_check(user_models.hand_attention_gpt, [64, 128, 256], spec=str(SPECS / "mup_table8.mup"),
                     make_input=user_models.tokens, optimizer="adam", **FAST)
    logit_rows = [r for r in sp.rows if r.role == "logits"]
    assert {s.site for r in logit_rows for s in r.sites} == {f"attention[{i}]" for i in range(user_models.LAYERS)}
    assert {r.role for r in sp.rows if not r.agrees} == {"logits"}, sp.render()
    act = next(r for r in logit_rows if r.quantity == "act")
    assert act.measured == pytest.approx(0.0, abs=0.15)  # q.k/sqrt(d_head): Θ(1), μP predicts n^-1/2
    mup = coord_check(user_models.hand_attention_gpt_mup, [64, 128, 256], spec=str(SPECS / "mup_table8.mup"),
                      make_input=user_models.tokens, optimizer="adam", **FAST)
    assert mup.ok, mup.render()
    assert any(r.role == "logits" for r in mup.rows)

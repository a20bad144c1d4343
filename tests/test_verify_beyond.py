"""`verify` on the specs issue 13 found it wrong on: a zero-initialized
readout (exact zeros are not failures), a spec without a bias block (no
traceback), and a report that answers the μP question before anything else."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mupspec.commands import verify
from mupspec.empirical.fit import Fit
from mupspec.resolve import load_spec, parse_and_resolve

SPECS = Path(__file__).resolve().parent.parent / "specs"
NO_BIAS = """parametrization nb
input {
  lr.adam = 1
}
hidden {
  lr.adam = 1/fan_in
}
output {
  init.var = 1/fan_in^2
  lr.adam = 1/fan_in
}
"""


def zero_readout(tmp_path: Path):
    (tmp_path / "mup_table3.mup").write_text((SPECS / "mup_table3.mup").read_text())
    path = tmp_path / "z.mup"
    path.write_text("parametrization z extends mup_table3\noutput {\n  init.var = 0\n}\n")
    return load_spec(path)


def nan_fit(opt: str, step: int, cls: str, quantity: str) -> Fit:
    return Fit(opt, step, cls, quantity, math.nan, math.inf, 3, (math.nan,) * 3)


def test_exact_zeros_of_a_zero_readout_agree_with_check(tmp_path):
    spec = zero_readout(tmp_path)
    keys = [("adam", 0, "output", "act"), ("adam", 1, "hidden", "own"), ("adam", 2, "output", "prop")]
    fits = {k: nan_fit(*k) for k in keys}
    preds = {"adam": verify.predictions(spec, "adam")}
    assert preds["adam"][("act", "output")] == -math.inf  # check: the output starts at exactly 0
    rows = verify.compare(fits, preds, 0.15, zeros=frozenset(keys), zero_readout=True)
    assert len(rows) == 3 and all(r.agrees and r.zero for r in rows)
    # without a zero readout, a hidden layer that does not move is a failure
    rows = verify.compare(fits, preds, 0.15, zeros=frozenset(keys), zero_readout=False)
    assert [r.agrees for r in rows] == [True, False, False]


def test_a_zero_readout_is_not_frozen_at_a_zero_scale(tmp_path):
    # the first steps' prediction holds W_out at its init scale; a zero readout has none
    preds = verify.predictions(zero_readout(tmp_path), "sgd")
    assert preds[("own", "hidden")] == 0 and preds[("delta", "hidden")] == 0


def test_verify_without_a_bias_block_builds_networks_without_biases():
    spec = parse_and_resolve(NO_BIAS, "nb.mup")
    rows, samples, _, _ = verify.verify_spec(spec, widths=(32, 64), depths=(3,), seeds=1, steps=1,
                                             optimizers=("adam",))
    assert rows and {s.cls for s in samples} >= {"input", "hidden", "output"}
    assert "bias" not in {s.cls for s in samples}


def test_the_report_answers_the_mup_question_first_and_says_what_it_compared():
    sp = load_spec(SPECS / "sp.mup")
    first, compared = verify.mup_answer(sp, None).splitlines()
    assert first.startswith("is `sp` μP? check: NO")
    assert "`sp`'s own predictions" in compared and "--expect mup" in compared
    mup = load_spec(SPECS / "mup_table8.mup")
    first, compared = verify.mup_answer(sp, mup).splitlines()
    assert "`mup_table8`'s predictions" in compared


@pytest.mark.slow
def test_a_zero_readout_spec_verifies_without_spurious_failures(tmp_path):
    rows, *_ = verify.verify_spec(zero_readout(tmp_path), widths=(64, 256, 1024), depths=(3,), seeds=2,
                                  steps=2, optimizers=("adam",))
    zeros = [r for r in rows if r.zero]
    assert zeros and all(r.agrees for r in zeros)
    assert not any(r.quantity == "act" and r.cls == "output" and not r.agrees for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name, family", [("mup_lion", "lion"), ("mup_adafactor", "adafactor"), ("mup_muon", "muon")])
def test_verify_agrees_with_check_on_the_new_families(name, family):
    rows, *_ = verify.verify_spec(load_spec(SPECS / f"{name}.mup"), widths=(64, 256, 1024), depths=(3,), seeds=3,
                                  steps=1, optimizers=(family,))
    assert rows and all(r.agrees for r in rows), [(r.cls, r.quantity, r.measured) for r in rows if not r.agrees]

"""The grad-ratio experiment: the original experiment's models, and what the doc claims."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from mupspec.empirical import gradratio
from mupspec.empirical.fit import slope
from mupspec.resolve import load_spec

ROOT = Path(__file__).resolve().parents[1]


def _rows(name, width, depth, spectral=False, seed=0):
    spec = load_spec(ROOT / "specs" / f"{name}.mup")
    return gradratio.one_pass(spec, name, width, depth, seed, gradratio.seed_input(), 1, spectral)


def test_seed_mup_mlp_is_sp_to_the_last_bit():
    """The original experiment's first attempt saw identical numbers: its muP_MLP is SP."""
    for width, depth in ((64, 2), (256, 8)):
        sp, seed = _rows("sp", width, depth), _rows("seed_mlp", width, depth)
        assert [r["ratio_fro"] for r in sp] == [r["ratio_fro"] for r in seed]


def test_raw_ratio_moves_between_equivalent_tables_but_spectral_update_does_not():
    widths = (64, 128, 512)
    t3 = [_rows("mup_table3", w, 2, spectral=True) for w in widths]
    t8 = [_rows("mup_table8", w, 2, spectral=True) for w in widths]
    out3 = [rows[-1] for rows in t3]
    out8 = [rows[-1] for rows in t8]
    # the raw Frobenius ratio of the output layer scales differently ...
    k3 = slope(widths, [r["ratio_fro"] for r in out3])
    k8 = slope(widths, [r["ratio_fro"] for r in out8])
    assert abs(k3 - k8) > 1.5
    # ... while the LR-scaled update of every layer is the same number
    for rows3, rows8 in zip(t3, t8):
        for a, b in zip(rows3, rows8):
            assert a["upd_sgd_spec"] == pytest.approx(b["upd_sgd_spec"], rel=1e-3)
            assert a["upd_adam_spec"] == pytest.approx(b["upd_adam_spec"], rel=1e-3)


def test_experiment_writes_heatmap_csv_and_figures(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "grad-ratio", "--out", str(tmp_path),
                             "--widths", "64,128,256", "--depths", "2,4", "--seeds", "2"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert {"stability_heatmap.png", "grad_ratio.csv", "slopes.csv", "ratio_vs_width.png", "depth_sp.png"} <= names
    with open(tmp_path / "grad_ratio.csv") as f:
        rows = list(csv.DictReader(f))
    seed_part = [r for r in rows if r["spec"] in ("sp", "seed_mlp") and r["seed"] == "0" and r["depth"] in ("2", "4")]
    # seed part: 2 specs x 3 widths x 2 depths x (depth + 1) weights; the real part adds its own rows
    assert len(seed_part) >= 2 * 3 * (3 + 5)
    assert "max rel. diff" in result.stdout

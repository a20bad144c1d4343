"""`mupspec experiment spiral`: the optimum / shift estimators on known curves,
and (slow) the --quick variant end to end."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mupspec.empirical.spiral import QUICK, _argmin_log_lr, _optimum, _shift


def test_parabola_refines_the_grid_minimum():
    log_lrs = np.arange(-4, 0.01, 1 / 3)
    curve = (log_lrs - (-2.1)) ** 2          # true optimum between grid points
    best, edge = _argmin_log_lr(curve, log_lrs)
    assert best == pytest.approx(-2.1, abs=1e-9) and not edge
    best, edge = _argmin_log_lr(log_lrs.copy(), log_lrs)   # increasing: optimum on the edge
    assert edge and best == log_lrs[0]
    curve[5] = np.inf                         # a diverged LR never wins
    assert math.isfinite(_argmin_log_lr(curve, log_lrs)[0])


def test_shift_per_doubling_recovers_a_known_scaling():
    """Optimal LR ~ width^-1 (what SP with Adam predicts) is a shift of -1 per doubling."""
    rng = np.random.default_rng(0)
    log_lrs = np.arange(-5, 0.01, 1 / 3)
    widths = [64, 128, 256, 512]
    optima = []
    for w in widths:
        centre = math.log10(0.5 / w)
        table = np.stack([(log_lrs - centre) ** 2 + rng.normal(0, 0.01, len(log_lrs)) for _ in range(3)], 1)
        optima.append(_optimum(table, log_lrs, rng))
    shift = _shift(widths, optima)
    assert shift["per_doubling"] == pytest.approx(-1.0, abs=0.05)
    assert shift["lo"] <= shift["per_doubling"] <= shift["hi"]


def test_bad_options_exit_2_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "spiral", "--part", "nope",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--part" in out.stderr


@pytest.mark.slow
def test_quick_variant_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "spiral", "--quick",
                          "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["width"]["transfer"]) == {"SP", "muP"}
    for name in ("spiral_data", "width_fixed_lr", "width_exponents", "width_transfer",
                 "depth_fixed_lr", "depth_exponents", "depth_transfer"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    runs = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(runs) - 1 == len(list((tmp_path / "runs").glob("*/*.json")))
    # resuming trains nothing
    again = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "spiral", "--quick",
                            "--out", str(tmp_path), "--no-progress", "--part", "width"],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "trained 0 runs" in again.stdout
    assert QUICK.steps == summary["settings"]["train"]["steps"]

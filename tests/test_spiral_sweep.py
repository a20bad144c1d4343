"""Resumable sweeps: interrupted sweeps lose nothing finished and redo nothing,
divergence is recorded, writes are atomic, settings are never mixed."""

import io
import json
import math
import os

import pytest

from mupspec.empirical.data import SpiralConfig
from mupspec.empirical.engine import TrainConfig
from mupspec.atomic import is_temporary, write_json
from mupspec.empirical.sweep import Cell, Sweep, SweepSettings
from mupspec.progress import Progress
from mupspec.errors import MupError

SETTINGS = SweepSettings(data=SpiralConfig(points_per_class=60),
                         train=TrainConfig(steps=15, batch=8, log_every=5), base_width=16)
CELLS = [Cell("sp", "mlp", 16, 3, (1e-3, 1e-2), (0, 1)),
         Cell("mup_table8", "mlp", 32, 3, (1e-3, 1e-2), (0, 1))]


class Interrupt(Exception):
    pass


def _snapshot(sweep, cell):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes())
            for p in (sweep.out / "runs" / cell.key).glob("*.json")}


def test_interrupted_sweep_resumes_without_redoing_or_losing(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)

    def stop_after_first(cell):
        if cell is CELLS[0]:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweep.run(CELLS, progress=False, after_cell=stop_after_first)
    first = _snapshot(sweep, CELLS[0])
    assert len(first) == 4 and _snapshot(sweep, CELLS[1]) == {}

    again = Sweep(tmp_path, SETTINGS)
    assert again.run(CELLS, progress=False) == 4          # only the second cell trains
    assert _snapshot(again, CELLS[0]) == first            # finished runs untouched
    assert len(_snapshot(again, CELLS[1])) == 4
    assert again.run(CELLS, progress=False) == 0          # everything done: nothing trains

    # a cell with one run lost retrains exactly that run, with the same result
    lost = again.run_path(CELLS[1], 1e-2, 1)
    before = json.loads(lost.read_text())
    lost.unlink()
    assert again.run(CELLS, progress=False) == 1
    after = json.loads(lost.read_text())
    assert after["final"]["val_loss"] == pytest.approx(before["final"]["val_loss"], rel=1e-5)
    assert not [p for p in tmp_path.rglob(".*") if is_temporary(p)]            # no temporary files left behind
    # every run says what computed it (rounding-level changes move results)
    assert set(after["software"]) == {"mupspec", "torch", "matmul"}


def test_diverged_run_is_saved_and_sweep_goes_on(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)
    cells = [Cell("sp", "mlp", 16, 3, (1e-2, 1e12), (0,)), CELLS[1]]
    assert sweep.run(cells, progress=False) == 6
    runs = sweep.load(cells[0])
    assert [r["diverged"] for r in runs] == [False, True]
    assert runs[1]["final"] == {} and isinstance(runs[1]["diverged_step"], int)
    assert math.isfinite(runs[0]["final"]["val_loss"])
    assert len(sweep.load(CELLS[1])) == 4


def test_other_settings_are_refused(tmp_path):
    Sweep(tmp_path, SETTINGS)
    other = SweepSettings(data=SETTINGS.data, train=TrainConfig(steps=16, batch=8), base_width=16)
    with pytest.raises(MupError, match="other settings"):
        Sweep(tmp_path, other)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(ValueError):
        write_json(target, {"x": float("nan")})   # NaN is not JSON: the write fails
    assert not target.exists() and not list(tmp_path.iterdir())
    write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_reports_counts():
    stream = Terminal()  # the bar is drawn on a terminal only (tests/test_output.py)
    bar = Progress(total=10, done=4, stream=stream)
    bar.cell("sp-mlp-w64-d4", 500)
    bar.on_step(250)
    bar.finished(3)
    text = stream.getvalue()
    assert "4/10" in text and "7/10" in text and "sp-mlp-w64-d4" in text


def test_store_files_get_the_usual_permissions_not_mkstemps(tmp_path):
    # mkstemp makes its temporary files 0600; a results folder others read needs 0666 minus the umask
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "runs" / "c" / "r.json", {"x": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "runs" / "c" / "r.json").stat().st_mode & 0o777 == 0o644

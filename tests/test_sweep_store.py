"""The results store, hardened: damaged run files are computed again, a damaged
sweep.json is a clear error, one writer per folder (and no stale lock), finite
blow-ups count as diverged, a failing cell is recorded and the sweep goes on."""

import json
import os
import signal
import subprocess
import sys

import pytest

from mupspec.empirical.data import SpiralConfig
from mupspec.empirical.engine import TrainConfig
from mupspec.empirical.runner import Report, run_sweep
from mupspec.empirical.sweep import DIVERGENCE_FACTOR, Cell, Sweep, SweepSettings, mark_divergence
from mupspec.errors import MupError

SETTINGS = SweepSettings(data=SpiralConfig(points_per_class=60),
                         train=TrainConfig(steps=15, batch=8, log_every=5), base_width=16)
CELL = Cell("sp", "mlp", 16, 3, (1e-3, 1e-2), (0, 1))
TOO_BIG = Cell("sp", "mlp", 10 ** 7, 3, (1e-2,), (0,))   # 4e14 bytes of weights: no worker can allocate it


def _files(sweep):
    return {p.relative_to(sweep.out).as_posix(): p.read_bytes() for p in sorted((sweep.out / "runs").rglob("*.json"))}


def test_zero_byte_and_truncated_runs_are_computed_again(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)
    assert run_sweep(sweep, [CELL], threads=1, progress=False).trained == 4
    before = _files(sweep)
    empty, cut = sweep.run_path(CELL, 1e-3, 0), sweep.run_path(CELL, 1e-2, 1)
    empty.write_bytes(b"")
    cut.write_bytes(before[cut.relative_to(tmp_path).as_posix()][:100])
    assert sorted(sweep.missing(CELL)) == [(1e-3, 0), (1e-2, 1)]
    assert sweep.load(CELL) and len(sweep.load(CELL)) == 2          # readers skip them too
    # exactly the damaged runs are computed; same task shape, so the same bytes as before
    assert run_sweep(sweep, [CELL], threads=1, progress=False).trained == 2
    assert _files(sweep) == before


def test_truncated_sweep_json_is_a_clear_error(tmp_path):
    Sweep(tmp_path, SETTINGS)
    path = tmp_path / "sweep.json"
    path.write_text(path.read_text()[:20])
    with pytest.raises(MupError, match="truncated") as err:
        Sweep(tmp_path, SETTINGS)
    assert "new --out" in err.value.diagnostics[0].hint


def test_truncated_sweep_json_exits_2_from_the_command(tmp_path):
    (tmp_path / "sweep.json").write_text('{"data": {"cla')
    out = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "spiral", "--quick",
                          "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "truncated" in out.stderr and "new --out" in out.stderr


def test_a_second_writer_is_refused_with_a_clear_message(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)
    with sweep.lock():
        with pytest.raises(MupError, match=f"being written by another sweep \\(pid {os.getpid()}"):
            run_sweep(Sweep(tmp_path, SETTINGS), [CELL], progress=False)
    assert not list((tmp_path).glob("runs/*/*.json"))              # the refused sweep trained nothing


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mupspec.empirical.sweep import Sweep\n"
        f"with Sweep({str(tmp_path)!r}).lock():\n print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MupError, match=f"pid {holder.pid}"):
            with Sweep(tmp_path).lock():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Sweep(tmp_path).lock():        # the kernel released it with the process
        pass


def _record(losses, final=2.0):
    return {"lr": 1.0, "seed": 0, "diverged": False, "diverged_step": None,
            "final": {"train_loss": final, "val_loss": final, "val_acc": 0.3},
            "curves": {"step": [0, 5, 10], "train_loss": losses}}


def test_a_finite_blow_up_counts_as_diverged():
    calm = _record([1.1, 0.9, 0.8], final=0.8)
    assert mark_divergence(calm) is calm
    big = 1.1 * DIVERGENCE_FACTOR * 1.5
    blown = mark_divergence(_record([1.1, big, 3.0], final=3.0))
    assert blown["diverged"] and blown["diverged_step"] == 5 and blown["final"] == {}
    assert "initial loss 1.1" in blown["diverged_reason"]
    late = mark_divergence(_record([1.1, 2.0, 3.0], final=big))    # only the final evaluation blew up
    assert late["diverged"] and late["diverged_step"] == 10
    below = _record([1.1, 1.1 * DIVERGENCE_FACTOR * 0.9, 3.0])     # large but inside the bound
    assert not mark_divergence(below)["diverged"]


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)
    report = run_sweep(sweep, [TOO_BIG, CELL], threads=1, progress=False)
    assert isinstance(report, Report) and report.trained == 4 and report.failed_runs == 1
    [error] = sweep.errors()
    assert error["key"] == TOO_BIG.key and error["runs"] == [[1e-2, 0]]
    assert "can't allocate memory" in error["error"]
    assert len(sweep.load(CELL)) == 4
    # a rerun retries only the failed cell (and records it again)
    again = run_sweep(sweep, [TOO_BIG, CELL], threads=1, progress=False)
    assert again.trained == 0 and again.failed_runs == 1


def test_an_unknown_spec_fails_its_cell_alone(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)
    report = run_sweep(sweep, [Cell("no_such_spec", "mlp", 16, 3, (1e-3,), (0,)), CELL], threads=1,
                       progress=False)
    assert report.trained == 4 and [f["cell"] for f in report.failed] == ["no_such_spec-mlp-w16-d3"]


def test_backend_ray_without_ray_says_how_to_install(tmp_path):
    # `import ray` fails as it does where the extra is not installed
    code = ("import sys; sys.modules['ray'] = None\n"
            "from mupspec.cli import main\n"
            f"sys.exit(main(['experiment', 'spiral', '--quick', '--backend', 'ray', '--out', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert 'pip install "mupspec[ray]"' in out.stderr
    assert not (tmp_path / "runs").exists()


def test_partial_writes_of_a_killed_writer_are_not_runs(tmp_path):
    sweep = Sweep(tmp_path, SETTINGS)
    run_sweep(sweep, [CELL], threads=1, progress=False)
    leftover = sweep.run_path(CELL, 1e-3, 0).with_name(".lr1.000000e-03_s0.json.k1ll3d.tmp")
    leftover.write_text('{"lr": 0.001, "seed": 0, "diver')     # what os.replace never got to rename
    (sweep.run_path(CELL, 1e-2, 0)).write_text("")
    assert sorted((r["lr"], r["seed"]) for _, r in sweep.all_runs()) == [(1e-3, 0), (1e-3, 1), (1e-2, 1)]  # neither the leftover nor the damaged file
    with sweep.lock():                                           # the next writer clears the leftovers
        assert not leftover.exists()


def test_cells_sharing_a_folder_are_all_computed(tmp_path):
    # one shape, its seeds as separate cells (e.g. to spread them over workers): one folder
    cells = [Cell("sp", "mlp", 16, 3, (1e-3, 1e-2), (seed,)) for seed in (0, 1)]
    sweep = Sweep(tmp_path, SETTINGS)
    assert run_sweep(sweep, cells, threads=1, progress=False).trained == 4
    assert sweep.missing(CELL) == [] and len(sweep.load(CELL)) == 4

"""The Ray backend on a real local cluster (started by these tests on 127.0.0.1,
stopped after them): the same bytes as the local backend, a worker killed by
its PID mid-run, a driver killed mid-sweep, a cell that raises; verify,
coord-check (the user's model file shipped by value) and the Transformer study
giving on Ray what they give locally, with nothing of Ray's on stdout.

Every Ray driver runs in a subprocess with the cluster's environment, so this
process never holds Ray state."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mupspec.empirical.data import SpiralConfig
from mupspec.empirical.engine import TrainConfig
from mupspec.empirical.runner import LocalBackend, run_sweep
from mupspec.empirical.sweep import Cell, Sweep, SweepSettings

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
from tests.ray_cluster import LocalCluster  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = SweepSettings(data=SpiralConfig(points_per_class=60),
                         train=TrainConfig(steps=1000, batch=16, log_every=250), base_width=32)
# each cell a few seconds on one thread: long enough to be killed mid-run (150 steps, under a
# second since the engine got faster, finished before the kill on a quiet machine)
CELLS = [Cell(spec, "mlp", w, 4, (1e-3, 1e-2), (0, 1)) for w in (64, 128) for spec in ("sp", "mup_table8")]
TOO_BIG = Cell("sp", "mlp", 10 ** 7, 3, (1e-2,), (0,))     # 4e14 bytes of weights: raises in the worker

DRIVER = """
import json, sys
from mupspec.empirical.data import SpiralConfig
from mupspec.empirical.engine import TrainConfig
from mupspec.empirical.runner import RayBackend, run_sweep
from mupspec.empirical.sweep import Cell, Sweep, SweepSettings
out, address, cells = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
settings = SweepSettings(data=SpiralConfig(points_per_class=60),
                         train=TrainConfig(steps=1000, batch=16, log_every=250), base_width=32)
cells = [Cell(c[0], c[1], c[2], c[3], tuple(c[4]), tuple(c[5])) for c in cells]
report = run_sweep(Sweep(out, settings), cells, RayBackend(address), threads=1, progress=False)
print(json.dumps({"trained": report.trained, "failed": report.failed}))
"""


def _driver(cluster, out, cells) -> subprocess.Popen:
    arg = json.dumps([[c.spec, c.arch, c.width, c.depth, list(c.lrs), list(c.seeds)] for c in cells])
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(out), cluster.address, arg], cwd=ROOT,
                            env=cluster.env | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    # the driver's one line alone: Ray's notices (a worker died, ...) went to stderr, not stdout
    [line] = out.strip().splitlines()
    return json.loads(line)


def _runs(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "runs").glob("*/[!.]*.json"))}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(num_cpus=2) as c:
        yield c
    assert not c.processes(), "the cluster left processes behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The undisturbed sweep on the local backend, one thread per task as on the cluster."""
    out = tmp_path_factory.mktemp("local")
    report = run_sweep(Sweep(out, SETTINGS), CELLS + [TOO_BIG], LocalBackend(), threads=1, progress=False)
    assert report.trained == 16 and report.failed_runs == 1
    return _runs(out)


def _our_tasks() -> list:
    """Ray workers executing one of our tasks (Ray titles them `ray::<task name>`)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::mupspec "):
            found.append(p)
    return found


def test_worker_killed_mid_run_is_retried_with_identical_results(cluster, reference, tmp_path):
    driver = _driver(cluster, tmp_path, CELLS + [TOO_BIG])
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        running = [p for p in _our_tasks() if "w10000000" not in p.info["cmdline"][0]]
        if running:
            time.sleep(0.5)                          # mid-run: well inside a task of a few seconds
            try:
                running[0].send_signal(signal.SIGKILL)
                killed = running[0].info["cmdline"][0]
            except psutil.NoSuchProcess:             # it finished meanwhile: take the next one
                pass
        time.sleep(0.05)
    report = _finish(driver)
    assert killed, "no worker was caught running a task"
    # the killed task ran again; the cell that raises is recorded, the sweep went on
    assert report["trained"] == 16 and [f["cell"] for f in report["failed"]] == [TOO_BIG.key]
    assert "can't allocate memory" in report["failed"][0]["error"]
    assert json.loads((tmp_path / "errors" / f"{TOO_BIG.key}.json").read_text())["runs"] == [[1e-2, 0]]
    # and every run file is byte for byte the local backend's
    assert _runs(tmp_path) == reference


def test_driver_killed_mid_sweep_resumes_losing_and_redoing_nothing(cluster, reference, tmp_path):
    driver = _driver(cluster, tmp_path, CELLS)
    deadline = time.monotonic() + 300
    while not _runs(tmp_path) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    finished = {name: ((tmp_path / name).stat().st_mtime_ns, (tmp_path / name).read_bytes())
                for name in _runs(tmp_path)}
    assert 0 < len(finished) < 16, "the driver was not killed mid-sweep"
    partial = {name.split("/")[1] for name in finished}

    report = _finish(_driver(cluster, tmp_path, CELLS))     # the same command again
    assert report == {"trained": 16 - len(finished), "failed": []}
    for name, (mtime, data) in finished.items():           # finished runs untouched
        path = tmp_path / name
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data
    runs = _runs(tmp_path)
    assert runs.keys() == {k for k in reference if TOO_BIG.key not in k}
    # cells the killed driver had not started are computed exactly as undisturbed
    fresh = [k for k in runs if k.split("/")[1] not in partial]
    assert fresh and all(runs[k] == reference[k] for k in fresh)
    assert all(runs[k] == reference[k] for k in finished)


def test_verify_grid_on_ray_prints_what_local_prints(cluster):
    cmd = [sys.executable, "-m", "mupspec", "verify", "specs/mup_table3.mup", "--widths", "64,128",
           "--depths", "3", "--seeds", "2"]
    env = cluster.env | {"PYTHONPATH": str(ROOT)}
    local = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    ray = subprocess.run(cmd + ["--backend", "ray", "--address", cluster.address], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    # (two widths are too few for every fit to pass: the verdict itself does not matter here)
    assert ray.returncode == local.returncode and "Traceback" not in ray.stderr, ray.stderr
    drop_time = lambda text: [line for line in text.splitlines() if not line.startswith("(")]
    assert drop_time(ray.stdout) == drop_time(local.stdout) and "measured" in local.stdout


def _mupspec(cluster, args, ray=False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mupspec", *args] + (["--backend", "ray", "--address", cluster.address] if ray else [])
    return subprocess.run(cmd, cwd=ROOT, env=cluster.env | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)


def test_coord_check_on_ray_prints_the_same_json_as_local(cluster):
    # the factory lives in the user's file, which no worker can import: it travels by value
    args = ["coord-check", "specs/mup_table8.mup", "--model", "tests/data/user_models.py:gpt", "--widths",
            "32,64,128", "--seeds", "2", "--steps", "2", "--format", "json"]
    local, ray = _mupspec(cluster, args), _mupspec(cluster, args, ray=True)
    assert ray.returncode == local.returncode and "Traceback" not in ray.stderr, ray.stderr
    # stdout is the JSON alone, byte for byte local's: every measured value identical
    assert ray.stdout == local.stdout and json.loads(ray.stdout)["rows"]


def test_transformer_study_on_ray_gives_the_same_files_as_local(cluster, tmp_path):
    # one thread per task: the 2-CPU cluster trains two cells at once
    args = ["experiment", "transformer", "--quick", "--part", "depth", "--lrs", "1e-2", "--threads", "1",
            "--no-progress"]
    local = _mupspec(cluster, args + ["--out", str(tmp_path / "local")])
    ray = _mupspec(cluster, args + ["--out", str(tmp_path / "ray")], ray=True)
    assert local.returncode == ray.returncode == 0, ray.stderr
    [line] = ray.stdout.splitlines()                    # its one line: nothing of Ray's on stdout
    assert line.startswith("trained 8 runs in ")
    files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes()  # noqa: E731
                       for p in sorted(d.glob("runs/*/*.json")) + [d / "runs.csv", d / "optima.csv"]}
    local_files, ray_files = files(tmp_path / "local"), files(tmp_path / "ray")
    assert len(local_files) == 8 + 2 and ray_files == local_files


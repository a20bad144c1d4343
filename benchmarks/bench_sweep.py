"""The Ray backend against the local one, on an already running local Ray cluster
(started here with `ray start` on 127.0.0.1, its start-up timed separately):

A. a spiral grid (the default, FULL; --grid quick for the CI-sized one; --part to
   take one half), local backend vs Ray backend, both with --threads 2: total
   time of the sweep (Ray's includes connecting and starting its workers).
   Target: Ray within 10% of local.
B. CPU-bound cells as one-thread tasks: a 2-CPU cluster (2 workers) against a
   1-CPU cluster (1 worker), throughput in runs/s. Target: >= 1.7x.

Each measurement is one fresh driver process computing into a fresh folder;
the cases alternate (--repeat rounds) so that load drifts hit both. Also checks
that the Ray and local stores are byte-identical.

    .venv/bin/python benchmarks/bench_sweep.py [--grid full|quick] [--part all|width|depth] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.ray_cluster import LocalCluster  # noqa: E402

DRIVER = """
import json, sys, time
import torch
from mupspec.empirical import spiral
from mupspec.empirical.data import SpiralConfig
from mupspec.empirical.engine import TrainConfig
from mupspec.empirical.runner import make_backend, run_sweep
from mupspec.empirical.sweep import Cell, Sweep, SweepSettings
out, backend, address, grid, part, threads = sys.argv[1:7]
threads = int(threads)
torch.set_num_threads(threads)
g = spiral.QUICK if grid == "quick" else spiral.FULL
if part == "cpu":   # CPU-bound cells: plain MLPs of width 256, 13 LRs x 1 seed each
    cells = [Cell(spec, "mlp", 256, 4, g.lrs, (seed,)) for spec in ("sp", "mup_table8") for seed in (0, 1, 2, 3)]
else:
    cells = (spiral.width_cells(g) if part in ("all", "width") else []) + \\
            (spiral.depth_cells(g) if part in ("all", "depth") else [])
    cells = sorted(spiral._unique(cells), key=spiral._cost)
settings = SweepSettings(data=SpiralConfig(), train=TrainConfig(steps=g.steps, batch=g.batch),
                         base_width=g.base_width, base_depth=g.base_depth)
start = time.perf_counter()
report = run_sweep(Sweep(out, settings), cells, make_backend(backend, address), threads=threads, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "runs": report.trained, "failed": report.failed}))
"""


def drive(env, out: str, backend: str, address: str, grid: str, part: str, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRIVER, out, backend, address, grid, part, str(threads)],
                          cwd=ROOT, env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    if result is None or result["failed"]:
        raise SystemExit(f"driver failed:\n{proc.stderr[-3000:]}\n{result}")
    return result


def same_runs(a: Path, b: Path) -> bool:
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in sorted((d / "runs").glob("*/[!.]*.json"))}
    return files(a) == files(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=("full", "quick"), default="full")
    parser.add_argument("--part", choices=("all", "width", "depth"), default="all")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip", choices=("A", "B"), help="leave one measurement out")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(num_cpus=2) as two, LocalCluster(num_cpus=1) as one:
        print(f"cluster start-up (ray start, 2 CPUs): {two.startup_seconds:.1f} s; (1 CPU): {one.startup_seconds:.1f} s")
        if args.skip != "A":
            times = {"local": [], "ray": []}
            for r in range(args.repeat):
                for backend in ("local", "ray"):
                    res = drive(two.env, f"{tmp}/A{r}{backend}", backend, two.address, args.grid, args.part, 2)
                    times[backend].append(res["seconds"])
                    print(f"  A round {r}: {backend:5} {res['seconds']:7.1f} s  {res['runs']} runs")
            best = {k: min(v) for k, v in times.items()}
            ratio = best["ray"] / best["local"]
            print(f"A. spiral grid {args.grid}/{args.part}: local {best['local']:.1f} s, ray {best['ray']:.1f} s, "
                  f"ray/local {ratio:.3f} (target <= 1.10: {'ok' if ratio <= 1.10 else 'MISSED'}); "
                  f"identical run files: {same_runs(Path(f'{tmp}/A0local'), Path(f'{tmp}/A0ray'))}")
        if args.skip != "B":
            rate = {1: [], 2: []}
            for r in range(args.repeat):
                for workers, cluster in ((1, one), (2, two)):
                    # each cluster has its own auth token: its own environment
                    res = drive(cluster.env, f"{tmp}/B{r}w{workers}", "ray", cluster.address, args.grid, "cpu", 1)
                    rate[workers].append(res["runs"] / res["seconds"])
                    print(f"  B round {r}: {workers} worker(s) {res['seconds']:7.1f} s  {res['runs']} runs")
            best = {k: max(v) for k, v in rate.items()}
            speedup = best[2] / best[1]
            print(f"B. one-thread tasks: 1 worker {best[1]:.2f} runs/s, 2 workers {best[2]:.2f} runs/s, "
                  f"speed-up {speedup:.2f}x (target >= 1.7x: {'ok' if speedup >= 1.7 else 'MISSED'})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

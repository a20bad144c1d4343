"""Wall time of `mupspec check` in a fresh process, next to the floor
`python -c "import sympy"`, as ratios measured in the same run.

The floor, `check` on each bundled spec alone, and `check` on all of them in
one call are timed in interleaved rounds, so that machine load hits them
alike; the median of each is reported. Targets: every spec alone <= 1.5x the
floor (issues 11 and 13: Transformer specs and the new optimizer families
must not make `check` import what it does not need), all bundled specs in
one call <= 2.5x the floor (issue 3).

    .venv/bin/python benchmarks/bench_check.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.mup"))

FLOOR = "floor: python -c 'import sympy'"
ALL = f"check all {len(SPECS)} bundled specs"
COMMANDS = {FLOOR: [sys.executable, "-c", "import sympy"]} | {
    f"check {spec}": [sys.executable, "-m", "mupspec", "check", spec] for spec in SPECS} | {
    ALL: [sys.executable, "-m", "mupspec", "check", *SPECS]}


def target(name: str) -> float | None:
    return None if name == FLOOR else 2.5 if name == ALL else 1.5


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1 = "not μP", a verdict, not a failure
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for name, cmd in COMMANDS.items():  # warm the file cache once, untimed
        wall(cmd)
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    floor = medians[FLOOR]
    print(f"median of {args.rounds} interleaved rounds, {sys.executable}")
    for name, t in medians.items():
        goal = target(name)
        verdict = f"   target <= {goal}x: {'met' if t / floor <= goal else 'NOT met'}" if goal else ""
        print(f"{name:<46} {t * 1000:7.1f} ms   {t / floor:5.2f}x floor{verdict}")
    worst = max((n for n in medians if n not in (FLOOR, ALL)), key=medians.get)
    print(f"slowest single spec: {worst[len('check '):]}, {medians[worst] / floor:.2f}x floor")


if __name__ == "__main__":
    main()

"""Wall time of `mupspec check` in a fresh process, next to the floor
`python -c "import sympy"`, as ratios measured in the same run.

Four commands are timed in interleaved rounds (floor, one spec, a Transformer
spec with sub-roles, a tie and derived widths, all bundled specs in one call),
so that machine load hits them alike; the median of each is reported.
Targets (issues 3 and 11): one spec, and one Transformer spec, <= 1.5x the
floor; all bundled specs <= 2.5x the floor.

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

COMMANDS = {
    "floor: python -c 'import sympy'": [sys.executable, "-c", "import sympy"],
    "check specs/mup_table8.mup": [sys.executable, "-m", "mupspec", "check", "specs/mup_table8.mup"],
    "check specs/gpt_table8_tied.mup": [sys.executable, "-m", "mupspec", "check", "specs/gpt_table8_tied.mup"],
    "check specs/gpt_mup.mup": [sys.executable, "-m", "mupspec", "check", "specs/gpt_mup.mup"],
    f"check all {len(SPECS)} bundled specs": [sys.executable, "-m", "mupspec", "check", *SPECS],
}
TARGETS = {1: 1.5, 2: 1.5, 3: 1.5, 4: 2.5}


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
    floor = next(iter(medians.values()))
    print(f"median of {args.rounds} interleaved rounds, {sys.executable}")
    for i, (name, t) in enumerate(medians.items()):
        target = f"   target <= {TARGETS[i]}x: {'met' if t / floor <= TARGETS[i] else 'NOT met'}" if i in TARGETS else ""
        print(f"{name:<40} {t * 1000:7.1f} ms   {t / floor:5.2f}x floor{target}")


if __name__ == "__main__":
    main()

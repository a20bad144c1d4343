"""Wall time of `mupspec verify` on one spec (5 widths x 3 depths x 3 seeds,
SGD and Adam, the default grid) and of `mupspec experiment grad-ratio` (the
default grid), each run as the user runs it: a fresh process, measured side
by side in one run. Targets on the 2-core machine: verify <= 30 s,
grad-ratio <= 20 s.

    .venv/bin/python benchmarks/bench_verify.py [--spec specs/mup_table3.mup] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"verify": 30.0, "grad-ratio": 20.0}


def timed(args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mupspec", *args], cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/mup_table3.mup")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus: {os.cpu_count()}, load average before: {load:.2f}")
    with tempfile.TemporaryDirectory() as out:
        cases = {"verify": ["verify", args.spec],
                 "grad-ratio": ["experiment", "grad-ratio", "--out", out]}
        for name, cmd in cases.items():
            for _ in range(args.repeat):
                seconds, rc = timed(cmd)
                verdict = "ok" if seconds <= TARGETS[name] else "OVER TARGET"
                print(f"{name:10} {seconds:6.1f} s  (target <= {TARGETS[name]:.0f} s, {verdict}; exit {rc})"
                      f"   mupspec {' '.join(cmd)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

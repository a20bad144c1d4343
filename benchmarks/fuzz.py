"""A fuzzing campaign: N inputs through every mupspec command (tests/fuzzing.py).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/fuzz.py --inputs 2000 [--seed S] [--workers K] [--minutes M]

Inputs are drawn, in equal parts, from the grammar (hypothesis' from_lark),
the spec strategies (tests/strategies.py, printed), mutations of the
bundled specs and "wild" well-formed specs whose values are anything. Each
runs in-process through parse, fmt, check (3 formats), convert (4 forms),
equiv, table (2 formats) and codegen (the module compiled, whitelisted,
imported and its rules called). Prints inputs and runs per command with
their exit codes, failures by kind with one reproducer each, the slowest
(command, input) pairs and the wall time; exits 0 iff nothing failed.
`--workers K` splits the campaign over K processes (seeds S..S+K-1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


class _OutOfTime(BaseException):
    """Raised inside the hypothesis body when --minutes is spent: a
    BaseException, so hypothesis stops instead of shrinking."""


def campaign(inputs: int, seed: int, minutes: float | None = None) -> dict:
    """Run `inputs` inputs with hypothesis seeded by `seed` (or as many as
    `minutes` allow); a JSON-able tally."""
    import warnings

    from hypothesis import HealthCheck, Phase, given, settings, seed as hseed

    import fuzzing

    warnings.simplefilter("ignore")
    workdir = fuzzing.fresh_workdir(Path(tempfile.mkdtemp(prefix="mupspec_fuzz_")))
    fuzzing.warm_up(workdir)
    tally = fuzzing.Tally()

    @hseed(seed)
    @settings(max_examples=inputs, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzzing.inputs())
    def body(text):
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime
        fuzzing.run_input(text, workdir, tally)

    deadline = time.monotonic() + 60 * minutes if minutes else None
    try:
        body()
    except _OutOfTime:
        pass
    return {"inputs": tally.inputs, "runs": tally.runs, "modules": tally.modules,
            "failures": [f.__dict__ for f in tally.failures],
            "slowest": tally.top_slowest(10)}


def merge(parts: list[dict]) -> dict:
    total = {"inputs": 0, "runs": {}, "modules": 0, "failures": [], "slowest": []}
    for part in parts:
        total["inputs"] += part["inputs"]
        total["modules"] += part["modules"]
        total["failures"] += part["failures"]
        total["slowest"] += [tuple(s) for s in part["slowest"]]
        for command, codes in part["runs"].items():
            per = total["runs"].setdefault(command, {})
            for code, count in codes.items():
                per[int(code)] = per.get(int(code), 0) + count
    total["slowest"] = sorted(total["slowest"], reverse=True)[:10]
    return total


def report(total: dict, seconds: float) -> str:
    lines = [f"inputs: {total['inputs']}   command runs: {sum(sum(c.values()) for c in total['runs'].values())}"
             f"   generated modules compiled, checked, imported and called: {total['modules']}"
             f"   wall time: {seconds:.0f} s", "", "runs per command (exit code: count)"]
    for command, codes in total["runs"].items():
        lines.append(f"  {command:26} " + "  ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    kinds: dict[str, list] = {}
    for f in total["failures"]:
        kinds.setdefault(f["kind"], []).append(f)
    lines += ["", "failures by kind: " + (", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items())) or "none")]
    for kind, failures in sorted(kinds.items()):
        smallest = min(failures, key=lambda f: len(f["text"]))
        lines += [f"  {kind}: e.g. {smallest['command']} on {smallest['text']!r}",
                  "    " + smallest["detail"].strip().replace("\n", "\n    ")[-800:]]
    lines += ["", "slowest (CPU seconds, command, input):"]
    lines += [f"  {s:6.2f}  {c:24} {t[:90]!r}" for s, c, t in total["slowest"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--minutes", type=float, help="stop after this many minutes (the report covers the inputs run)")
    parser.add_argument("--json", metavar="FILE", help="also write the tally as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start = time.perf_counter()
    shares = [args.inputs // args.workers + (i < args.inputs % args.workers) for i in range(args.workers)]
    if args.workers == 1:
        parts = [campaign(args.inputs, args.seed, args.minutes)]
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            parts = list(pool.map(campaign, shares, [args.seed + i for i in range(args.workers)],
                                  [args.minutes] * args.workers))
    total = merge(parts)
    seconds = time.perf_counter() - start
    print(report(total, seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(total, indent=1, default=str), encoding="utf-8")
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Parse-and-check time at the resource limits (docs/reliability.md).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/limits.py [--scale 1.0]

Three specs, each timed through `parse_and_resolve` + `check_spec` (or up
to the diagnostics, for the one that is an error by construction):
  declarations  MAX_DECLARATIONS hyper declarations and a hidden block using them
  commented     the same, each with a comment line above it and a note after it
  depth         rules whose expressions are MAX_DEPTH levels deep
  rules         MAX_RULES rules (duplicates: every one past the first of a
                field is an error, reported with its position)
and each at a quarter of its size, so that the ratio shows whether time
grows linearly (a ratio near 4) or worse. `--scale` shrinks every size
(e.g. 0.1 for a quick run). Prints seconds; the figures go in docs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mupspec.check import check_spec  # noqa: E402
from mupspec.errors import MupError, render_all  # noqa: E402
from mupspec.parser import MAX_DECLARATIONS, MAX_DEPTH, MAX_RULES  # noqa: E402
from mupspec.resolve import parse_and_resolve  # noqa: E402


def declarations(k: int) -> str:
    hypers = "".join(f"hyper h{i} = {i % 97 + 1}/{i % 89 + 1}\n" for i in range(k - 1))
    return f"parametrization decls\nwidth n\n{hypers}hidden {{ mult = h1*h2/h3 }}\n"


def commented(k: int) -> str:
    """`declarations` with a comment above and a note after each one."""
    hypers = "".join(f"# h{i}\nhyper h{i} = {i % 97 + 1}/{i % 89 + 1}  # note\n" for i in range(k - 1))
    return f"parametrization decls\nwidth n\n{hypers}hidden {{ mult = h1*h2/h3 }}\n"


def deep(depth: int) -> str:
    # a sum of `depth` terms is an expression `depth` levels deep (left-associated)
    value = " + ".join(f"fan_in/{i + 1}" for i in range(depth))
    return f"parametrization deep\nhidden {{\n  init.var = 1/({value})\n  lr.adam = 1/({value})\n}}\n"


def rules(k: int) -> str:
    return "parametrization rules\nhidden {\n" + "  mult = 1\n" * k + "}\n"


def timed(text: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of this process, outcome): on a shared
    machine the CPU time is the figure that does not depend on the load."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        spec = parse_and_resolve(text, "limits.mup")
        check_spec(spec)
        outcome = "checked"
    except MupError as err:
        outcome = f"{len(err.diagnostics)} diagnostics"
        render_all(err, {"limits.mup": text}, color=False)
    return time.perf_counter() - start, time.process_time() - cpu, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    check_spec(parse_and_resolve("parametrization warm\nhidden { mult = 1 }\n"))  # imports, caches: once
    cases = [("declarations", declarations, MAX_DECLARATIONS), ("commented", commented, MAX_DECLARATIONS),
             ("depth", deep, MAX_DEPTH - 2),
             ("rules", rules, MAX_RULES)]
    print(f"{'case':13} {'size':>8} {'wall s':>8} {'CPU s':>8}  {'size/4':>8} {'CPU s':>8}  CPU ratio  outcome")
    for name, make, limit in cases:
        size = max(8, int(limit * args.scale))
        _, c_quarter, _ = timed(make(size // 4))
        t_full, c_full, outcome = timed(make(size))
        print(f"{name:13} {size:8} {t_full:8.2f} {c_full:8.2f}  {size // 4:8} {c_quarter:8.2f}  "
              f"{c_full / c_quarter:9.1f}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

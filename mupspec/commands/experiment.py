"""`mupspec experiment NAME ...`: the bundled experiments.

Each experiment module under `mupspec.empirical` defines `configure(parser)`
and `run(args) -> int`; only the chosen one is imported.
"""

from __future__ import annotations

import importlib
import importlib.util

EXPERIMENTS: dict[str, tuple[str, str]] = {
    "grad-ratio": ("mupspec.empirical.gradratio", "the original ||grad W||/||W|| experiment repeated, then done right"),
    "spiral": ("mupspec.empirical.spiral", "training on a 2-D spiral across widths, depths and LRs"),
    "transformer": ("mupspec.empirical.lm_study", "a byte-level GPT language model: LR transfer and coordinate "
                    "checks across width and depth, SP against muP and CompleteP"),
}


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="experiment", metavar="NAME", required=True)
    for name, (module, help) in EXPERIMENTS.items():
        if importlib.util.find_spec(module) is None:
            continue
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.set_defaults(_usage_of=cmd)  # usage errors show `mupspec experiment NAME`'s usage
        importlib.import_module(module).configure(cmd)


def run(args) -> int:
    return importlib.import_module(EXPERIMENTS[args.experiment][0]).run(args)


def on_interrupt(args) -> str:
    """What the CLI adds to "interrupted" after Ctrl-C."""
    if args.experiment in ("spiral", "transformer"):  # every finished run is saved; a rerun trains only the missing ones
        return f"finished runs are kept in {args.out}; run the same command again to resume"
    return ""

"""`mupspec table FILE [--format text|markdown|latex] [--invariants]`: a
spec as a Tensor Programs V style table."""

from __future__ import annotations

import sys

from mupspec.bundled import locate
from mupspec.commands._io import read_text
from mupspec.resolve import parse_and_resolve
from mupspec.table import FORMATS, build_table, render


def configure(parser) -> None:
    parser.add_argument("file", metavar="FILE", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument("--invariants", action="store_true",
                        help="add rows e_init, e_sgd, e_adam (width exponents that equivalent specs share)")
    parser.add_argument("--no-merge", action="store_true",
                        help="one column per class, even where classes agree (default: merge, as the paper does)")


def run(args) -> int:
    spec = parse_and_resolve(read_text(args.file), args.file)
    table = build_table(spec, invariants=args.invariants, merge=not args.no_merge)
    sys.stdout.write(render(table, args.format))
    return 0

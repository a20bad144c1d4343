"""`mupspec codegen FILE [-o OUT.py]`: emit the standalone PyTorch module for a spec."""

from __future__ import annotations

import sys

from mupspec.bundled import locate
from mupspec.codegen import generate
from mupspec.commands._io import check_output, write_atomic
from mupspec.resolve import load_spec
from mupspec.symbolic import validate_scales


def configure(parser) -> None:
    parser.add_argument("file", metavar="FILE", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("-o", "--output", metavar="OUT.py",
                        help="where to write the module (default: standard output)")


def run(args) -> int:
    if args.output is not None:
        check_output(args.output)
    spec = load_spec(args.file)
    validate_scales(spec)  # a negative, zero or non-real scale never reaches generated code
    source = generate(spec, args.file)
    if args.output is None:
        sys.stdout.write(source)
    else:
        write_atomic(args.output, source)
    return 0

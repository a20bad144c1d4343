"""`mupspec codegen FILE [-o OUT.py]`: emit the standalone PyTorch module for a spec."""

from __future__ import annotations

import sys

from mupspec.bundled import locate
from mupspec.codegen import generate
from mupspec.errors import Diagnostic, MupError
from mupspec.resolve import load_spec


def configure(parser) -> None:
    parser.add_argument("file", metavar="FILE", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("-o", "--output", metavar="OUT.py",
                        help="where to write the module (default: standard output)")


def run(args) -> int:
    source = generate(load_spec(args.file), args.file)
    if args.output is None:
        sys.stdout.write(source)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(source)
    except OSError as err:
        raise MupError(Diagnostic(f"cannot write {args.output}: {err.strerror}", hint="check the output path")) from None
    return 0

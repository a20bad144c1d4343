"""`mupspec fmt FILE... [--check]`: rewrite specs in canonical form."""

from __future__ import annotations

import sys

from mupspec.bundled import locate
from mupspec.commands._io import read_text, write_atomic
from mupspec.errors import Diagnostic, MupError
from mupspec.printer import format_spec
from mupspec.resolve import parse_as_written


def configure(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", type=locate, help=".mup specs or bundled spec names")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a file is not in canonical form")


def canonical_text(text: str, file: str) -> str:
    """The file in canonical form; refuses (MupError) a spec that does not
    resolve, so `fmt` never rewrites a broken file."""
    new = format_spec(parse_as_written(text, file))
    try:  # never write a file that does not parse back: that would lose the user's spec
        parse_as_written(new, file)
    except MupError as err:
        raise RuntimeError(f"fmt would write text that does not parse ({err}); {file} was left as it was") from None
    return new


def run(args) -> int:
    errors: list[MupError] = []
    changed = []
    for file in args.files:
        try:
            text = read_text(file)
            new = canonical_text(text, file)
        except MupError as err:
            errors.append(err)
            continue
        if new != text:
            changed.append(file)
            if not args.check:
                try:
                    write_atomic(file, new)  # a full disk or a kill never leaves half a spec
                except MupError as err:
                    errors.append(err)
                    changed.pop()
    for file in changed:
        print(f"{'would reformat' if args.check else 'reformatted'} {file}", file=sys.stderr)
    if errors:
        raise MupError([d for e in errors for d in e.diagnostics])
    return 1 if args.check and changed else 0

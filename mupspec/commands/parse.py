"""`mupspec parse FILE [--json] [--unresolved]`: show the IR."""

from __future__ import annotations

import json

from mupspec.bundled import locate
from mupspec.commands._io import read_text
from mupspec.printer import format_spec
from mupspec.resolve import parse_and_resolve, parse_as_written


def configure(parser) -> None:
    parser.add_argument("file", metavar="FILE", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("--json", action="store_true", help="print the IR as JSON (default: canonical text)")
    parser.add_argument("--unresolved", action="store_true",
                        help="do not merge the `extends` base (show the file as written)")


def run(args) -> int:
    text = read_text(args.file)
    spec = parse_as_written(text, args.file) if args.unresolved else parse_and_resolve(text, args.file)
    if args.json:
        print(json.dumps(as_json(spec), indent=2, ensure_ascii=False))
    else:
        print(format_spec(spec), end="")
    return 0


def as_json(node):
    """`node.model_dump(mode="json")`, without pydantic's serializer depth
    cap (about 250 levels), which an expression 1,000 levels deep exceeds."""
    from pydantic import BaseModel

    if isinstance(node, BaseModel):
        return {name: as_json(getattr(node, name)) for name in type(node).model_fields}
    if isinstance(node, (tuple, list)):
        return [as_json(item) for item in node]
    return node

"""`mupspec specs`: list the bundled specs by name, with their titles and sources."""

from __future__ import annotations

import json

from mupspec import bundled




def configure(parser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument("--path", action="store_true", help="print each spec's file path instead")


def run(args) -> int:
    rows = [(name, *bundled.describe(name), str(bundled.path(name))) for name in bundled.names()]
    if args.format == "json":
        print(json.dumps([{"name": n, "title": t, "source": s, "path": p} for n, t, s, p in rows], indent=2))
    elif args.path:
        print("\n".join(p for *_, p in rows))
    else:
        width = max(len(name) for name, *_ in rows)
        for name, title, source, _ in rows:
            print(f"{name:<{width}}  {title}")
            if source:
                print(f"{'':<{width}}    source: {source}")
    return 0

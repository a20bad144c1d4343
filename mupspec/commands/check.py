"""`mupspec check FILE... [--format text|json|markdown] [--expect CLASS] [--optimizer OPT]`.

Exit 0 when every spec satisfies the μP desiderata for every optimizer it
declares (or, with --expect, when every spec's classification matches CLASS),
1 when not, 2 on bad input (raised as MupError, rendered by the CLI).
"""

from __future__ import annotations

import json
import sys

from mupspec.bundled import locate
from mupspec.commands._io import read_text
from mupspec.errors import use_color


def configure(parser) -> None:
    from mupspec.check import EXPECTABLE
    from mupspec.ir import OPTIMIZERS

    parser.add_argument("files", nargs="+", metavar="FILE", type=locate, help=".mup specs or bundled spec names")
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                        help="report format (json: schema mupspec.check/1, see docs/checking.md)")
    parser.add_argument("--expect", type=expectable, metavar="CLASS",
                        help="exit 0 iff the classification is CLASS for every optimizer checked: "
                             + ", ".join(EXPECTABLE) + " (any case; also the class names coord-check "
                             "and verify take, e.g. muP, mean-field, Depth-muP, u-muP)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, action="append",
                        help="check only this optimizer family (repeatable; default: those the spec declares)")
    parser.add_argument("--without", choices=("input", "hidden", "output"), action="append", default=[],
                        metavar="CLASS",
                        help="the model has no CLASS layers (input, hidden or output; repeatable): check the rest. "
                             "Without it a spec missing one of these blocks is incomplete and fails")
    parser.add_argument("--alignment", metavar="A",
                        help="alignment assumption of the width calculus: full (Tensor Programs, the default), "
                             "everett (Everett et al. 2024's full alignment: W·Δx a CLT sum), none, or a measured "
                             "exponent from 1/2 to 1; overrides the spec's `alignment` block")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="leave warnings out of the text report (errors and verdicts stay)")


def expectable(text: str) -> str:
    """The check's own name for a class given in any spelling `--expect` takes
    elsewhere: `muP`, `mean-field`, `MF`, `Depth-muP`, `u-muP` ... or the
    check's names themselves (`mup`, `mean_field`, `feature_learning`)."""
    import argparse

    from mupspec.bundled import CLASSES, _folded
    from mupspec.check import EXPECTABLE

    names = {_folded(key): key for key in EXPECTABLE}
    for printed, file, aliases in CLASSES:
        spellings = [_folded(n) for n in (printed, file, *aliases)]
        key = next((names[f] for f in spellings if f in names), None)
        if key is not None:
            names.update(dict.fromkeys(spellings, key))
    key = names.get(_folded(text))
    if key is None:
        raise argparse.ArgumentTypeError(f"no class `{text}`: expected one of {', '.join(EXPECTABLE)} "
                                         "(any case; or muP, mean-field, Depth-muP, CompleteP, u-muP)")
    return key


def run(args) -> int:
    from mupspec import ir
    from mupspec.check import check_spec, parse_alignment
    from mupspec.errors import Diagnostic, MupError
    from mupspec.report import SCHEMA, diagnose, render_text, to_json
    from mupspec.resolve import parse_and_resolve

    try:
        alignment = parse_alignment(args.alignment) if args.alignment else None
    except ValueError as err:
        raise MupError(Diagnostic(f"--alignment: {err}", hint="e.g. --alignment everett or --alignment 0.75")) from None
    reports, texts, shown, failed = [], [], {}, []
    for file in args.files:
        spec = parse_and_resolve(read_text(file), file)
        covered = ir.optimizers(spec)
        if args.optimizer and not set(args.optimizer) & set(covered):
            raise MupError(Diagnostic(f"`{spec.name}` has no rule for {' or '.join(args.optimizer)}",
                                      spec.span, f"it covers: {', '.join(covered)}; drop --optimizer or pick one of those"))
        declared = [k for k in args.without if spec.block(k) is not None]
        if declared:
            block = spec.block(declared[0])
            raise MupError(Diagnostic(f"--without {declared[0]}, but `{spec.name}` has a block `{declared[0]}`",
                                      block.span, "drop --without for classes the spec describes"))
        result = check_spec(spec, tuple(args.optimizer) if args.optimizer else None, alignment, tuple(args.without))
        findings = diagnose(result)
        passed = result.matches(args.expect) if args.expect else result.ok
        if not passed:
            failed.append(file)
        if args.format == "json":
            reports.append(to_json(result, findings, file) | {"expect": args.expect, "passed": passed})
        else:
            text = render_text(result, findings, file, markdown=args.format == "markdown", shown=shown,
                               quiet=args.quiet, color=args.format == "text" and use_color(sys.stdout))
            if args.expect:
                text += f"expect {args.expect}: {'matches' if passed else 'does NOT match'}\n"
            texts.append(text)
    if args.format == "json":
        print(json.dumps({"schema": SCHEMA, "ok": not failed, "reports": reports}, indent=2, ensure_ascii=False))
    else:
        if len(args.files) > 1:
            what = f"--expect {args.expect}" if args.expect else "the μP desiderata"
            texts.append(f"{len(args.files)} specs checked against {what}: {len(args.files) - len(failed)} pass"
                         + (f", {len(failed)} fail: {', '.join(failed)}" if failed else "") + "\n")
        print("\n".join(texts), end="")
    return 1 if failed else 0

"""`mupspec convert FILE --to FORM [--set CLASS.FIELD=EXPR ...] [-o OUT]`:
rewrite a spec into an equivalent one (Lemma J.1, per class)."""

from __future__ import annotations

import sys

from mupspec.bundled import locate
from mupspec.commands._io import read_text
from mupspec.convert import FORMS, convert, parse_setting
from mupspec.errors import Diagnostic, MupError
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import parse_and_resolve


def configure(parser) -> None:
    parser.add_argument("file", metavar="FILE", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("--to", dest="form", metavar="FORM", choices=sorted(FORMS),
                        help="named form: " + "; ".join(f"{k}: {v}" for k, v in FORMS.items()))
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="CLASS.FIELD=EXPR",
                        help="pin one field of a class (e.g. output.mult=1/fan_in, hidden.init.var=1, "
                             "input.theta=sqrt(n)); θ of that class is solved from it. Overrides --to per class")
    parser.add_argument("--fixed-eps", action="store_true",
                        help="leave Adam eps as it is (the result is then equivalent only up to eps)")
    parser.add_argument("--name", help="name of the new parametrization (default: NAME_FORM)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the spec here (default: stdout)")


def run(args) -> int:
    text = read_text(args.file)
    spec = parse_and_resolve(text, args.file)
    if args.form is None and not args.settings:
        raise MupError(Diagnostic("nothing to convert to", hint=f"give --to FORM ({', '.join(FORMS)}) "
                                  "or --set CLASS.FIELD=EXPR"))
    settings = tuple(parse_setting(s, spec) for s in args.settings)
    result = convert(spec, args.form, settings, fixed_eps=args.fixed_eps)
    label = args.form or "converted"
    summary = _summary(args, result)
    new = result.spec.model_copy(update={
        "name": args.name or f"{spec.name}_{label}",
        "title": f"{spec.title or spec.name}, {label} form" if args.form else spec.title,
        "comments": tuple(summary) + (("",) + spec.comments if spec.comments else ()),
    })
    out = format_spec(new)
    parse_and_resolve(out, args.output)  # the result must be a valid spec: fail loudly if not
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    for line in summary:
        print(line.strip(), file=sys.stderr)
    return 0


def _summary(args, result) -> list[str]:
    how = " ".join([f"--to {args.form}"] * bool(args.form) + [f"--set {s}" for s in args.settings])
    lines = [f" Converted from {args.file} by `mupspec convert {how}` (TP5 Lemma J.1, per class).",
             " theta per class: " + (", ".join(f"{k} {format_expr(t)}" for k, t in result.thetas.items())
                                     or "1 everywhere (already in this form)") + "."]
    if result.exact:
        lines.append(" Exactly equivalent: multipliers, init, LR, weight decay and Adam eps all moved with theta.")
    lines += [f" {note}." for note in result.notes]
    return lines

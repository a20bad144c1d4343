"""`mupspec convert FILE --to FORM [--set CLASS.FIELD=EXPR ...] [-o OUT]`:
rewrite a spec into an equivalent one (Lemma J.1, per class)."""

from __future__ import annotations

import sys

from mupspec.bundled import locate
from mupspec.commands._io import check_output, read_text, write_atomic
from mupspec.convert import FORMS, convert, parse_setting
from mupspec.errors import Diagnostic, MupError
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import parse_and_resolve
from mupspec.symbolic import validate_scales


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
    if args.output:
        check_output(args.output)
    text = read_text(args.file)
    spec = parse_and_resolve(text, args.file)
    if args.form is None and not args.settings:
        raise MupError(Diagnostic("nothing to convert to", hint=f"give --to FORM ({', '.join(FORMS)}) "
                                  "or --set CLASS.FIELD=EXPR"))
    validate_scales(spec)  # negative, zero or non-real scales: located errors, as in check
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
    _self_check(spec, result, out)
    if args.output:
        write_atomic(args.output, out)
    else:
        sys.stdout.write(out)
    for line in summary:
        print(line.strip(), file=sys.stderr)
    return 0


def _self_check(spec, result, out: str) -> None:
    """The output must parse, and where it claims exact equivalence its
    invariants must equal the input's in value, not only in exponent. A
    failure is a bug in convert (exit 70), never blamed on the output text."""
    from mupspec.commands.equiv import value_differences

    try:
        again = parse_and_resolve(out, "<converted>")
    except MupError as err:
        raise RuntimeError(f"convert wrote a spec that does not parse: {err}") from None
    wrong = value_differences(spec, again) if result.exact else []
    if wrong:
        raise RuntimeError(f"convert changed the values of {wrong} while claiming exact equivalence")


def _summary(args, result) -> list[str]:
    how = " ".join([f"--to {args.form}"] * bool(args.form) + [f"--set {s}" for s in args.settings])
    lines = [f" Converted from {args.file} by `mupspec convert {how}` (TP5 Lemma J.1, per class).",
             " theta per class: " + (", ".join(f"{k} {format_expr(t)}" for k, t in result.thetas.items())
                                     or "1 everywhere (already in this form)") + "."]
    if result.exact:
        lines.append(" Exactly equivalent: multipliers, init, LR, weight decay and Adam eps all moved with theta.")
    lines += [f" {note}." for note in result.notes]
    return lines

"""`mupspec infer --model FILE.py:FACTORY [--optimizer ...] --widths ... [-o FILE.mup]`:
the spec a model's code implements.

Builds the model (and optimizer) at every width, reads the init variance,
forward multipliers, LR / weight decay / eps of every parameter and the
attention-logit scale, fits width exponents, rounds them to rationals
(denominator <= 4) when clean, groups parameters into classes and writes a
.mup spec (mupspec.empirical.infer); `mupspec check` then says whether it is
μP. Exit 0 when every exponent is clean, 1 when some fit is unclean
(written unrounded, with a comment), 2 on bad input.
"""

from __future__ import annotations

from mupspec.atomic import write_atomic
from mupspec.commands.coord_check import add_model_arguments, load_callable, optimizer_arg

HELP = "infer the spec your own model's code implements (init, multipliers, LRs across widths)"


def configure(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="base LR of a family --optimizer (adam/sgd over model.parameters(); default 1e-3)")
    parser.add_argument("-o", "--output", metavar="FILE.mup", help="write the inferred spec here (default: stdout)")
    parser.add_argument("--name", default="inferred", help="the parametrization's name (default inferred)")


def run(args) -> int:
    import time

    from mupspec.empirical.infer import infer, render, to_spec_text
    from mupspec.resolve import parse_and_resolve

    start = time.perf_counter()
    make_model = load_callable(args.model, "--model")
    make_input = load_callable(args.input, "--input") if args.input else None
    result = infer(make_model, args.widths, optimizer=optimizer_arg(args.optimizer), make_input=make_input,
                   lr=args.lr, factory_name=args.model)
    text = to_spec_text(result, args.name)
    parse_and_resolve(text, "<inferred>")  # what we write must be a valid spec
    print(render(result))
    if args.output:
        write_atomic(args.output, text, "-o")   # a full disk: a located error, the old file kept
        print(f"wrote {args.output}: run `mupspec check {args.output}`")
    else:
        print("\n" + text, end="")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 1 if result.unclean else 0

"""`mupspec coord-check SPEC --model FILE.py:FACTORY [...]`: the coordinate
check of the user's own model.

Builds FACTORY(width) at every width and seed, parametrizes it with SPEC's
generated module (unless --as-is), trains a few steps and compares the
fitted width exponent of every role and quantity with check's prediction
(mupspec.empirical.coord). Exit 0 iff every compared exponent agrees (with
--expect: agrees with that class's predictions), 1 otherwise, 2 on bad
input (a factory that fails or returns no nn.Module, a forward that fails
at some width, fewer than 3 or non-increasing widths).

The user-file contract: FACTORY(width) -> nn.Module; FUNC() -> the example
input (a tensor, or a tuple of forward arguments); OPT_FACTORY(model) ->
an optimizer or a list of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from mupspec.commands._backend import add_backend_options
from mupspec.commands._io import read_text
from mupspec.errors import Diagnostic, MupError

HELP = "coordinate check of your own model (FILE.py:FACTORY) against a spec"


def configure(parser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="a .mup spec: parametrizes the model and predicts its exponents")
    add_model_arguments(parser)
    parser.add_argument("--base-width", type=int, help="the width the spec is anchored at (default: the smallest)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps measured (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per width (default 3)")
    parser.add_argument("--lr", type=float, help="base learning rate (default: adam 1e-5, sgd 1e-4: small, so "
                        "that the steps stay a perturbation)")
    parser.add_argument("--as-is", action="store_true",
                        help="the factory already parametrized the model (e.g. microsoft/mup's set_base_shapes): "
                             "measure it as it is, without the spec's generated module")
    parser.add_argument("--expect", metavar="CLASS",
                        help="compare with a parametrization class's predictions: muP, SP, NTK, mean-field (MF), "
                             "Depth-muP, CompleteP, u-muP (any case); or a .mup file or bundled spec name")
    parser.add_argument("--tol", type=float, default=0.2,
                        help="an exponent agrees when within tol of the prediction (default 0.2)")
    parser.add_argument("--plot", metavar="DIR", help="write coordinate-check figures into DIR")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    add_backend_options(parser)


def add_model_arguments(parser, widths_default: str = "64,128,256,512") -> None:
    """--model, --input, --optimizer, --widths: shared with `mupspec infer`."""
    parser.add_argument("--model", required=True, metavar="FILE.py:FACTORY",
                        help="FACTORY(width) -> nn.Module, your model at one width")
    parser.add_argument("--input", metavar="FILE.py:FUNC",
                        help="FUNC() -> the example input (default: a float batch, or token ids for a model "
                             "that starts with an nn.Embedding)")
    parser.add_argument("--optimizer", default="adam", metavar="adam|sgd|FILE.py:OPT_FACTORY",
                        help="an optimizer family (the spec's param groups) or OPT_FACTORY(model) -> optimizer(s) "
                             "(default adam)")
    parser.add_argument("--widths", type=widths_arg, default=widths_arg(widths_default),
                        help=f"comma-separated, increasing, at least 3 (default {widths_default})")


def widths_arg(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(values) < 3:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 3 widths are needed to fit an exponent")
    if any(b <= a for a, b in zip(values, values[1:])) or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: widths must be positive and strictly increasing")
    return values


def load_callable(ref: str, what: str):
    """FILE.py:NAME -> the callable NAME defined in FILE.py (imported as a
    module; its directory is put on sys.path so that its own imports work)."""
    path_text, sep, name = ref.rpartition(":")
    if not sep or not path_text or not name.isidentifier():
        raise MupError(Diagnostic(f"{what} `{ref}`: expected FILE.py:NAME", hint="e.g. --model mymodel.py:make_model"))
    path = Path(path_text)
    if not path.is_file():
        raise MupError(Diagnostic(f"{what} `{ref}`: no such file {path_text}"))
    module_name = f"mupspec_user_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # the user's file: report, never a traceback
            raise MupError(Diagnostic(f"{what} `{ref}`: importing {path_text} failed: {type(err).__name__}: {err}"))\
                from None
        finally:
            sys.path.pop(0)
        sys.modules[module_name] = module
    func = getattr(module, name, None)
    if not callable(func):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise MupError(Diagnostic(f"{what} `{ref}`: {path_text} defines no function `{name}`",
                                  hint="it defines: " + ", ".join(defined[:12]) if defined else None))
    func.__mupspec_ref__ = ref
    return func


def optimizer_arg(text: str):
    """--optimizer: a family name, or a factory loaded from FILE.py:NAME."""
    if text in ("adam", "sgd"):
        return text
    if ":" not in text:
        raise MupError(Diagnostic(f"--optimizer `{text}`: expected adam, sgd or FILE.py:OPT_FACTORY"))
    return load_callable(text, "--optimizer")


def run(args) -> int:
    import time

    from mupspec.commands.verify import expected_spec
    from mupspec.empirical.coord import coord_check
    from mupspec.progress import Progress
    from mupspec.resolve import parse_and_resolve

    start = time.perf_counter()
    if args.steps < 1 or args.seeds < 1:
        raise MupError(Diagnostic("--steps and --seeds must be at least 1"))
    spec = parse_and_resolve(read_text(args.spec), args.spec)
    expect = expected_spec(args.expect) if args.expect else None
    make_model = load_callable(args.model, "--model")
    make_input = load_callable(args.input, "--input") if args.input else None
    optimizer = optimizer_arg(args.optimizer)
    from mupspec.empirical.runner import make_backend

    backend = make_backend(args.backend, args.address)   # before any work: a missing Ray fails at once
    bar = Progress(len(args.widths) * args.seeds, unit="networks")  # drawn only on a terminal
    try:
        result = coord_check(make_model, args.widths, spec=spec, make_input=make_input,
                             optimizer=optimizer, steps=args.steps, seeds=args.seeds,
                             base_width=args.base_width, as_is=args.as_is, expect=expect, lr=args.lr, tol=args.tol,
                             factory_name=args.model, on_run=bar.finished, backend=backend)
    finally:
        bar.close()
    written = []
    if args.plot:
        from mupspec.empirical.plots import role_coordinate_check
        written = role_coordinate_check(args.plot, result)
    if args.format == "json":
        print(json.dumps({**result.as_json(), "figures": [str(p) for p in written]}, indent=2))
    else:
        print(result.render())
        for path in written:
            print(f"wrote {path}")
        print(f"({time.perf_counter() - start:.1f} s)")
    return 0 if result.ok else 1

"""`mupspec verify FILE`: measure scaling exponents on real networks and
compare them with the checker's predictions.

Takes a spec file; builds networks from it at a grid of widths, depths and
seeds (mupspec.empirical.measure), fits log-log width exponents with 95%
intervals over seeds x depths (mupspec.empirical.fit), and compares every
fitted exponent with the exponent `mupspec.check` predicts for that term.
Prints one table (predicted, measured ± CI, verdict); exit 0 only if every
row agrees within --tol, 1 if one does not, 2 on bad input.

What is compared (check's terms, docs/theory.md §7, per optimizer):
  act   step 0   input/hidden pre-activations and the output at init
  own   step t   each class's own-update term (ΔW·x, Δb; output: ΔW_out·x)
  delta step t   the last hidden layer's change (TP4's feature change n^-r)
  prop  step t   the output's change through W_out·Δx
The run stays at small LR, where a step is a small perturbation and the
output weights are still at their init scale. check's step terms describe
W_out after its own steps (min(e_init,out, e_opt,out)); for the first steps
we ask check the same question with the output weights held at init (its
step terms evaluated with the output's optimizer exponent set to +oo). The
two agree for every spec whose output updates no faster than its init
(μP, NTK, MF); for SP they differ, and `--show-asymptotic` prints both.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

from mupspec import bundled
from mupspec.bundled import locate
from mupspec.commands._backend import add_backend_options
from mupspec.commands._io import check_output, check_output_dir, read_text, write_atomic
from mupspec.errors import Diagnostic, MupError
from mupspec.progress import Progress
from mupspec.resolve import load_spec, parse_and_resolve

# (quantity, class) measured  <->  (role, kind) of check's Term
TERM_OF = {
    ("act", "input"): ("init", "input"),
    ("act", "hidden"): ("init", "hidden"),
    ("act", "output"): ("output_init", "output"),
    ("own", "input"): ("own_update", "input"),
    ("own", "hidden"): ("own_update", "hidden"),
    ("own", "output"): ("own_update", "output"),
    ("own", "bias"): ("own_update", "bias"),
    ("delta", "hidden"): ("features", "hidden"),
    ("prop", "output"): ("output_change", "output"),
}


def configure(parser) -> None:
    from mupspec.ir import OPTIMIZERS

    parser.add_argument("file", metavar="FILE", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("--expect", metavar="CLASS",
                        help="compare with a parametrization class's predictions instead (muP, SP, NTK, "
                             "mean-field, Depth-muP, CompleteP, u-muP; or a .mup file or bundled spec name); "
                             "the networks are still FILE's")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, action="append",
                        help="only this optimizer (repeatable; default: those the spec covers)")
    parser.add_argument("--widths", type=_ints, default=(64, 128, 256, 512, 1024),
                        help="comma-separated (default 64,128,256,512,1024)")
    parser.add_argument("--depths", type=_ints, default=(3, 4, 6),
                        help="hidden layers, comma-separated (default 3,4,6)")
    parser.add_argument("--seeds", type=int, default=3, help="init seeds (default 3)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps measured (default 2)")
    parser.add_argument("--arch", choices=("auto", "mlp", "residual", "residual-prenorm"), default="auto",
                        help="auto: mlp, or residual when the spec declares a depth symbol")
    parser.add_argument("--builder", choices=("codegen", "numeric"), default="codegen",
                        help="codegen (default): plain torch (residual) MLPs parametrized by the module "
                             "`mupspec codegen` emits; numeric: mupspec's own network from the rule values")
    parser.add_argument("--tol", type=float, default=0.15,
                        help="a row passes when |measured - predicted| <= tol (default 0.15)")
    parser.add_argument("--plot", metavar="DIR", help="write coordinate-check figures into DIR")
    parser.add_argument("--csv", metavar="FILE", help="write every measured sample to FILE, including "
                        "||grad W||/||W|| and the relative update in Frobenius and spectral norm")
    parser.add_argument("--depth-exponents", action="store_true",
                        help="also print the measured depth exponents of the compared terms (no verdict: "
                             "check predicts width exponents)")
    add_backend_options(parser)
    parser.add_argument("--show-asymptotic", action="store_true",
                        help="also print check's prediction once W_out has moved (no verdict)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="json: one object on stdout, schema mupspec.verify/1 (see docs/verify.md)")


def _ints(text: str) -> tuple[int, ...]:
    import argparse

    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:  # argparse turns this into a usage error, exit 2
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# ---------------------------------------------------------------- predictions


def predictions(spec, optimizer: str, first_steps: bool = True) -> dict[tuple[str, str], float]:
    """check's exponent for every compared (quantity, class), as floats.
    `first_steps`: output weights still at their init scale (see module doc).
    The same predictions as the coordinate check of any model (coord.py)."""
    from mupspec.empirical.coord import role_predictions

    by_role = role_predictions(spec, optimizer, first_steps)
    return {(q, cls): by_role[(cls, q)] for q, cls in TERM_OF if (cls, q) in by_role}


def expected_spec(name_or_path: str):
    """--expect: a parametrization class (muP, SP, NTK, mean-field, Depth-muP,
    CompleteP, u-muP; any case), a file path, or a bundled spec name."""
    path = bundled.expected(name_or_path)
    if path.parent == bundled.DIR:
        return load_spec(path)
    return parse_and_resolve(read_text(name_or_path), name_or_path)


# ---------------------------------------------------------------- comparison


@dataclasses.dataclass(frozen=True)
class Row:
    optimizer: str
    step: int
    quantity: str
    cls: str
    predicted: float
    measured: float
    ci: float
    agrees: bool
    asymptotic: float | None = None
    source: str | None = None  # for sums: the class whose part has the largest exponent
    zero: bool = False         # every sample exactly 0 (a zero init, or no gradient yet behind a zero readout)


def leading_part(fits: dict, opt: str, step: int, cls: str, quantity: str):
    """(fit, source) of the part of a sum with the largest exponent: the
    feature change and W_out·Δx are sums over the classes whose updates
    caused them (measure._measure_sources), and a sum grows like its
    fastest part -- which at finite width may not be the largest part."""
    parts = [(f, key[3].split("@", 1)[1]) for key, f in fits.items()
             if key[:3] == (opt, step, cls) and key[3].startswith(quantity + "@") and f.ok]
    return max(parts, key=lambda p: p[0].exponent) if parts else (None, None)


def compare(fits: dict, preds: dict[str, dict], tol: float, asymptotic: dict | None = None,
            zeros: frozenset = frozenset(), zero_readout: bool = False) -> list[Row]:
    """One Row per fitted exponent that check predicts; a row agrees when the
    measured mean is within `tol` of the prediction. For `delta` and `prop`
    the measured exponent is that of their fastest-growing part. `zeros`:
    the (opt, step, cls, quantity) whose samples are all exactly 0 -- right
    where check predicts 0 (exponent -oo), and at step 1 behind a zero
    readout (`zero_readout`), which passes no gradient back before its first
    step; W_out·Δx is measured with W_out at its init, so it stays 0 there."""
    rows = []
    for (opt, step, cls, quantity), fit in sorted(fits.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        pred = preds.get(opt, {}).get((quantity, cls))
        if pred is None or (quantity == "act") != (step == 0):
            continue
        source = None
        zero = (opt, step, cls, quantity) in zeros
        if quantity in ("delta", "prop") and not zero:
            part, source = leading_part(fits, opt, step, cls, quantity)
            fit = part or fit
        agrees = fit.ok and math.isfinite(pred) and abs(fit.exponent - pred) <= tol
        if zero:  # behind a zero readout nothing moves before its first step, and W_out·Δx is read with W_out at init
            agrees = pred == -math.inf or (zero_readout and (step == 1 and cls != "output" or quantity == "prop"))
        asym = (asymptotic or {}).get(opt, {}).get((quantity, cls))
        rows.append(Row(opt, step, quantity, cls, pred, fit.exponent, fit.ci, agrees, asym, source, zero))
    return rows


def exact_zeros(samples) -> frozenset:
    """The measured (opt, step, cls, quantity) whose every sample is exactly 0."""
    values: dict[tuple, list[float]] = {}
    for s in samples:
        values.setdefault((s.optimizer, s.step, s.cls, s.quantity), []).append(s.value)
    return frozenset(k for k, v in values.items() if all(x == 0 for x in v))


DESCRIBE = {"act": "size at init", "own": "own-update term", "delta": "feature change (n^-r)",
            "prop": "output change via W_out·Δx"}


def render(rows: list[Row], title: str, tol: float, show_asymptotic: bool) -> str:
    head = f"{'opt':5} {'step':>4}  {'class':7} {'term [fastest part]':36} {'predicted':>9}  {'measured ± 95% CI':>18}  verdict"
    if show_asymptotic:
        head += "   (W_out moved)"
    lines = [title, head, "-" * len(head)]
    for r in rows:
        pred = f"{r.predicted:+.2f}" if math.isfinite(r.predicted) else "zero"
        meas = "exactly 0" if r.zero else f"{r.measured:+.3f} ± {r.ci:.3f}" if math.isfinite(r.measured) else "n/a"
        term = DESCRIBE[r.quantity] + (f" [{r.source}]" if r.source else "")
        line = (f"{r.optimizer:5} {r.step:>4}  {r.cls:7} {term:36} {pred:>9}  {meas:>18}  "
                f"{'PASS' if r.agrees else 'FAIL'}")
        if show_asymptotic and r.asymptotic is not None:
            line += f"   {r.asymptotic:+.2f}"
        lines.append(line)
    failed = [r for r in rows if not r.agrees]
    lines.append("")
    if failed:
        lines.append(f"FAIL: {len(failed)} of {len(rows)} exponents differ from the prediction by more "
                     f"than {tol}. Layers that differ:")
        for cls in sorted({r.cls for r in failed}):
            terms: dict[str, set[str]] = {}
            for r in failed:
                if r.cls == cls:
                    terms.setdefault(DESCRIBE[r.quantity], set()).add(r.optimizer)
            lines.append(f"  {cls:7} " + "; ".join(f"{t} ({', '.join(sorted(o))})" for t, o in terms.items()))
    else:
        lines.append(f"PASS: all {len(rows)} exponents within {tol} of the prediction")
    return "\n".join(lines)


# ---------------------------------------------------------------- command


def verify_spec(spec, expect=None, *, widths, depths, seeds, steps: int, arch: str = "auto",
                optimizers=None, tol: float = 0.15, show_asymptotic: bool = False, ratios: bool = False,
                builder: str = "codegen", progress: bool = False, backend=None):
    """Measure `spec`, fit, compare with `expect`'s (default: its own)
    predictions. Returns (rows, samples, fits, predictions)."""
    from mupspec import ir
    from mupspec.empirical.fit import fit_table
    from mupspec.empirical.measure import Grid, measure, measure_on, uses_codegen

    expect = expect or spec
    covered = [o for o in ir.optimizers(spec) if o in ir.optimizers(expect)]
    opts = tuple(o for o in covered if not optimizers or o in optimizers)
    if not opts:
        raise MupError(Diagnostic(f"no optimizer to verify: `{spec.name}` covers {', '.join(ir.optimizers(spec))}, "
                                  f"`{expect.name}` covers {', '.join(ir.optimizers(expect))}",
                                  hint="pick --optimizer among those both specs give an LR for"))
    kind = ("residual" if spec.depth else "mlp") if arch == "auto" else arch
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    grid = Grid(widths=tuple(widths), depths=tuple(depths), seeds=seeds, optimizers=opts,
                steps=steps, arch=network_arch(spec, kind), ratios=ratios, builder=builder)
    beyond = [o for o in opts if o not in ("sgd", "adam")]
    if beyond and not uses_codegen(spec, grid):
        raise MupError(Diagnostic(f"{', '.join(beyond)}: only the generated module builds these optimizers",
                                  hint="use --builder codegen (the default) and --arch mlp or residual"))
    bar = Progress(len(opts) * len(grid.depths) * len(grid.widths) * len(seeds), unit="networks",
                   stream=sys.stderr if progress else None)
    try:
        samples = (measure(spec, grid, on_run=bar.finished) if backend is None
                   else measure_on(backend, spec, grid, on_run=bar.finished))
    finally:
        bar.close()
    fits = fit_table(samples)
    preds = {o: predictions(expect, o) for o in opts}
    asym = {o: predictions(expect, o, first_steps=False) for o in opts} if show_asymptotic else None
    zero_readout = _zero_readout(spec)
    return compare(fits, preds, tol, asym, exact_zeros(samples), zero_readout), samples, fits, preds


def network_arch(spec, kind: str):
    """The measured networks: biases only where the spec has a bias block."""
    from mupspec.empirical.models import Arch

    return Arch(kind=kind, bias=spec.block("bias") is not None)


def _zero_readout(spec) -> bool:
    from mupspec.symbolic import INF, init_std_exponent

    return spec.block("output") is not None and init_std_exponent(spec, "output") == INF


def _validate(args) -> None:
    problems = []
    if len(set(args.widths)) < 2 or min(args.widths, default=0) < 2:
        problems.append("--widths needs at least two distinct widths >= 2")
    if not args.depths or min(args.depths) < 1:
        problems.append("--depths needs depths >= 1")
    if args.seeds < 1 or args.steps < 1:
        problems.append("--seeds and --steps must be >= 1")
    if args.arch == "mlp" and min(args.depths, default=3) < 3:
        problems.append("a plain MLP needs depth >= 3 so that the last hidden layer reads a hidden layer")
    if not math.isfinite(args.tol) or args.tol < 0:
        problems.append(f"--tol must be a finite number >= 0, not {args.tol}")
    if problems:
        raise MupError([Diagnostic(p, hint="see `mupspec verify --help`") for p in problems])
    _check_cost(args)
    if args.csv:
        check_output(args.csv, "--csv")
    if args.plot:
        check_output_dir(args.plot, "--plot")


# The estimate behind the refusal of absurd grids: a network of width w and
# depth d holds about d·w² weights; measuring it keeps ~6 float64 copies
# (weights, W_0, gradient, two Adam moments, a scratch buffer) and costs
# about (steps + 10)·d·w² element operations per seed and optimizer (init,
# forward, backward, norms). ELEMENT_OPS_PER_S is a deliberately fast
# machine, so the refusal errs on the side of running.
BYTES_PER_WEIGHT = 6 * 8
ELEMENT_OPS_PER_S = 2e9
MAX_HOURS = 6.0


def estimate(widths, depths, seeds: int, steps: int, optimizers: int = 2) -> tuple[float, float]:
    """(bytes of the largest network, seconds for the whole grid), estimated."""
    largest = max(widths) ** 2 * max(depths)
    ops = sum(w * w for w in widths) * sum(depths) * seeds * optimizers * (steps + 10)
    cap = 10**300  # a 400-digit width is still refused, not an OverflowError
    return float(min(largest, cap)) * BYTES_PER_WEIGHT, float(min(ops, cap)) / ELEMENT_OPS_PER_S


def _check_cost(args) -> None:
    """Refuse, before anything is built, a grid that cannot fit in memory or
    finish in MAX_HOURS, with the estimate in the message."""
    memory, seconds = estimate(args.widths, args.depths, args.seeds, args.steps)
    available = _physical_memory()
    too_big = memory > available / 2
    too_long = seconds > MAX_HOURS * 3600
    if too_big or too_long:
        what = []
        if too_big:
            what.append(f"about {_bytes(memory)} for the largest network (width {max(args.widths)}, depth "
                        f"{max(args.depths)}), more than half of this machine's {_bytes(available)}")
        if too_long:
            what.append(f"about {seconds / 3600:.3g} hours of compute even at {ELEMENT_OPS_PER_S:.0e} "
                        f"element operations per second (limit: {MAX_HOURS:g} hours)")
        raise MupError(Diagnostic("verify would need " + " and ".join(what),
                                  hint="use smaller --widths, --depths, --seeds or --steps; the defaults "
                                       "are widths 64..1024, depths 3,4,6, 3 seeds, 2 steps"))


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8e9


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def run(args) -> int:
    import time

    _validate(args)
    start = time.perf_counter()
    spec = parse_and_resolve(read_text(args.file), args.file)
    expect = expected_spec(args.expect) if args.expect else None
    rows, samples, fits, preds = verify_spec(
        spec, expect, widths=args.widths, depths=args.depths, seeds=args.seeds, steps=args.steps,
        arch=args.arch, optimizers=args.optimizer, tol=args.tol, show_asymptotic=args.show_asymptotic,
        ratios=bool(args.csv), builder=args.builder, progress=True, backend=_backend(args))
    from mupspec.empirical.measure import Grid, uses_codegen

    kind = ("residual" if spec.depth else "mlp") if args.arch == "auto" else args.arch
    built = "codegen" if uses_codegen(spec, Grid(arch=network_arch(spec, kind), builder=args.builder)) else "numeric"
    title = (f"measured: `{spec.name}` {kind} networks ({built}); widths {list(args.widths)}, depths "
             f"{list(args.depths)}, {args.seeds} seeds, {args.steps} steps")
    text = args.format == "text"
    if text:
        print(mup_answer(spec, expect))
        print(render(rows, title, args.tol, args.show_asymptotic))
    if args.depth_exponents and text:
        print("\n" + render_depth(samples, preds))
    if args.csv:
        _write_csv(args.csv, samples)
    if args.plot:
        from mupspec.empirical.plots import coordinate_check
        for path in coordinate_check(args.plot, spec.name, samples, fits, preds, args.steps):
            print(f"wrote {path}", file=sys.stdout if text else sys.stderr)
    seconds = time.perf_counter() - start
    if text:
        print(f"({seconds:.1f} s)")
    else:
        import json

        grid = {"widths": list(args.widths), "depths": list(args.depths), "seeds": args.seeds, "steps": args.steps}
        print(json.dumps(to_json(rows, args.file, spec.name, (expect or spec).name, kind, built, grid, args.tol,
                                 samples if args.depth_exponents else None, seconds), indent=2, ensure_ascii=False))
    return 0 if all(r.agrees for r in rows) else 1


def mup_answer(spec, expect) -> str:
    """The first lines of the report: is the spec μP (check's verdict), and
    what the table compares -- a spec's own predictions say nothing about μP."""
    from mupspec.check import check_spec
    from mupspec.report import verdict_text

    verdict = verdict_text(check_spec(spec))
    lines = [f"is `{spec.name}` μP? check: {'yes' if verdict.startswith('μP') else 'NO'} ({verdict})"]
    if expect is None:
        lines.append(f"compared: the measured exponents of `{spec.name}`'s networks with `{spec.name}`'s own "
                     "predictions (PASS = the networks scale as the spec says, whatever it is; "
                     "--expect mup compares with μP's)")
    else:
        lines.append(f"compared: the measured exponents of `{spec.name}`'s networks with `{expect.name}`'s "
                     f"predictions (PASS = they scale as `{expect.name}` does)")
    return "\n".join(lines)


SCHEMA = "mupspec.verify/1"


def to_json(rows: list[Row], file: str, spec: str, expect: str, arch: str, builder: str, grid: dict,
            tol: float, depth_samples, seconds: float) -> dict:
    """The report as data (schema mupspec.verify/1, documented in docs/verify.md);
    a number that is not finite (no fit, an infinite prediction) is null."""
    def num(x):
        return x if x is not None and math.isfinite(x) else None

    out = {"schema": SCHEMA, "file": file, "spec": spec, "expect": expect, "arch": arch, "builder": builder,
           "grid": grid, "tol": tol, "ok": all(r.agrees for r in rows), "seconds": round(seconds, 1),
           "rows": [{"optimizer": r.optimizer, "step": r.step, "class": r.cls, "quantity": r.quantity,
                     "term": DESCRIBE[r.quantity], "source": r.source, "predicted": num(r.predicted),
                     "measured": num(r.measured), "ci95": num(r.ci), "agrees": r.agrees,
                     "asymptotic": num(r.asymptotic)} for r in rows]}
    if depth_samples is not None:
        from mupspec.empirical.fit import fit_table

        fits = sorted(fit_table(depth_samples, axis="depth").items())
        out["depth_exponents"] = [{"optimizer": o, "step": s, "class": c, "quantity": q,
                                   "measured": num(f.exponent), "ci95": num(f.ci)} for (o, s, c, q), f in fits]
    return out


def _backend(args):
    """None (measure in this process, as always) unless --backend ray."""
    if args.backend == "local":
        return None
    from mupspec.empirical.runner import make_backend
    return make_backend(args.backend, args.address)


def render_depth(samples, preds) -> str:
    """Measured depth exponents (value ∝ depth^k, replicates: seeds x widths)
    of the compared terms; sums are shown by their total."""
    from mupspec.empirical.fit import fit_table

    fits = fit_table(samples, axis="depth")
    lines = ["measured depth exponents (no prediction to compare with)",
             f"{'opt':5} {'step':>4}  {'class':7} {'term':27} {'measured ± 95% CI':>18}"]
    for (opt, step, cls, quantity), fit in sorted(fits.items()):
        if (quantity, cls) in preds.get(opt, {}) and (quantity == "act") == (step == 0):
            lines.append(f"{opt:5} {step:>4}  {cls:7} {DESCRIBE[quantity]:27} "
                         f"{fit.exponent:+.3f} ± {fit.ci:.3f}")
    return "\n".join(lines) if len(lines) > 2 else "depth exponents need at least two --depths"


def _write_csv(path: str, samples) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["optimizer", "width", "depth", "seed", "step", "cls", "quantity", "value"])
    for s in samples:
        writer.writerow(dataclasses.astuple(s))
    write_atomic(path, buffer.getvalue(), "--csv")

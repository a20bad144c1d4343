"""`mupspec equiv A B [--strict]`: are two specs equivalent (TP5 Lemma J.1)?

Two specs are equivalent when, for every layer class and optimizer both
declare, the width exponents of the Lemma J.1 invariants agree (docs/theory.md
§3.1): e_init = a+b, e_sgd = 2a+c_sgd, e_adam = a+c_adam; attention logit
and residual-branch (depth) exponents must agree too. The invariants that
the symmetry also preserves once eps and weight decay move with it --
Adam eps/multiplier, SGD lr·wd, AdamW lr·wd -- are reported as notes, and
count only with --strict. Exit 0 if equivalent, 1 if not.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import sympy

from mupspec import ir
from mupspec.bundled import locate
from mupspec.commands._io import read_text
from mupspec.resolve import parse_and_resolve
from mupspec.symbolic import OO, class_exponents, depth_exponents, fmt_exponent, logit_exponent


@dataclass(frozen=True)
class Difference:
    where: str       # a class, "attention" or "residual"
    optimizer: str   # "sgd", "adam" or "-" (not optimizer-specific)
    invariant: str
    a: sympy.Expr
    b: sympy.Expr
    strict_only: bool = False  # an eps / weight-decay invariant


def _class_invariants(spec: ir.Spec, kind: str, optimizers: tuple[str, ...]):
    """(optimizer, name, exponent, strict_only) of one class: the width
    invariants, then (with a depth symbol) the same invariants in depth."""
    axes = ((0, ""), (1, " in depth")) if spec.depth else ((0, ""),)
    for axis, where in axes:
        e = class_exponents(spec, kind, axis=axis)
        yield "-", f"e_init{where}", e.e_init, False
        for opt in optimizers:
            family = e.family(opt)
            yield opt, f"e_{opt}{where}", e.e_opt(opt), False
            yield opt, f"e_wd_{opt}{where} (lr.{family}*wd.{family})", e.c(opt) + e.wd(opt), True
            if family == "adam":
                yield opt, f"e_eps{where} (eps.adam/mult)", e.eps_adam - e.a, True


def _block_invariants(spec: ir.Spec, kind: str, optimizers: tuple[str, ...]):
    if kind == "attention":
        yield "-", "logit exponent", logit_exponent(spec), False
    elif kind == "residual":
        d = depth_exponents(spec)
        yield "-", "alpha (branch output at init ∝ L^-alpha)", d.alpha, False
        yield "-", "width exponent of mult", d.alpha_width, False
        yield "-", "layers per branch", sympy.Integer(d.layers), False
        for opt in optimizers:
            yield opt, f"alpha+gamma_{opt} (one step moves a branch by L^-(alpha+gamma))", d.update[opt], False
    elif kind == "alignment":
        yield from ()
    else:
        yield from _class_invariants(spec, kind, optimizers)


def compare(a: ir.Spec, b: ir.Spec) -> tuple[list[Difference], list[str], list[str]]:
    """(differences, kinds compared, optimizers compared)."""
    optimizers = tuple(o for o in ir.optimizers(a) if o in ir.optimizers(b))
    kinds = [k for k in ir.BLOCK_KINDS if a.block(k) is not None and b.block(k) is not None]
    diffs = []
    for kind in kinds:
        for (opt, name, va, strict), (_, _, vb, _) in zip(_block_invariants(a, kind, optimizers),
                                                           _block_invariants(b, kind, optimizers)):
            if va != vb:
                diffs.append(Difference(kind, opt, name, va, vb, strict))
    return diffs, kinds, list(optimizers)


# Lemma J.1 invariants as values, not exponents: (name, optimizer, rule powers).
# value = prod(rule^power); convert's θ-move keeps every one of them exactly.
VALUE_INVARIANTS = (
    ("e_init", "A²·B² (init scale)", "-", {"mult": 2, "init.var": 1}),
    ("e_sgd", "A²·lr_sgd", "sgd", {"mult": 2, "lr.sgd": 1}),
    ("e_adam", "A·lr_adam", "adam", {"mult": 1, "lr.adam": 1}),
    ("e_eps (eps.adam/mult)", "eps/A", "adam", {"eps.adam": 1, "mult": -1}),
    ("e_wd_sgd (lr.sgd*wd.sgd)", "lr_sgd·wd_sgd", "sgd", {"lr.sgd": 1, "wd.sgd": 1}),
    ("e_wd_adam (lr.adam*wd.adam)", "lr_adam·wd_adam", "adam", {"lr.adam": 1, "wd.adam": 1}),
)


def _value_env(spec: ir.Spec) -> dict:
    """Every width symbol as one `n`, the depth as `L`, fans and hypers by
    name: two specs' values are comparable whatever they call their width."""
    n, depth = sympy.Symbol("n", positive=True), sympy.Symbol("L", positive=True)
    env = {name: sympy.Symbol(name, positive=True) for name in ("fan_in", "fan_out", *(h.name for h in spec.hypers))}
    env = {k: v if k not in ("n", "L") else sympy.Symbol(k + "'", positive=True) for k, v in env.items()}
    env |= {w: n for w in spec.widths}
    if spec.depth:
        env[spec.depth] = depth
    return env


def _invariant_value(spec: ir.Spec, kind: str, powers: dict, env: dict):
    from mupspec.symbolic import to_sympy

    block = spec.block(kind)
    value = sympy.Integer(1)
    for field, power in powers.items():
        value *= to_sympy(ir.rule_value(block, field, spec.widths), env) ** power
    return value


def _same_value(x, y) -> bool:
    if x == y:
        return True
    from mupspec.convert import normal_form

    if normal_form(x - y) == 0:
        return True
    return sympy.simplify(x - y) == 0


def value_differences(a: ir.Spec, b: ir.Spec, skip=frozenset()) -> list[tuple[str, str, str]]:
    """(class, optimizer, invariant) whose values differ between the specs,
    over the parameter classes both declare and the optimizers both cover
    (hyperparameters compared by name); `skip`: (class, optimizer, exponent
    invariant) already known to differ in exponent."""
    from mupspec.convert import MOVABLE

    optimizers = tuple(o for o in ir.optimizers(a) if o in ir.optimizers(b))
    env_a, env_b = _value_env(a), _value_env(b)
    out = []
    for kind in MOVABLE:
        if a.block(kind) is None or b.block(kind) is None:
            continue
        for exponent, name, opt, powers in VALUE_INVARIANTS:
            if (opt != "-" and opt not in optimizers) or (kind, opt, exponent) in skip:
                continue
            if not _same_value(_invariant_value(a, kind, powers, env_a), _invariant_value(b, kind, powers, env_b)):
                out.append((kind, opt, name))
    return out


def configure(parser) -> None:
    parser.add_argument("a", metavar="A", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("b", metavar="B", type=locate, help="another .mup spec or bundled spec name")
    parser.add_argument("--strict", action="store_true",
                        help="exact equivalence: also require the Adam eps and weight-decay invariants to agree, "
                             "and every invariant's value (not only its width exponent)")


def run(args) -> int:
    a = parse_and_resolve(read_text(args.a), args.a)
    b = parse_and_resolve(read_text(args.b), args.b)
    diffs, kinds, optimizers = compare(a, b)
    failing = [d for d in diffs if args.strict or not d.strict_only]
    notes = [d for d in diffs if d not in failing]
    scope = f"classes {', '.join(kinds) or '(none in common)'}; optimizers {', '.join(optimizers) or '(none)'}"
    values = [] if failing else value_differences(a, b, {(d.where, d.optimizer, d.invariant) for d in diffs})
    value_fails = bool(args.strict and values)  # exact equivalence: values, not only exponents
    verdict = "not equivalent" if failing or value_fails else \
        "exactly equivalent" if not values and not notes else "equivalent"
    # two specs of one name (a spec and its edited copy) are told apart by their files
    label_a, label_b = (a.name, b.name) if a.name != b.name else (args.a, args.b)
    print(f"{label_a} and {label_b}: {verdict} ({scope})")
    if failing:
        print(_table(failing, label_a, label_b))
    if values:
        print("same width exponents, but the values of these invariants differ (constant factors or lower-order "
              "terms)" + ("; --strict requires equal values:" if args.strict else ":"))
        print("\n".join(f"  {kind}  {opt}  {name}" for kind, opt, name in values))
    if notes:
        print(("they also differ" if failing else "equivalent only up to Adam eps / weight decay:")
              + " in these eps / weight-decay invariants (convert moves eps and wd with theta, which keeps "
              "them; --strict makes them count):")
        print(_table(notes, label_a, label_b))
    only = [k for k in ir.BLOCK_KINDS if (a.block(k) is None) != (b.block(k) is None)]
    if only:
        print(f"not compared (declared by one spec only): {', '.join(only)}", file=sys.stderr)
    return 1 if failing or value_fails else 0


def _delta(d: Difference) -> str:
    if OO in (d.a, d.b, -d.a, -d.b):
        return "-"
    return fmt_exponent(d.b - d.a)


def _table(diffs: list[Difference], name_a: str, name_b: str) -> str:
    head = ["class", "optimizer", "invariant", name_a, name_b, "B - A"]
    rows = [[d.where, d.optimizer, d.invariant, fmt_exponent(d.a), fmt_exponent(d.b), _delta(d)] for d in diffs]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])

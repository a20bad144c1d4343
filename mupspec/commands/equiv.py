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


def configure(parser) -> None:
    parser.add_argument("a", metavar="A", type=locate, help="a .mup spec or a bundled spec name")
    parser.add_argument("b", metavar="B", type=locate, help="another .mup spec or bundled spec name")
    parser.add_argument("--strict", action="store_true",
                        help="also require the Adam eps and weight-decay invariants to agree (exact equivalence)")


def run(args) -> int:
    a = parse_and_resolve(read_text(args.a), args.a)
    b = parse_and_resolve(read_text(args.b), args.b)
    diffs, kinds, optimizers = compare(a, b)
    failing = [d for d in diffs if args.strict or not d.strict_only]
    notes = [d for d in diffs if d not in failing]
    scope = f"classes {', '.join(kinds) or '(none in common)'}; optimizers {', '.join(optimizers) or '(none)'}"
    verdict = "not equivalent" if failing else "equivalent"
    # two specs of one name (a spec and its edited copy) are told apart by their files
    label_a, label_b = (a.name, b.name) if a.name != b.name else (args.a, args.b)
    print(f"{label_a} and {label_b}: {verdict} ({scope})")
    if failing:
        print(_table(failing, label_a, label_b))
    if notes:
        print(("they also differ" if failing else "equivalent only up to Adam eps / weight decay:")
              + " in these eps / weight-decay invariants (convert moves eps and wd with theta, which keeps "
              "them; --strict makes them count):")
        print(_table(notes, label_a, label_b))
    only = [k for k in ir.BLOCK_KINDS if (a.block(k) is None) != (b.block(k) is None)]
    if only:
        print(f"not compared (declared by one spec only): {', '.join(only)}", file=sys.stderr)
    return 1 if failing else 0


def _delta(d: Difference) -> str:
    if OO in (d.a, d.b, -d.a, -d.b):
        return "-"
    return fmt_exponent(d.b - d.a)


def _table(diffs: list[Difference], name_a: str, name_b: str) -> str:
    head = ["class", "optimizer", "invariant", name_a, name_b, "B - A"]
    rows = [[d.where, d.optimizer, d.invariant, fmt_exponent(d.a), fmt_exponent(d.b), _delta(d)] for d in diffs]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])

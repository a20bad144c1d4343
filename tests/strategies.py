"""Hypothesis strategies that generate valid `ir.Spec` objects in canonical
order (widths before depth, blocks and rules in the printer's order), with
comments, hyperparameters and optionally an `extends` reference.

Every generated spec passes `resolve.parse_and_validate` once printed: the
generators avoid, by construction, what the validator rejects (division by a
zero constant, a symbol in an exponent or a hyperparameter, sqrt of a
negative constant, a zero or negative constant rule, names that are keywords).
Other test modules may import these; `strip_spans` compares IRs up to spans.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

from hypothesis import strategies as st

from mupspec import ir
from mupspec.resolve import KEYWORDS, RESERVED, constant_value

_NOT_NAMES = set(KEYWORDS) | set(RESERVED)

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in _NOT_NAMES)

# Comment text as the parser keeps it: what follows `#`, trailing blanks
# dropped; the printer writes `# text`, so it starts with a space (or is empty).
_comment_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
comment_texts = st.one_of(
    st.just(""),
    st.text(_comment_chars, min_size=1, max_size=20).map(lambda t: " " + t.rstrip() if t.strip() else ""),
)
comment_lists = st.lists(comment_texts, max_size=2).map(tuple)
notes = st.none() | comment_texts

# A quoted string: anything on one line (quotes and backslashes are escaped).
quoted = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)


@st.composite
def numbers(draw, positive: bool = False) -> ir.Num:
    """A finite decimal literal: k / (2^a 5^b)."""
    numerator = draw(st.integers(1 if positive else 0, 10**6))
    denominator = 2 ** draw(st.integers(0, 3)) * 5 ** draw(st.integers(0, 3))
    return ir.Num.of(Fraction(numerator, denominator))


small_exponents = st.one_of(
    st.integers(0, 4).map(ir.Num.of),
    st.integers(1, 4).map(lambda k: ir.Neg(operand=ir.Num.of(k))),
    st.integers(1, 3).map(lambda k: ir.BinOp(op="/", left=ir.Num.of(1), right=ir.Num.of(2 * k))),
    st.integers(1, 3).map(lambda k: ir.Neg(operand=ir.BinOp(op="/", left=ir.Num.of(1), right=ir.Num.of(2 * k)))),
)


@lru_cache(maxsize=None)  # building a recursive strategy is costly; reuse it
def expressions(symbols: tuple[str, ...], max_leaves: int = 6):
    """Expressions over `symbols` (constants only when it is empty) that the
    validator accepts wherever such symbols are allowed."""
    syms = st.sampled_from(symbols).map(lambda n: ir.Sym(name=n)) if symbols else st.nothing()
    atoms = st.one_of(numbers(), syms)

    def extend(children):
        # A divisor, a base raised to a negative power, or a sqrt argument
        # must not be a constant that is zero (or negative, for sqrt): take
        # a positive number or an expression with a symbol in it.
        symbolic = st.tuples(syms, st.sampled_from("+*/"), children).map(
            lambda t: ir.BinOp(op=t[1], left=t[0], right=t[2]) if _has_symbol(t[2]) or t[1] != "/" else t[0])
        safe = st.one_of(numbers(positive=True), syms, symbolic)
        return st.one_of(
            children.map(lambda e: ir.Neg(operand=e)),
            st.tuples(st.sampled_from("+-*"), children, children).map(
                lambda t: ir.BinOp(op=t[0], left=t[1], right=t[2])),
            st.tuples(children, safe).map(lambda t: ir.BinOp(op="/", left=t[0], right=t[1])),
            st.tuples(safe, small_exponents).map(lambda t: ir.BinOp(op="^", left=t[0], right=t[1])),
            safe.map(lambda e: ir.Call(func="sqrt", arg=e)),
            st.tuples(st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)).map(
                lambda t: ir.MinMax(func=t[0], args=tuple(t[1]))),
        )

    return st.recursive(atoms, extend, max_leaves=max_leaves)


def _has_symbol(expr) -> bool:
    if isinstance(expr, ir.Sym):
        return True
    return any(_has_symbol(getattr(expr, f)) for f in ("operand", "arg", "left", "right") if hasattr(expr, f))


def _acceptable_rule_value(field: str, expr) -> bool:
    value = constant_value(expr)
    if value is None:
        return True
    return value > 0 or (value == 0 and field.startswith(("init.", "wd.")))


@st.composite
def rules(draw, kind: str, symbols: tuple[str, ...]) -> tuple[ir.Rule, ...]:
    fields = [f for f in ir.BLOCK_FIELDS[kind] if draw(st.booleans())]
    if "init.var" in fields and "init.std" in fields:
        fields.remove(draw(st.sampled_from(["init.var", "init.std"])))
    out = []
    for field in fields:  # BLOCK_FIELDS order is the canonical order
        value = draw(expressions(symbols))
        if not _acceptable_rule_value(field, value):
            value = ir.Num.of(1)
        out.append(ir.Rule(field=field, value=value, comments=draw(comment_lists), note=draw(notes)))
    return tuple(out)


@st.composite
def blocks(draw, symbols: tuple[str, ...], fan_free: tuple[str, ...]) -> tuple[ir.Block, ...]:
    kinds = [k for k in ir.BLOCK_KINDS if draw(st.booleans())]
    out = []
    for kind in kinds:
        syms = fan_free if kind in ("attention", "residual") else symbols
        out.append(ir.Block(kind=kind, rules=draw(rules(kind, syms)), comments=draw(comment_lists),
                            note=draw(notes), end_comments=draw(comment_lists)))
    return tuple(out)


@st.composite
def specs(draw, with_extends: bool = True) -> ir.Spec:
    """A valid spec as `parse_and_validate` returns it (spans aside)."""
    declared = draw(st.lists(names, min_size=0, max_size=6, unique=True))
    n_width = draw(st.integers(0, min(3, len(declared))))
    widths, rest = declared[:n_width], declared[n_width:]
    if not widths:  # the width is then `n` (resolve.DEFAULT_WIDTH): nothing else may be called so
        rest = [name for name in rest if name != "n"]
    depth = rest[0] if rest and draw(st.booleans()) else None
    hyper_names = rest[1:] if depth else rest
    dims = []
    if widths:
        # a later width symbol may be derived: a fixed size, or a ratio of the first
        derived = [None] + [draw(st.none() | numbers(positive=True) | numbers(positive=True).map(
            lambda k, w=widths[0]: ir.BinOp(op="*", left=k, right=ir.Sym(name=w)))) for _ in widths[1:]]
        dims.append(ir.Dim(role="width", names=tuple(widths), values=tuple(derived) if any(derived) else (),
                           comments=draw(comment_lists), note=draw(notes)))
    if depth:
        dims.append(ir.Dim(role="depth", names=(depth,), comments=draw(comment_lists), note=draw(notes)))
    hypers = tuple(ir.Hyper(name=h, value=draw(expressions(())), comments=draw(comment_lists), note=draw(notes))
                   for h in hyper_names)
    scale = tuple(widths or ["n"]) + ((depth,) if depth else ()) + tuple(hyper_names)
    extends = None
    if with_extends and draw(st.booleans()):
        extends = draw(st.one_of(names.map(lambda t: ir.Ref(target=t)),
                                 quoted.map(lambda t: ir.Ref(target=t, is_path=True))))
    ties = (ir.Tie(embedding=draw(st.sampled_from(["input", "token_embedding"])),
                   readout=draw(st.sampled_from(["output", "readout"])), comments=draw(comment_lists),
                   note=draw(notes)),) if draw(st.booleans()) else ()
    return ir.Spec(
        name=draw(names), title=draw(st.none() | quoted), extends=extends, dims=tuple(dims), hypers=hypers, ties=ties,
        blocks=draw(blocks(("fan_in", "fan_out") + scale, scale)),
        comments=draw(comment_lists), note=draw(notes), end_comments=draw(comment_lists),
    )


def strip_spans(value):
    """A model_dump() (or any nest of dicts/lists) without its `span` fields."""
    if isinstance(value, dict):
        return {k: strip_spans(v) for k, v in value.items() if k != "span"}
    if isinstance(value, (list, tuple)):
        return [strip_spans(v) for v in value]
    return value


def same_ignoring_spans(a: ir.Node, b: ir.Node) -> bool:
    return strip_spans(a.model_dump()) == strip_spans(b.model_dump())

"""Stage 2: the typed IR of a `.mup` spec.

Produced by `parser.parse_spec` (as written) and `resolve.resolve_spec` (bases
merged, validated); consumed by every later stage. Every node is an immutable
pydantic model that forbids unknown fields and carries its source span.
Numbers are exact rationals (numerator/denominator), never floats, so a JSON
dump round-trips exactly.
"""

from __future__ import annotations

import operator
from fractions import Fraction
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def trusted(cls, **values):
        """A node from values the parser built itself, already of the field
        types (str, int, tuples of nodes): pydantic's validation, a few us a
        node and most of the time of parsing a large spec, is skipped. The
        result is what validating the same values gives: equal, with the same
        `__dict__` (every field, in field order) and `model_fields_set`.
        Nodes built with the same fields share that set (the nodes are
        frozen; `model_copy` copies it): a spec at the limits has a million
        nodes, and every set is one more object for the garbage collector."""
        template = _TEMPLATES.get(cls)
        if template is None:  # per class: every field in order, with its default
            template = _TEMPLATES[cls] = {
                name: None if f.is_required() else f.get_default(call_default_factory=True)
                for name, f in cls.model_fields.items()}
        key = (cls, *values)
        fields_set = _FIELDS_SETS.get(key)
        if fields_set is None:
            fields_set = _FIELDS_SETS[key] = set(values)
        node = _new(cls)
        _set(node, "__dict__", {**template, **values})
        _set(node, "__pydantic_fields_set__", fields_set)
        _set(node, "__pydantic_extra__", None)
        _set(node, "__pydantic_private__", None)
        return node


_TEMPLATES: dict[type, dict] = {}
_FIELDS_SETS: dict[tuple, set] = {}
_new, _set = object.__new__, object.__setattr__


class Span(Node):
    """1-based, end-exclusive source range; `file` is None for in-memory text."""

    file: str | None = None
    line: int
    column: int
    end_line: int
    end_column: int


NO_SPAN = Span(line=0, column=0, end_line=0, end_column=0)
_SPAN_FIELDS = set(Span.model_fields)  # every field given (shared, as in Node.trusted)


def span_at(file: str | None, line: int, column: int, end_line: int, end_column: int) -> Span:
    """`Span.trusted(file=..., ...)` for the parser's hottest call (a spec at
    the limits has half a million spans): the same node, built directly."""
    node = _new(Span)
    _set(node, "__dict__", {"file": file, "line": line, "column": column, "end_line": end_line,
                            "end_column": end_column})
    _set(node, "__pydantic_fields_set__", _SPAN_FIELDS)
    _set(node, "__pydantic_extra__", None)
    _set(node, "__pydantic_private__", None)
    return node


# ---------------------------------------------------------------- expressions


class Num(Node):
    """A non-negative literal (`-` is a `Neg` node), always a finite decimal
    as written in the source: 2, 0.5, 1.25."""

    kind: Literal["num"] = "num"
    numerator: int = Field(ge=0)
    denominator: int = Field(1, gt=0)
    span: Span = NO_SPAN

    @model_validator(mode="after")
    def _finite_decimal(self) -> "Num":
        den = Fraction(self.numerator, self.denominator).denominator
        for p in (2, 5):
            while den % p == 0:
                den //= p
        if den != 1:
            raise ValueError("a literal must be a finite decimal")
        return self

    @property
    def value(self) -> Fraction:
        return Fraction(self.numerator, self.denominator)

    @classmethod
    def of(cls, value: Fraction | int, span: Span = NO_SPAN) -> "Num":
        value = Fraction(value)
        return cls(numerator=value.numerator, denominator=value.denominator, span=span)


class Sym(Node):
    """A name: fan_in, fan_out, a width or depth symbol, or a hyperparameter."""

    kind: Literal["sym"] = "sym"
    name: str
    span: Span = NO_SPAN


class Neg(Node):
    kind: Literal["neg"] = "neg"
    operand: "Expr"
    span: Span = NO_SPAN


class BinOp(Node):
    kind: Literal["binop"] = "binop"
    op: Literal["+", "-", "*", "/", "^"]
    left: "Expr"
    right: "Expr"
    span: Span = NO_SPAN


class Call(Node):
    kind: Literal["call"] = "call"
    func: Literal["sqrt"]
    arg: "Expr"
    span: Span = NO_SPAN


class MinMax(Node):
    """`min(a, b, ...)` or `max(a, b, ...)`: two or more arguments."""

    kind: Literal["minmax"] = "minmax"
    func: Literal["min", "max"]
    args: tuple["Expr", ...] = Field(min_length=2)
    span: Span = NO_SPAN


Expr = Annotated[Union[Num, Sym, Neg, BinOp, Call, MinMax], Field(discriminator="kind")]

for _model in (Neg, BinOp, Call, MinMax):
    _model.model_rebuild()


def children(expr) -> tuple:
    """The sub-expressions of a node, left to right."""
    if isinstance(expr, Neg):
        return (expr.operand,)
    if isinstance(expr, Call):
        return (expr.arg,)
    if isinstance(expr, BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, MinMax):
        return expr.args
    return ()


def symbols_in(expr):
    """Every `Sym` of an expression, left to right."""
    if isinstance(expr, Sym):
        yield expr
    for child in children(expr):
        yield from symbols_in(child)

# The four arithmetic operators of the language, in any number domain (`^` is
# left to each domain: its rules differ -- exact roots, floats, sympy).
ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def fold(expr: "Expr", *, num, sym, neg, sqrt, binary, choose):
    """Evaluate an expression bottom-up in some value domain (floats, exact
    fractions, sympy): `num(node)` and `sym(node)` give the leaves' values,
    `neg(value, node)`, `sqrt(value, node)`, `binary(node, left, right)` and
    `choose(node, values)` (min/max) combine them (the node carries the
    operator and the span for errors). Spec text is never evaluated: this
    walks the tree the parser built."""
    def go(e):
        if isinstance(e, Num):
            return num(e)
        if isinstance(e, Sym):
            return sym(e)
        if isinstance(e, Neg):
            return neg(go(e.operand), e)
        if isinstance(e, Call):
            return sqrt(go(e.arg), e)
        if isinstance(e, MinMax):
            return choose(e, [go(a) for a in e.args])
        return binary(e, go(e.left), go(e.right))
    return go(expr)


# ---------------------------------------------------------------- declarations

# The layer classes of an abc-parametrization (TP5 App. B), plus the two
# blocks that are not parameter classes: attention logits and residual branches.
LayerKind = Literal["input", "hidden", "output", "bias", "norm"]
LAYER_KINDS: tuple[str, ...] = ("input", "hidden", "output", "bias", "norm")

# Sub-roles: named parts of a Transformer, each a member of one class. A
# sub-role block states only what differs from its class; every other rule
# (and a sub-role without a block) follows the class (`role_rule`).
SUBROLES: dict[str, str] = {
    "token_embedding": "input", "position_embedding": "input",
    "query": "hidden", "key": "hidden", "value": "hidden", "attn_out": "hidden",
    "mlp_in": "hidden", "mlp_out": "hidden", "router": "hidden", "experts": "hidden",
    "readout": "output", "norm_bias": "bias", "norm_gain": "norm",
}
BlockKind = Literal["input", "hidden", "output", "bias", "norm",
                    "token_embedding", "position_embedding", "query", "key", "value", "attn_out",
                    "mlp_in", "mlp_out", "router", "experts", "readout", "norm_bias", "norm_gain",
                    "attention", "residual", "alignment"]
BLOCK_KINDS: tuple[str, ...] = LAYER_KINDS + tuple(SUBROLES) + ("attention", "residual", "alignment")

# Optimizer families (docs/checking.md, "Optimizer families"): sgd; adam (and
# AdamW); adafactor (factored second moment, update scaled by the parameter's
# RMS); lion (sign of a momentum, also sign-SGD); muon (orthogonalized momentum
# on the classes with an `lr.muon` rule, AdamW's rules on the rest).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adafactor", "lion", "muon")
# What a spec without any LR rule covers (LR 1 everywhere).
DEFAULT_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
# Muon orthogonalizes matrices: vectors (bias, norm gains) stay on AdamW.
MATRIX_KINDS: tuple[str, ...] = ("input", "hidden", "output")


def _family_fields(kinds_of_family) -> tuple[str, ...]:
    return tuple(f"{group}.{o}" for group in ("lr", "wd") for o in OPTIMIZERS if kinds_of_family(o))


# Which fields each block accepts. `init.var` and `init.std` are two spellings
# of one rule (a block may give only one); a value of 0 means zero init.
_PARAM_FIELDS = ("init.var", "init.std", "mult") + _family_fields(lambda o: True) + ("eps.adam",)
_VECTOR_FIELDS = ("init.var", "init.std", "mult") + _family_fields(lambda o: o != "muon") + ("eps.adam",)
BLOCK_FIELDS: dict[str, tuple[str, ...]] = {
    "input": _PARAM_FIELDS,
    "hidden": _PARAM_FIELDS,
    "output": _PARAM_FIELDS,
    "bias": _VECTOR_FIELDS,
    # Norm gains start at 1 by convention; their init is not a rule.
    "norm": _VECTOR_FIELDS[2:],
    # head_dim: the number of terms q.k sums (a size, default the first width symbol).
    "attention": ("head_dim", "logit"),
    # init.var / init.std: an extra factor on the init of each branch's LAST
    # layer only (GPT-2 / Megatron: std/sqrt(2L) on the output projections);
    # layers: the number of weight layers per branch (TP6's block depth).
    "residual": ("layers", "init.var", "init.std", "mult") + _family_fields(lambda o: True) + ("eps.adam",),
    # The alignment assumption of the width calculus (docs/checking.md §2):
    # update = exponent of ΔW·x's coherent sum (1: full, 1/2: none),
    # readout = the same for W_out·Δx.
    "alignment": ("update", "readout"),
}
BLOCK_FIELDS |= {role: BLOCK_FIELDS[parent] for role, parent in SUBROLES.items()}


def role_class(role: str) -> str:
    """The class of a sub-role; a class is its own."""
    return SUBROLES.get(role, role)


class Commented(Node):
    """Comments travel with the node they precede (`comments`, one entry per
    `#` line, text after the `#`) or end the node's first line (`note`), so
    that the formatter can reorder declarations without losing a word."""

    comments: tuple[str, ...] = ()
    note: str | None = None


class Rule(Commented):
    """`field = value` inside a block, e.g. `lr.adam = 1/fan_in`."""

    field: str
    value: Expr
    span: Span = NO_SPAN


class Block(Commented):
    kind: BlockKind
    rules: tuple[Rule, ...] = ()
    end_comments: tuple[str, ...] = ()
    span: Span = NO_SPAN

    def rule(self, field: str) -> Rule | None:
        return next((r for r in self.rules if r.field == field), None)


class Dim(Commented):
    """`width n, d_ff = 4*n, d_head = 64` or `depth L`: the symbols that grow.
    `values` is empty, or parallel to `names`: None for a free symbol (it
    grows), an expression of the symbols before it for a derived one (a
    fixed ratio, or a fixed size when it has no symbol)."""

    role: Literal["width", "depth"]
    names: tuple[str, ...]
    values: tuple[Union[Expr, None], ...] = ()
    span: Span = NO_SPAN

    def value(self, name: str) -> "Expr | None":
        return self.values[self.names.index(name)] if self.values else None


class Hyper(Commented):
    """A named tunable constant with its default value: `hyper alpha_out = 1`."""

    name: str
    value: Expr
    span: Span = NO_SPAN


class Tie(Commented):
    """`tie token_embedding, readout`: one tensor is both (microsoft/mup's
    MuSharedReadout): it keeps the embedding's init and optimizer group, and
    the readout's multiplier applies in the readout's forward."""

    embedding: str
    readout: str
    span: Span = NO_SPAN


class Ref(Node):
    """A reference to a base spec: by name (`sp`, looked up as `sp.mup` beside
    the file) or by a quoted relative path."""

    target: str
    is_path: bool = False
    span: Span = NO_SPAN


class Spec(Commented):
    """A whole `.mup` file. As parsed, `extends` may name a base; after
    `resolve.resolve_spec` the base's declarations are merged in, `extends`
    is kept for reference, and `resolved` is True. `comments` are the lines
    above the `parametrization` header; `end_comments` close the file."""

    name: str
    title: str | None = None
    extends: Ref | None = None
    dims: tuple[Dim, ...] = ()
    hypers: tuple[Hyper, ...] = ()
    ties: tuple[Tie, ...] = ()
    blocks: tuple[Block, ...] = ()
    end_comments: tuple[str, ...] = ()
    resolved: bool = False
    span: Span = NO_SPAN

    @property
    def widths(self) -> tuple[str, ...]:
        return next((d.names for d in self.dims if d.role == "width"), ())

    def width_value(self, name: str) -> "Expr | None":
        """The definition of a derived width symbol; None for a free one."""
        dim = next((d for d in self.dims if d.role == "width"), None)
        return dim.value(name) if dim is not None and name in dim.names else None

    @property
    def free_widths(self) -> tuple[str, ...]:
        """The width symbols that grow independently (the user gives their sizes)."""
        return tuple(w for w in self.widths if self.width_value(w) is None)

    @property
    def subroles(self) -> tuple[str, ...]:
        """The sub-roles this spec has a block for, in canonical order."""
        return tuple(r for r in SUBROLES if self.block(r) is not None)

    @property
    def depth(self) -> str | None:
        return next((d.names[0] for d in self.dims if d.role == "depth"), None)

    def block(self, kind: str) -> Block | None:
        return next((b for b in self.blocks if b.kind == kind), None)

    def hyper(self, name: str) -> Hyper | None:
        return next((h for h in self.hypers if h.name == name), None)


# ---------------------------------------------------------------- defaults

_ONE = Num(numerator=1)


def _inv(name: str) -> Expr:
    return BinOp(op="/", left=_ONE, right=Sym(name=name))


# The value a rule takes when a block does not give it (docs/language.md).
# init: Var = 1/fan_in (He/LeCun, PyTorch's scale); everything else 1.
DEFAULT_RULES: dict[str, Expr] = {
    "init.var": _inv("fan_in"),
    "mult": _ONE,
    "lr.sgd": _ONE, "lr.adam": _ONE,
    "wd.sgd": _ONE, "wd.adam": _ONE,
    "eps.adam": _ONE,
    "layers": _ONE,
    "update": _ONE, "readout": _ONE,
}
DEFAULT_RULES |= {f"{group}.{o}": _ONE for group in ("lr", "wd") for o in OPTIMIZERS}


def given_rule(block: Block | None, field: str) -> Expr | None:
    """The rule a block states for `field` (init.var answered from init.std)."""
    if block is None:
        return None
    if field == "init.var":
        std = block.rule("init.std")
        if std is not None:
            return BinOp(op="^", left=std.value, right=Num(numerator=2))
    rule = block.rule(field)
    return rule.value if rule is not None else None


def rule_value(block: Block, field: str, widths: tuple[str, ...] = ("n",)) -> Expr:
    """The expression a block gives `field`, or its default. `init.var` is
    answered from `init.std` (squared) when the block gives the std; the
    attention head size defaults to the first width symbol, the logit to
    1/sqrt(head_dim)."""
    given = given_rule(block, field)
    if given is not None:
        return given
    if field == "head_dim":
        return Sym(name=widths[0])
    if field == "logit":
        return BinOp(op="/", left=_ONE, right=Call(func="sqrt", arg=rule_value(block, "head_dim", widths)))
    return DEFAULT_RULES[field]


def answering_block(spec: Spec, role: str, field: str) -> Block | None:
    """The block whose rule for `field` a class or sub-role takes: a sub-role's
    own block where it states the field, else its class's block (None when the
    spec has none: the language default)."""
    if role in SUBROLES and given_rule(spec.block(role), field) is not None:
        return spec.block(role)
    return spec.block(role_class(role))


def role_rule(spec: Spec, role: str, field: str) -> Expr:
    """The rule of a class or sub-role: a sub-role's own block, else its
    class's block, else the language default."""
    kind = role_class(role)
    return rule_value(answering_block(spec, role, field) or Block(kind=kind), field, spec.widths)


def subrole_differs(spec: Spec, role: str, field: str) -> bool:
    """Whether a sub-role's rule for `field` is not its class's rule, as
    written (the runtime refuses an LR/wd/eps difference on a slice of a
    shared tensor: one tensor has one optimizer group)."""
    own = given_rule(spec.block(role), field)
    return own is not None and strip(own) != strip(role_rule(spec, SUBROLES[role], field))


def strip(expr) -> object:
    """An expression's structure without spans (for comparisons)."""
    return (type(expr).__name__, getattr(expr, "op", None) or getattr(expr, "func", None),
            getattr(expr, "name", None), getattr(expr, "numerator", None), getattr(expr, "denominator", None),
            tuple(strip(c) for c in children(expr)))


def optimizers(spec: Spec) -> tuple[str, ...]:
    """The optimizer families a spec covers: those named by an `lr.` rule in
    any block; a spec with no LR rule at all covers SGD and Adam (LR 1)."""
    named = {r.field.split(".", 1)[1] for b in spec.blocks for r in b.rules if r.field.startswith("lr.")}
    return tuple(o for o in OPTIMIZERS if o in named) or DEFAULT_OPTIMIZERS

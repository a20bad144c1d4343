"""Stage 2b: semantic validation and base-spec resolution.

Takes the parser's output, reports every semantic error at once (unknown
block, field or symbol with "did you mean", duplicates, symbols that mean
nothing where they stand, constant division by zero, bad exponents, missing
or cyclic bases), and returns a validated `ir.Spec`. `load_spec` also merges
the chain of `extends` bases, rule by rule, into one resolved spec.
"""

from __future__ import annotations

import bisect
import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from mupspec import bundled, ir
from mupspec.errors import Diagnostic, DiagnosticBag, MupError, decode_text, did_you_mean
from mupspec.parser import _RawBlock, gc_paused, parse_spec

FAN_SYMBOLS = ("fan_in", "fan_out")
RESERVED = FAN_SYMBOLS + ("sqrt", "min", "max")
KEYWORDS = ("parametrization", "extends", "width", "depth", "hyper", "tie")
TIE_EMBEDDINGS = ("input", "token_embedding")
TIE_READOUTS = ("output", "readout")
DEFAULT_WIDTH = "n"


# ---------------------------------------------------------------- public API


def parse_and_validate(text: str, file: str | None = None, base_symbols: "Symbols | None" = None) -> ir.Spec:
    """Parse one file and validate it on its own (no base merged).

    `base_symbols` are the widths/depth/hypers inherited from a base spec, so
    that a derived file may use them without redeclaring.
    """
    spec, raw_blocks = parse_spec(text, file)
    bag = DiagnosticBag()
    blocks = _validate_blocks(raw_blocks, bag)
    spec = spec.model_copy(update={"blocks": blocks})
    _validate_declarations(spec, text, bag)
    symbols = Symbols.of(spec, base_symbols)
    if not spec.widths and not (base_symbols and base_symbols.widths):
        _check_default_width_free(spec, text, bag)
    _validate_hypers(spec, symbols, bag)
    _validate_width_values(spec, text, bag)
    _validate_ties(spec, text, bag)
    for block in spec.blocks:
        for rule in block.rules:
            _validate_expr(rule.value, block.kind, symbols, bag)
            _validate_rule_value(rule, bag)
    bag.raise_if_any()
    return spec


def load_spec(path: str | Path) -> ir.Spec:
    """Read, validate and resolve a spec file and its chain of bases."""
    return _load(Path(path), chain=())


def load_expected(expect) -> ir.Spec | None:
    """`expect=` of coord_check / verify / assert_*: None, an ir.Spec, a path,
    or a name: a parametrization class (`muP`, `SP`, `NTK`, `mean-field`,
    ...; bundled.CLASSES) or a bundled spec name."""
    if expect is None or isinstance(expect, ir.Spec):
        return expect
    if isinstance(expect, Path):
        return load_spec(expect)
    return load_spec(bundled.expected(str(expect)))


def parse_and_resolve(text: str, file: str | None = None) -> ir.Spec:
    """Like load_spec, for text in memory (bases are looked up beside `file`)."""
    return _resolve_text(text, file, chain=())


def parse_as_written(text: str, file: str | None = None) -> ir.Spec:
    """The spec as written, base not merged (what `fmt` prints), validated
    with the symbols its base declares; the base chain must resolve."""
    spec, _ = parse_spec(text, file)
    base = _load_base(spec, file, ())
    return parse_and_validate(text, file, Symbols.of(base) if base else None)


def canonical(spec: ir.Spec) -> ir.Spec:
    """Blocks and rules in canonical order (the order the printer uses)."""
    blocks = sorted(spec.blocks, key=lambda b: ir.BLOCK_KINDS.index(b.kind))
    blocks = [b.model_copy(update={"rules": tuple(sorted(
        b.rules, key=lambda r: ir.BLOCK_FIELDS[b.kind].index(r.field)))}) for b in blocks]
    dims = sorted(spec.dims, key=lambda d: d.role != "width")
    return spec.model_copy(update={"blocks": tuple(blocks), "dims": tuple(dims)})


# ---------------------------------------------------------------- resolution


def _load(path: Path, chain: tuple[Path, ...], via: ir.Span | None = None) -> ir.Spec:
    """`via`: the `extends` that names this file, where read errors point."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MupError(Diagnostic(f"no such file: {path}", via, "check the path")) from None
    except (OSError, ValueError) as err:
        raise MupError(Diagnostic(f"cannot read {path}: {getattr(err, 'strerror', None) or err}", via)) from None
    return _resolve_text(decode_text(data, str(path), via), str(path), chain)


def _resolve_text(text: str, file: str | None, chain: tuple[Path, ...]) -> ir.Spec:
    with gc_paused():  # see gc_paused: a large spec's validation allocates as much as its parse
        return _resolve_text_now(text, file, chain)


def _resolve_text_now(text: str, file: str | None, chain: tuple[Path, ...]) -> ir.Spec:
    spec, _ = parse_spec(text, file)  # syntax first: the base's name is in the header
    base = _load_base(spec, file, chain)
    spec = parse_and_validate(text, file, Symbols.of(base) if base else None)
    merged = _merge(base, spec) if base else _with_defaults(spec)
    if base is not None:
        _check_merged(base, spec, merged, text)
    _check_subrole_classes(merged)
    return canonical(merged).model_copy(update={"resolved": True})


def _check_merged(base: ir.Spec, spec: ir.Spec, merged: ir.Spec, text: str) -> None:
    """What only shows once merged: a derived name that clashes with a base
    name of another kind, and inherited rules using a symbol the derived
    file's own `width`/`depth` declaration no longer declares."""
    bag = DiagnosticBag()
    kinds = {n: "width symbol" for n in merged.widths} | ({merged.depth: "depth symbol"} if merged.depth else {})
    for hyper in spec.hypers:
        if hyper.name in kinds:
            bag.error(f"`{hyper.name}` is already the base spec's {kinds[hyper.name]}", _name_spans(text, hyper.span)[0],
                      "pick another name for the hyperparameter")
    for dim in spec.dims:
        for name, span in zip(dim.names, _name_spans(text, dim.span)):
            if base.hyper(name) is not None:
                bag.error(f"`{name}` is already a hyperparameter of the base spec", span, "pick another name")
    known = set(Symbols.of(merged).all())
    used = {s.name for b in merged.blocks for r in b.rules for s in _symbols_in(r.value)}
    for name in sorted(used - known):
        where = next((d for d in spec.dims if name in base.widths + ((base.depth,) if base.depth else ())), None)
        bag.error(f"the base spec's rules use `{name}`, which this spec no longer declares",
                  where.span if where else spec.span,
                  f"keep `{name}` in the declaration (e.g. `width {name}, ...`) or override every rule using it")
    bag.raise_if_any()


def _load_base(spec: ir.Spec, file: str | None, chain: tuple[Path, ...]) -> ir.Spec | None:
    """The resolved base spec `spec` extends, or None; errors point at `extends`."""
    if spec.extends is None:
        return None
    try:
        base_path = _base_path(spec.extends, file)
        here = Path(file).resolve() if file else None
        found = base_path.is_file()
        if found and (base_path.resolve() in chain or base_path.resolve() == here):
            cycle = " -> ".join(p.name for p in chain + (here or base_path, base_path))
            raise MupError(Diagnostic(f"cyclic base spec: {cycle}", spec.extends.span,
                                      "a spec cannot extend itself, directly or through its bases"))
    except (OSError, ValueError, RuntimeError) as err:  # a path the OS refuses (NUL, too long, loop)
        raise MupError(Diagnostic(f"cannot use base spec `{spec.extends.target}`: {err}",
                                  spec.extends.span, "give a relative path to a .mup file")) from None
    if not found:
        raise MupError(Diagnostic(f"base spec `{spec.extends.target}` not found (looked for {base_path})",
                                  spec.extends.span,
                                  "name a spec in the same folder or a bundled one (`extends sp`; "
                                  "`mupspec specs` lists them), or give a quoted path"))
    return _load(base_path, chain + ((here,) if here else ()), spec.extends.span)


def _base_path(ref: ir.Ref, file: str | None) -> Path:
    folder = Path(file).parent if file else Path.cwd()
    path = folder / (ref.target if ref.is_path else f"{ref.target}.mup")
    if not ref.is_path and not path.is_file() and (bundled.DIR / path.name).is_file():
        return bundled.DIR / path.name  # `extends mup_table8` from any folder: the bundled spec
    return path


def _with_defaults(spec: ir.Spec) -> ir.Spec:
    if spec.widths:
        return spec
    default = ir.Dim(role="width", names=(DEFAULT_WIDTH,))
    return spec.model_copy(update={"dims": (default,) + spec.dims})


def _merge(base: ir.Spec, spec: ir.Spec) -> ir.Spec:
    """The derived spec overrides its base rule by rule; declarations it does
    not repeat (widths, depth, hypers, blocks, rules) are inherited."""
    dims = {d.role: d for d in base.dims} | {d.role: d for d in spec.dims}
    hypers = {h.name: h for h in base.hypers} | {h.name: h for h in spec.hypers}
    ties = spec.ties or base.ties
    blocks = {b.kind: b for b in base.blocks}
    for block in spec.blocks:
        old = blocks.get(block.kind)
        if old is None:
            blocks[block.kind] = block
            continue
        rules = {r.field: r for r in old.rules}
        for rule in block.rules:
            rules.pop("init.std" if rule.field == "init.var" else "init.var" if rule.field == "init.std" else "", None)
            rules[rule.field] = rule
        blocks[block.kind] = block.model_copy(update={"rules": tuple(rules.values())})
    merged = spec.model_copy(update={"dims": tuple(dims.values()), "hypers": tuple(hypers.values()),
                                     "ties": ties, "blocks": tuple(blocks.values())})
    return _with_defaults(merged)


# ---------------------------------------------------------------- validation


class Symbols:
    """The names an expression may use, by origin."""

    def __init__(self, widths: tuple[str, ...], depth: str | None, hypers: tuple[str, ...]):
        self.widths, self.depth, self.hypers = widths, depth, hypers

    @classmethod
    def of(cls, spec: ir.Spec, base: "Symbols | None" = None) -> "Symbols":
        widths = spec.widths or (base.widths if base else ()) or (DEFAULT_WIDTH,)
        depth = spec.depth or (base.depth if base else None)
        hypers = tuple(dict.fromkeys((base.hypers if base else ()) + tuple(h.name for h in spec.hypers)))
        return cls(widths, depth, hypers)

    def all(self) -> tuple[str, ...]:
        return FAN_SYMBOLS + self.widths + ((self.depth,) if self.depth else ()) + self.hypers


def _validate_blocks(raw_blocks: list[_RawBlock], bag: DiagnosticBag) -> tuple[ir.Block, ...]:
    seen: dict[str, ir.Span] = {}
    blocks = []
    for raw in raw_blocks:
        if raw.kind not in ir.BLOCK_KINDS:
            bag.error(f"unknown block `{raw.kind}`", raw.kind_span,
                      did_you_mean(raw.kind, ir.BLOCK_KINDS) or f"blocks are: {', '.join(ir.BLOCK_KINDS)}")
            continue
        if raw.kind in seen:
            bag.error(f"duplicate block `{raw.kind}`", raw.kind_span,
                      f"`{raw.kind}` is already defined at line {seen[raw.kind].line}; merge the two blocks")
            continue
        seen[raw.kind] = raw.span
        rules = _validate_rules(raw.kind, raw.rules, bag)
        blocks.append(ir.Block(kind=raw.kind, rules=rules, span=raw.span, comments=raw.comments,
                               note=raw.note, end_comments=raw.end_comments))
    return tuple(blocks)


def _validate_rules(kind: str, rules: tuple[ir.Rule, ...], bag: DiagnosticBag) -> tuple[ir.Rule, ...]:
    allowed = ir.BLOCK_FIELDS[kind]
    seen: dict[str, ir.Rule] = {}
    kept = []
    for rule in rules:
        if rule.field not in allowed:
            bag.error(_field_message(kind, rule.field), _field_span(rule), _field_hint(kind, rule.field))
            continue
        key = "init" if rule.field in ("init.var", "init.std") else rule.field
        if key in seen:
            first = seen[key]
            what = "init is given twice" if key == "init" else f"duplicate rule `{rule.field}`"
            bag.error(f"{what} in `{kind}`", _field_span(rule),
                      f"first given as `{first.field}` at line {first.span.line}; keep one")
            continue
        seen[key] = rule
        kept.append(rule)
    return tuple(kept)


def _field_span(rule: ir.Rule) -> ir.Span:
    s = rule.span  # built directly: a spec can have 100,000 rules to report
    return ir.span_at(s.file, s.line, s.column, s.line, s.column + len(rule.field))


def _unknown_optimizer(field: str) -> str | None:
    group, _, opt = field.partition(".")
    return opt if group in ("lr", "wd", "eps") and opt and opt not in ir.OPTIMIZERS else None


def _field_message(kind: str, field: str) -> str:
    opt = _unknown_optimizer(field)
    if opt is not None:
        return f"unknown optimizer `{opt}` in `{field}`"
    return f"`{field}` is not a rule of `{kind}` blocks"


def _field_hint(kind: str, field: str) -> str:
    if kind == "norm" and field.startswith("init"):
        return "norm gains are initialized to 1; only mult, lr, wd and eps rules apply to `norm`"
    if kind == "attention":
        return "`attention` has one rule, `logit` (the scale of q.k, e.g. `logit = 1/n`)"
    if kind == "alignment":
        return "`alignment` has two rules, `update` and `readout` (exponents from 1/2 to 1)"
    if kind in ("bias", "norm") and field.endswith(".muon"):
        return "Muon orthogonalizes weight matrices (input, hidden, output); vectors stay on AdamW (lr.adam)"
    suggestion = did_you_mean(field, ir.BLOCK_FIELDS[kind])
    opt = _unknown_optimizer(field)
    if opt is not None:
        group = field.split(".")[0]
        known = [f"{group}.{o}" for o in ir.OPTIMIZERS if f"{group}.{o}" in ir.BLOCK_FIELDS[kind]]
        return (f"the optimizer families are {', '.join(ir.OPTIMIZERS)} (adam covers AdamW, lion covers sign-SGD); "
                f"`{kind}` accepts {', '.join(f'`{k}`' for k in known) or f'no `{group}.` rule'}")
    if field == "eps.sgd":
        return "eps is Adam's epsilon; only `eps.adam` exists"
    return suggestion or f"`{kind}` accepts: {', '.join(ir.BLOCK_FIELDS[kind])}"


def _validate_declarations(spec: ir.Spec, text: str, bag: DiagnosticBag) -> None:
    seen: dict[str, ir.Span] = {}
    roles: dict[str, ir.Dim] = {}
    for dim in spec.dims:
        if dim.role in roles:
            keyword = dim.span.model_copy(update={"end_line": dim.span.line,
                                                  "end_column": dim.span.column + len(dim.role)})
            bag.error(f"`{dim.role}` is declared twice", keyword,
                      f"first declared at line {roles[dim.role].span.line}; list every "
                      f"{dim.role} symbol in one declaration" + (", separated by commas" if dim.role == "width" else ""))
        roles[dim.role] = dim
        for name, span in zip(dim.names, _name_spans(text, dim.span)):
            _declare(name, span, seen, bag)
    for hyper in spec.hypers:
        _declare(hyper.name, _name_spans(text, hyper.span)[0], seen, bag)


_WORD_OR_SKIP = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*')


def _name_spans(text: str, decl: ir.Span) -> list[ir.Span]:
    """The spans of the names a `width`/`depth`/`hyper` declaration declares
    (the IR keeps only the declaration's span; errors point at the name).
    Falls back to the whole declaration for text the span does not match."""
    starts = _line_starts(text)
    if not 0 < decl.line <= len(starts) or not 0 < decl.end_line <= len(starts):
        return [decl] * 64
    begin = starts[decl.line - 1] + decl.column - 1
    end = starts[decl.end_line - 1] + decl.end_column - 1
    words = [m for m in _WORD_OR_SKIP.finditer(text, begin, end) if m.group()[0] not in '#"']
    spans = []
    for i, m in enumerate(words[1:], 1):  # words[0] is the keyword
        if m.group() == "hyper" or spans and words[0].group() == "hyper":
            break  # a hyper declares one name; the rest is its value
        if i > 1 and not _starts_item(text[begin:m.start()]):
            continue  # a name inside a width symbol's definition (`d_ff = 4*d_model`)
        line = bisect.bisect_right(starts, m.start())
        column = m.start() - starts[line - 1] + 1
        spans.append(ir.Span(file=decl.file, line=line, column=column, end_line=line,
                             end_column=column + len(m.group())))
    return spans + [decl] * 64


@lru_cache(maxsize=4)
def _line_starts(text: str) -> list[int]:
    """Offsets where each line starts, computed once per text (a spec with
    10,000 declarations would otherwise take quadratic time)."""
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _starts_item(before: str) -> bool:
    """Whether a word follows a top-level comma of its declaration."""
    return before.rstrip().endswith(",") and before.count("(") == before.count(")")


def _check_default_width_free(spec: ir.Spec, text: str, bag: DiagnosticBag) -> None:
    """Without a `width` declaration the width is `n`: nothing else may be `n`."""
    for decl in (*(d for d in spec.dims if d.role == "depth"), *spec.hypers):
        names = decl.names if isinstance(decl, ir.Dim) else (decl.name,)
        for name, span in zip(names, _name_spans(text, decl.span)):
            if name == DEFAULT_WIDTH:
                bag.error(f"`{name}` is the width symbol of a spec that declares no width", span,
                          f"declare the width explicitly (e.g. `width d`) to use `{name}` for something else")


def _declare(name: str, span: ir.Span, seen: dict[str, ir.Span], bag: DiagnosticBag) -> None:
    if name in RESERVED:
        bag.error(f"`{name}` is a built-in name and cannot be declared", span,
                  "fan_in, fan_out, sqrt, min and max are provided by the language")
    elif name in KEYWORDS:
        bag.error(f"`{name}` is a keyword and cannot be declared", span, "pick another name")
    elif name in seen:
        bag.error(f"`{name}` is declared twice", span, f"first declared at line {seen[name].line}")
    seen[name] = span


def _validate_hypers(spec: ir.Spec, symbols: Symbols, bag: DiagnosticBag) -> None:
    for hyper in spec.hypers:
        for sym in _symbols_in(hyper.value):
            bag.error(f"a hyperparameter's value must be a number, but `{sym.name}` is a symbol", sym.span,
                      "hyperparameters are width-independent constants, e.g. `hyper alpha_out = 2`")
        _check_constants(hyper.value, bag)


def _validate_width_values(spec: ir.Spec, text: str, bag: DiagnosticBag) -> None:
    """A derived width symbol (`d_ff = 4*d_model`, `d_head = 64`) is a
    positive expression of numbers and the width symbols declared before it
    in the same declaration; at least one width symbol must be free."""
    for dim in spec.dims:
        if dim.role != "width" or not dim.values:
            continue
        spans = _name_spans(text, dim.span)
        for i, (name, value) in enumerate(zip(dim.names, dim.values)):
            if value is None:
                continue
            before = dim.names[:i]
            for sym in ir.symbols_in(value):
                if sym.name in dim.names[i:]:
                    bag.error(f"`{name}` is defined from `{sym.name}`, which is declared after it", sym.span,
                              "a width symbol may only use the width symbols before it: reorder the declaration")
                elif sym.name not in before:
                    bag.error(f"a width symbol's size may use only numbers and earlier width symbols, "
                              f"not `{sym.name}`", sym.span,
                              f"write it from {', '.join(f'`{b}`' for b in before) or 'numbers'}, "
                              f"e.g. `{name} = 4*{before[0] if before else 'n'}` or `{name} = 64`")
            _check_constants(value, bag)
            constant = constant_value(value)
            if constant is not None and constant <= 0:
                bag.error(f"width symbol `{name}` has size {constant}", value.span, "a size must be positive")
        if all(v is not None for v in dim.values):
            bag.error("every width symbol has a fixed size or a definition: nothing grows", spans[0],
                      "declare at least one free width symbol (without `=`), e.g. `width d_model, d_ff = 4*d_model`")


def _validate_ties(spec: ir.Spec, text: str, bag: DiagnosticBag) -> None:
    for i, tie in enumerate(spec.ties):
        emb_span, out_span = _name_spans(text, tie.span)[:2]
        if i:
            bag.error("`tie` is declared twice", tie.span, "a spec ties at most one embedding to one readout")
        if tie.embedding not in TIE_EMBEDDINGS:
            bag.error(f"`{tie.embedding}` cannot be the embedding of a tie", emb_span,
                      did_you_mean(tie.embedding, TIE_EMBEDDINGS) or
                      "write `tie EMBEDDING, READOUT` with EMBEDDING `input` or `token_embedding`")
        if tie.readout not in TIE_READOUTS:
            bag.error(f"`{tie.readout}` cannot be the readout of a tie", out_span,
                      did_you_mean(tie.readout, TIE_READOUTS) or
                      "write `tie EMBEDDING, READOUT` with READOUT `output` or `readout`")


def _check_subrole_classes(spec: ir.Spec) -> None:
    """A sub-role refines its class, and a tie joins two classes: the class
    must have a block (resolved spec, so a derived spec may use its base's)."""
    bag = DiagnosticBag()
    for role in spec.subroles:
        parent = ir.SUBROLES[role]
        if spec.block(parent) is None:
            block = spec.block(role)
            span = block.span.model_copy(update={"end_line": block.span.line,
                                                 "end_column": block.span.column + len(role)})
            bag.error(f"sub-role `{role}` refines the `{parent}` class, which this spec has no block for", span,
                      f"add a `{parent} {{ ... }}` block (`{parent} {{ }}` for the defaults): "
                      f"`{role}` states only what differs from it")
    for tie in spec.ties:
        for role in (tie.embedding, tie.readout):
            if spec.block(ir.role_class(role)) is None:
                bag.error(f"`tie {tie.embedding}, {tie.readout}` needs the `{ir.role_class(role)}` class, "
                          "which this spec has no block for", tie.span,
                          f"add a `{ir.role_class(role)} {{ ... }}` block: the tie shares its tensor")
    bag.raise_if_any()


def _validate_expr(expr, kind: str, symbols: Symbols, bag: DiagnosticBag) -> None:
    for sym in _symbols_in(expr):
        if sym.name in FAN_SYMBOLS and kind in ("attention", "residual", "alignment"):
            bag.error(f"`{sym.name}` has no meaning in the `{kind}` block", sym.span,
                      "fan_in and fan_out belong to a parameter class; use a width or depth symbol "
                      f"({', '.join(symbols.widths + ((symbols.depth,) if symbols.depth else ()))})")
        elif sym.name not in symbols.all():
            hint = did_you_mean(sym.name, symbols.all())
            if hint is None:
                hint = f"known symbols: {', '.join(symbols.all())}; declare widths with `width`, depth with " \
                       "`depth`, constants with `hyper`"
            bag.error(f"unknown symbol `{sym.name}`", sym.span, hint)
    _check_constants(expr, bag)


# Fields whose value is a plain number, not a scale: (check, what it must be).
_CONSTANT_FIELDS = {
    "layers": (lambda v: v.denominator == 1 and 1 <= v <= 64, "a whole number of layers per branch, 1 to 64"),
    "update": (lambda v: Fraction(1, 2) <= v <= 1, "an alignment exponent from 1/2 (none) to 1 (full)"),
    "readout": (lambda v: Fraction(1, 2) <= v <= 1, "an alignment exponent from 1/2 (none) to 1 (full)"),
}


def _validate_rule_value(rule: ir.Rule, bag: DiagnosticBag) -> None:
    value = constant_value(rule.value)
    if rule.field in _CONSTANT_FIELDS:
        ok, what = _CONSTANT_FIELDS[rule.field]
        if value is None or not ok(value):
            bag.error(f"`{rule.field}` must be {what}", rule.value.span,
                      "write a number (no width or depth symbol), e.g. `layers = 2`, `update = 1/2`")
        return
    if value is not None and value < 0:
        bag.error(f"`{rule.field}` is negative", rule.value.span,
                  "variances, multipliers, learning rates, weight decay and eps are positive scales")
    elif value == 0 and not rule.field.startswith(("init.", "wd.")):
        bag.error(f"`{rule.field}` is zero", rule.value.span,
                  "only init (zero init) and weight decay may be 0; a zero multiplier or LR removes the layer")


_children = ir.children


def _postorder(expr) -> list:
    """Every node of `expr`, children before parents, without recursion (an
    expression may be 1,000 levels deep)."""
    out, stack = [], [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            out.append(node)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(_children(node)))
    return out


def _symbols_in(expr):
    """The Sym nodes of `expr`, left to right."""
    return [node for node in _postorder(expr) if isinstance(node, ir.Sym)]


# Folded constants must fit a float with room to spare (generated code
# computes in float64): |value| in [10^-300, 10^300], or 0. docs/reliability.md.
MAX_CONSTANT = Fraction(10) ** 300
_HUGE = object()  # a constant too large to fold exactly


def _check_constants(expr, bag: DiagnosticBag) -> None:
    """Division by zero, 0^negative, sqrt of a negative number, a negative
    number to a fractional power, constants out of float range, and
    exponents that are not plain rational numbers -- wherever they can be
    seen without knowing the width. One bottom-up pass (linear time); an
    error inside a subexpression is not blamed again on the nodes around it."""
    value: dict[int, object] = {}  # id(node) -> Fraction, None (symbolic or irrational) or _HUGE
    symbol: dict[int, str | None] = {}  # id(node) -> the first symbol in it
    failed: dict[int, bool] = {}  # id(node) -> an error was reported inside it
    for node in _postorder(expr):
        kids = _children(node)
        symbol[id(node)] = node.name if isinstance(node, ir.Sym) else \
            next((symbol[id(k)] for k in kids if symbol[id(k)]), None)
        inner = any(failed[id(k)] for k in kids)
        errors = len(bag.items)
        value[id(node)] = v = _fold_constant(node, [value[id(k)] for k in kids])
        if isinstance(node, ir.Call) and _negative(value[id(node.arg)]):
            bag.error("square root of a negative number", node.span, "a scale must be positive")
        elif isinstance(node, ir.BinOp):
            _check_binop(node, value[id(node.left)], value[id(node.right)], symbol[id(node.right)],
                         failed[id(node.right)], bag)
        if not inner and len(bag.items) == errors and (v is _HUGE or _out_of_range(v)):
            bag.error("constant out of range: its value is beyond 10^300 or below 10^-300", node.span,
                      "mupspec computes in 64-bit floats; no scale needs such a constant")
        failed[id(node)] = inner or len(bag.items) > errors


def limit_errors(expr) -> list[Diagnostic]:
    """What validation would refuse in `expr` on its own (an exponent or a
    constant out of range, a division by zero): convert checks the values it
    writes against the very limits the parser enforces on them."""
    bag = DiagnosticBag()
    _check_constants(expr, bag)
    return bag.items


def _negative(v) -> bool:
    return isinstance(v, Fraction) and v < 0


def _out_of_range(v) -> bool:
    return isinstance(v, Fraction) and v != 0 and not 1 / MAX_CONSTANT <= abs(v) <= MAX_CONSTANT


def _fold_constant(node, kids: list):
    """The exact value of `node` from its children's values (None: symbolic
    or irrational; _HUGE: too large to compute)."""
    if isinstance(node, ir.Num):
        return node.value
    if isinstance(node, ir.Sym) or any(k is None for k in kids):
        return None
    if any(k is _HUGE for k in kids):
        return _HUGE
    if isinstance(node, ir.Neg):
        return -kids[0]
    if isinstance(node, ir.Call):
        return _exact_root(kids[0], 2) if kids[0] >= 0 else None
    if isinstance(node, ir.MinMax):
        return (min if node.func == "min" else max)(kids)
    left, right = kids
    if node.op == "/" and right == 0:
        return None
    if node.op != "^":
        return ir.ARITHMETIC[node.op](left, right)
    log2 = left.numerator.bit_length() - left.denominator.bit_length() if left else 0  # within 1 of log2|left|
    if abs(right) <= 64 and abs(log2 * right) > 1100:  # beyond 2^±1000 (~10^±300) even with log2's error
        return _HUGE
    return _power(left, right)


def _check_binop(node: ir.BinOp, left, right, right_symbol: str | None, right_failed: bool,
                 bag: DiagnosticBag) -> None:
    if node.op == "/" and right == 0:
        bag.error("division by zero", node.right.span, "the divisor is 0 at every width")
    if node.op != "^":
        return
    if right_symbol:
        bag.error(f"an exponent must be a constant, but `{right_symbol}` is a symbol", node.right.span,
                  "write powers with rational exponents, e.g. `n^(-1/2)` or `sqrt(n)`")
    elif right is _HUGE or (right is None and not right_failed):
        bag.error("an exponent must be a rational number", node.right.span,
                  "write exponents as fractions, e.g. `n^(1/2)`; sqrt(2) or a huge power is not one")
    elif right is None:
        pass
    elif right.denominator > 1000 or abs(right) > 64:
        bag.error(f"exponent {right} is out of range", node.right.span,
                  "exponents are rationals with denominator <= 1000 and magnitude <= 64")
    elif right < 0 and left == 0:
        bag.error("zero raised to a negative power", node.span, "this divides by zero")
    elif right.denominator > 1 and _negative(left):
        bag.error("a negative number raised to a fractional power", node.span,
                  "mupspec takes no roots of negative numbers; scales are positive")


def constant_value(expr) -> Fraction | None:
    """The exact value of a symbol-free expression, or None if it has symbols
    or is not rational (sqrt of a non-square)."""
    def binary(node, left, right):
        if left is None or right is None or (node.op == "/" and right == 0):
            return None
        return _power(left, right) if node.op == "^" else ir.ARITHMETIC[node.op](left, right)

    return ir.fold(expr, num=lambda node: node.value, sym=lambda node: None,
                   neg=lambda value, _: None if value is None else -value,
                   sqrt=lambda value, _: _exact_root(value, 2) if value is not None and value >= 0 else None,
                   binary=binary, choose=lambda node, values: None if None in values else
                   (min if node.func == "min" else max)(values))


def _power(base: Fraction, exponent: Fraction) -> Fraction | None:
    if abs(exponent) > 64 or exponent.denominator > 1000 or (base == 0 and exponent < 0):
        return None
    root = _exact_root(base, exponent.denominator) if base >= 0 or exponent.denominator == 1 else None
    if root is None:
        return None
    # refuse numbers of more than ~10^4 digits: nested powers grow doubly exponentially
    if max(root.numerator.bit_length(), root.denominator.bit_length()) * abs(exponent.numerator) > 40_000:
        return None
    return root ** exponent.numerator


def _exact_root(value: Fraction, k: int) -> Fraction | None:
    if k == 1:
        return value
    num, den = _int_root(value.numerator, k), _int_root(value.denominator, k)
    return None if num is None or den is None else Fraction(num, den)


def _int_root(x: int, k: int) -> int | None:
    if x < 0:
        return None
    r = round(x ** (1.0 / k)) if x < 2**1000 else None
    if r is None:
        return None
    for cand in (r - 1, r, r + 1):
        if cand >= 0 and cand**k == x:
            return cand
    return None

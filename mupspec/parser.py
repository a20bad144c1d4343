"""Stage 1: `.mup` text -> `ir.Spec` exactly as written (source order, with
comments attached). lark is confined to this module: its exceptions are
translated into `MupError` here, so no lark type escapes. Text that is right
is parsed by the fast path, `fastparse.py`, to the same IR; lark parses what
that path gives up on, so every syntax error is reported from here.
"""

from __future__ import annotations

import bisect
import gc
import re
import sys
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from mupspec import fastparse, ir
from mupspec.errors import Diagnostic, MupError, did_you_mean

GRAMMAR = Path(__file__).with_name("grammar.lark")

# Terminal names as a user would say them, for "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a quoted string", "LBRACE": "'{'",
    "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='", "SEMICOLON": "';'",
    "DOT": "'.'", "COMMA": "','", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "CIRCUMFLEX": "'^'", "SQRT": "'sqrt'", "MIN": "'min'", "MAX": "'max'",
    "WIDTH": "'width'", "DEPTH": "'depth'", "HYPER": "'hyper'", "TIE": "'tie'", "EXTENDS": "'extends'",
    "PARAMETRIZATION": "'parametrization'", "$END": "end of input",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=True, lexer_callbacks={"COMMENT": _on_comment, "NUMBER": _on_number})


class _LexState:
    """What the lexer callbacks of the parse in progress need: lark fixes
    callbacks when the (cached) parser is built, so they read this slot."""

    def __init__(self, text: str = "", file: str | None = None):
        self.text, self.file = text, file
        self.comments: list[Token] = []


_LEX = [_LexState()]


def _on_comment(tok: Token) -> Token:
    _LEX[0].comments.append(tok)
    return tok


_NUMBER_TAIL = re.compile(r"[eE][+-]?[0-9]+|[A-Za-z0-9_.]+")


def _on_number(tok: Token) -> Token:
    """`1e3`, `2n`, `1.` and `1.5.2` would otherwise lex as a number followed
    by something else and fail later with a puzzling message."""
    state = _LEX[0]
    tail = _NUMBER_TAIL.match(state.text, tok.end_pos)
    if tail is not None:
        bad = tok + tail.group()
        span = ir.Span(file=state.file, line=tok.line, column=tok.column,
                       end_line=tok.line, end_column=tok.column + len(bad))
        if re.fullmatch(r"[0-9.]+[eE][+-]?[0-9]+", bad):
            mantissa, _, power = bad.lower().partition("e")
            scale = "" if mantissa in ("1", "1.0") else f"{mantissa}*"
            hint = f"there is no scientific notation: write `{scale}10^({power.lstrip('+')})`"
        else:
            hint = ("write a product with `*` (e.g. `2*n`); numbers are digits with an optional "
                    "decimal part, like 2 or 0.5")
        raise MupError(Diagnostic(f"malformed number `{bad}`", span, hint))
    return tok


def _span(file: str | None, obj) -> ir.Span:
    """A span from a lark Token or tree meta (both 1-based, end-exclusive)."""
    return ir.Span(file=file, line=obj.line, column=obj.column,
                   end_line=obj.end_line, end_column=obj.end_column)


@v_args(meta=True)
class _Builder(Transformer):
    """Bottom-up: lark tree -> IR nodes. Comments are attached afterwards."""

    def __init__(self, file: str | None):
        super().__init__()
        self.file = file
        self.counts = {"rules": 0, "declarations": 0}

    def _count(self, what: str, limit: int, meta) -> None:
        self.counts[what] += 1
        if self.counts[what] > limit:
            raise MupError(Diagnostic(f"more than {limit:,} {what} in one spec", self._s(meta),
                                      "this is a resource limit (docs/reliability.md); split the spec"))

    def _s(self, meta) -> ir.Span:
        return _span(self.file, meta)

    # expressions
    def number(self, meta, children):
        if len(children[0]) > 100:  # no scale needs it; Python refuses >4300-digit ints
            raise MupError(Diagnostic("number too long (more than 100 digits)", self._s(meta),
                                      "write a large or small scale as a power, e.g. `10^(-30)`"))
        return ir.Num.of(Fraction(str(children[0])), self._s(meta))

    def symbol(self, meta, children):
        return ir.Sym(name=str(children[0]), span=self._s(meta))

    def sqrt(self, meta, children):
        return ir.Call(func="sqrt", arg=children[1], span=self._s(meta))

    def minmax(self, meta, children):
        return ir.MinMax(func=str(children[0]), args=tuple(children[1:]), span=self._s(meta))

    def neg(self, meta, children):
        return ir.Neg(operand=children[0], span=self._s(meta))

    def _binop(op):  # noqa: N805 -- a factory used in the class body
        def build(self, meta, children):
            return ir.BinOp(op=op, left=children[0], right=children[1], span=self._s(meta))
        return build

    add, sub, mul, div, pow = _binop("+"), _binop("-"), _binop("*"), _binop("/"), _binop("^")

    # declarations
    def field(self, meta, children):
        return ".".join(str(c) for c in children), self._s(meta)

    def rule(self, meta, children):
        (name, _), value = children
        self._count("rules", MAX_RULES, meta)
        return ir.Rule(field=name, value=value, span=self._s(meta))

    def block(self, meta, children):
        kind_token, _, *rules, _ = children
        # The kind is checked in resolve.py (with "did you mean"); keep any
        # name here so one typo does not hide the other errors.
        return _RawBlock(str(kind_token), _span(self.file, kind_token), tuple(rules), self._s(meta))

    def width_item(self, meta, children):
        name, value = children
        return str(name), value

    def width_decl(self, meta, children):
        self._count("declarations", MAX_DECLARATIONS, meta)
        names = tuple(name for name, _ in children)
        values = tuple(value for _, value in children)
        return ir.Dim(role="width", names=names, values=values if any(v is not None for v in values) else (),
                      span=self._s(meta))

    def tie_decl(self, meta, children):
        self._count("declarations", MAX_DECLARATIONS, meta)
        return ir.Tie(embedding=str(children[0]), readout=str(children[1]), span=self._s(meta))

    def depth_decl(self, meta, children):
        self._count("declarations", MAX_DECLARATIONS, meta)
        return ir.Dim(role="depth", names=(str(children[0]),), span=self._s(meta))

    def hyper_decl(self, meta, children):
        self._count("declarations", MAX_DECLARATIONS, meta)
        return ir.Hyper(name=str(children[0]), value=children[1], span=self._s(meta))

    def extends(self, meta, children):
        tok = children[0]
        is_path = tok.type == "STRING"
        target = _unquote(tok, self.file) if is_path else str(tok)
        return ir.Ref(target=target, is_path=is_path, span=_span(self.file, tok))

    def header(self, meta, children):
        name, title, extends = children
        return ("header", str(name), _unquote(title, self.file) if title is not None else None, extends, self._s(meta))

    def start(self, meta, children):
        return children


# Resource limits (docs/reliability.md), generous for any real spec, each
# refused with a located error; parsing and checking are linear up to them.
MAX_DEPTH = 1000             # nesting of one expression
MAX_DECLARATIONS = 10_000    # width, depth and hyper declarations
MAX_RULES = 100_000          # rules written, in all blocks
MAX_SOURCE_CHARS = 10_000_000

# Every stage walks expressions recursively (lark's transformer, ir.fold,
# sympy, pydantic): a depth of MAX_DEPTH needs a few frames per level.
# Python 3.11+ keeps pure-Python frames off the C stack, so this is safe.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * MAX_DEPTH))


_EXPRESSION_NODES = {"add", "sub", "mul", "div", "pow", "neg", "sqrt", "minmax", "number", "symbol"}


def _check_depth(tree, file: str | None) -> None:
    """Refuse an expression nested more than MAX_DEPTH levels, at the whole
    expression, before any recursive stage (lark's transformer first) walks
    it. Iterative, so that it cannot overflow itself."""
    stack = [(tree, 0, None)]
    while stack:
        node, depth, top = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data in _EXPRESSION_NODES:
            depth, top = depth + 1, top or node
            if depth > MAX_DEPTH:
                raise MupError(Diagnostic(f"expression nested more than {MAX_DEPTH} levels deep", _span(file, top.meta),
                                          "this is a resource limit (docs/reliability.md): split the expression, "
                                          "or use a `hyper` constant"))
        stack.extend((child, depth, top) for child in node.children)


class _RawBlock:
    """A block before its kind is validated (ir.Block only admits known kinds)."""

    def __init__(self, kind: str, kind_span: ir.Span, rules: tuple, span: ir.Span):
        self.kind, self.kind_span, self.rules, self.span = kind, kind_span, rules, span
        self.comments: tuple[str, ...] = ()
        self.note: str | None = None
        self.end_comments: tuple[str, ...] = ()


_ESCAPE = re.compile(r"\\(.)")


def _unquote(token: Token, file: str | None = None) -> str:
    """The text between the quotes. The only escapes are \\" and \\\\, so a
    title or path reads as written (no \\n, no \\u: the printer must be able
    to write back every string it reads)."""
    def unescape(match: re.Match) -> str:
        if match.group(1) in '"\\':
            return match.group(1)
        col = token.column + 1 + match.start()  # +1: the opening quote
        raise MupError(Diagnostic(f"unknown escape `\\{match.group(1)}` in a string", _point(file, token.line, col, 2),
                                  'inside quotes only \\" (a quote) and \\\\ (a backslash) are escapes'))
    return _ESCAPE.sub(unescape, str(token)[1:-1])


_VALUE_START = {"'('", "'-'", "'sqrt'", "'min'", "'max'", "a name", "a number"}
_OPERATORS = {"'+'", "'-'", "'*'", "'/'", "'^'"}


def _expected_words(err: UnexpectedInput) -> set[str]:
    names = getattr(err, "expected", None) or getattr(err, "allowed", None) or ()
    interactive = getattr(err, "interactive_parser", None)
    if interactive is not None:  # the LALR state's set can be too wide: ask what really shifts
        try:
            names = interactive.accepts() or names
        except Exception:  # noqa: BLE001 -- only a nicer message is at stake; keep lark's set
            pass
    return {_TERMINAL_WORDS.get(t, t.lower()) for t in names}


def _describe_expected(expected: set[str]) -> str:
    """Group what the parser would accept into words: `a value`, `an operator`."""
    words = set(expected)
    groups = []
    if {"'('", "a name", "a number"} <= words:
        words -= _VALUE_START
        groups.append("a value")
    if {"'+'", "'*'", "'/'", "'^'"} <= words:
        words -= _OPERATORS
        groups.append("an operator")
    if "'}'" in words and "a name" in words:  # inside a block, a name starts the next rule
        words = (words - {"a name"}) | {"another rule"}
    rest = sorted(words, key=lambda w: (not w.startswith("'"), w))
    return _or_list(groups + rest)


def _or_list(words: list[str]) -> str:
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(err: UnexpectedInput, text: str, file: str | None) -> MupError:
    """A lark error as `unexpected X; expected Y` at X, with a hint for the
    common slips. The end of input is shown just after the last character."""
    expected = _expected_words(err)
    at_end = isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END")
    if at_end:
        lines = text.rstrip().split("\n")  # lark counts lines by \n only
        line, col, width = len(lines), len(lines[-1]) + 1, 1
        found = "end of input"
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        line, col, width = tok.line, tok.column, max(1, len(str(tok).split("\n")[0]))
        found = f"'{tok}'"
    else:  # UnexpectedCharacters
        line, col, width = err.line, err.column, 1
        found = f"character {text[err.pos_in_stream]!r}" if err.pos_in_stream < len(text) else "end of input"
    message = f"unexpected {found}"
    if found == "character '\"'":
        message = "unclosed quote"
    elif expected:
        message += f"; expected {_describe_expected(expected)}"
    token = err.token if isinstance(err, UnexpectedToken) else None
    hint = _hint(found, token, expected, text, at_end)
    return MupError(Diagnostic(message, _point(file, line, col, width), hint))


def _hint(found: str, token: Token | None, expected: set[str], text: str, at_end: bool) -> str | None:
    if expected == {"'parametrization'"}:
        start = "a spec starts with `parametrization NAME`, e.g. `parametrization my_mup \"my muP\"`"
        if token is not None and token.type == "NAME" and did_you_mean(str(token), ["parametrization"]):
            return "did you mean `parametrization`? " + start
        return start
    if at_end:
        if "'}'" in expected:
            return "a block is not closed: is a '}' missing?"
        if "a value" in _describe_expected(expected) or "')'" in expected:
            return "the file ends in the middle of an expression"
        return "the file ends in the middle of a declaration"
    if expected == {"'('"}:
        return "sqrt, min and max take their arguments in parentheses: `sqrt(n)`, `min(1, n)`"
    if "','" in expected and "')'" not in expected and found == "')'":
        return "min and max take two or more arguments: `min(1, sqrt(fan_out/fan_in))`"
    if expected == {"')'"}:
        return "a '(' is not closed"
    if found == "','" and "'}'" in expected:
        return "separate rules with a new line or `;`"
    if found == "'*'" and token is not None and text[token.start_pos - 1:token.start_pos] == "*":
        return "powers are written with `^`: `2^3`, `n^(1/2)`"
    if found == "')'" and "')'" not in expected:
        return "this ')' has no matching '('"
    if found == "'='" and "'='" not in expected:
        return "`=` starts a rule's value: `field = expression`, inside a block"
    if "'='" in expected and "'.'" in expected:
        return "each rule reads `field = expression`, e.g. `lr.adam = 1/fan_in`"
    if expected == {"'{'"}:
        return "a block reads `NAME { field = expression ... }`, e.g. `hidden { lr.adam = 1/fan_in }`"
    if token is not None and token.type in ("WIDTH", "DEPTH", "HYPER", "TIE", "PARAMETRIZATION", "EXTENDS", "SQRT",
                                            "MIN", "MAX"):
        return f"`{token}` is a keyword and cannot be used as a name here"
    if "a value" in _describe_expected(expected):
        return "an expression is missing or incomplete here"
    if found == "character '\"'":
        return 'a quoted title or path must end with `"` on the same line'
    if found.startswith("character"):
        return "expressions use numbers, names, + - * / ^, sqrt(...), min(...), max(...) and parentheses; " \
               "comments start with #"
    return None


def parse_spec(text: str, file: str | None = None) -> tuple[ir.Spec, list["_RawBlock"]]:
    """Syntax only: text -> (Spec without blocks, raw blocks in source order).

    Normal code calls `resolve.parse_and_resolve` / `resolve.load_spec`, which
    validate the raw blocks into `ir.Block`s and merge any base spec. The
    last results are kept: resolving reads the header, then validates the
    same text, and a large spec must not be parsed twice.
    """
    spec, blocks = _parse_cached(text, file)
    return spec, list(blocks)


@lru_cache(maxsize=4)
def _parse_cached(text: str, file: str | None) -> tuple[ir.Spec, tuple["_RawBlock", ...]]:
    spec, blocks = _parse(text, file)
    return spec, tuple(blocks)


def _parse(text: str, file: str | None) -> tuple[ir.Spec, list["_RawBlock"]]:
    if len(text) > MAX_SOURCE_CHARS:
        raise MupError(Diagnostic(f"spec larger than {MAX_SOURCE_CHARS:,} characters", _point(file, 1, 1),
                                  "this is a resource limit (docs/reliability.md); split the spec"))
    with gc_paused():
        try:
            items, comments = fastparse.parse(text, file)
        except fastparse.Fallback:  # an error or a corner of the grammar: lark's path, lark's messages
            items, comments = _parse_with_lark(text, file)
        (_, name, title, extends, header_span), *rest = items
        return attach_comments(file, name, title, extends, header_span, rest, comments)


@contextmanager
def gc_paused():
    """No cyclic garbage collection inside: parsing and validating allocate
    about a million objects for a spec at the limits and free none of them,
    and the collector would walk the growing heap again and again (half the
    time of such a spec). The IR has no reference cycles to collect.
    Nestable: only the outermost one turns the collector back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_with_lark(text: str, file: str | None) -> tuple[list, list[Token]]:
    state = _LexState(text, file)
    _LEX[0] = state
    try:
        tree = _lark().parse(text)
        _check_depth(tree, file)
        items = _Builder(file).transform(tree)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
    except VisitError as err:
        if isinstance(err.orig_exc, MupError):  # a bad string escape
            raise err.orig_exc from None
        raise MupError(Diagnostic(f"malformed input: {err.orig_exc}", _point(file, 1, 1))) from None
    except RecursionError:
        raise MupError(Diagnostic(f"expression nested more than {MAX_DEPTH} levels deep", _point(file, 1, 1),
                                  "split the expression, or use a `hyper` constant")) from None
    finally:
        _LEX[0] = _LexState()
    return items, state.comments


def _point(file: str | None, line: int, column: int, width: int = 1) -> ir.Span:
    return ir.Span(file=file, line=line, column=column, end_line=line, end_column=column + width)


# ---------------------------------------------------------------- comments


def _text(tok: Token) -> str:
    return str(tok)[1:].rstrip()


def attach_comments(file, name, title, extends, header_span, items, comments) -> tuple[ir.Spec, list[_RawBlock]]:
    """Give every comment to the node it belongs to: a comment that ends a
    node's line is that node's `note`; a full-line comment leads the next
    node in the same scope (block or file), or closes that scope."""
    places = _Places(header_span, items)
    lead: dict[int, list[str]] = {}
    note: dict[int, str] = {}
    end_block: dict[int, list[str]] = {}
    spec_end: list[str] = []
    header_lead: list[str] = []
    for tok in comments:
        line = tok.line
        owner = places.trailing_owner(line)
        if owner is not None and id(owner) not in note:
            note[id(owner)] = _text(tok)
            continue
        block = places.block_around(line)
        if block is not None:
            nxt = places.next_rule(block, line)
            (lead.setdefault(id(nxt), []) if nxt else end_block.setdefault(id(block), [])).append(_text(tok))
            continue
        if line < header_span.line:
            header_lead.append(_text(tok))
            continue
        nxt = places.next_item(line)
        (lead.setdefault(id(nxt), []) if nxt else spec_end).append(_text(tok))

    def dress(node):
        if id(node) not in lead and id(node) not in note:
            return node  # most nodes: no copy
        return node.model_copy(update={"comments": tuple(lead.get(id(node), ())), "note": note.get(id(node))})

    dims, hypers, ties, blocks = [], [], [], []
    for it in items:
        if isinstance(it, _RawBlock):
            it.rules = tuple(dress(r) for r in it.rules)
            it.comments, it.note = tuple(lead.get(id(it), ())), note.get(id(it))
            it.end_comments = tuple(end_block.get(id(it), ()))
            blocks.append(it)
        elif isinstance(it, ir.Dim):
            dims.append(dress(it))
        elif isinstance(it, ir.Tie):
            ties.append(dress(it))
        else:
            hypers.append(dress(it))
    spec = ir.Spec(name=name, title=title, extends=extends, dims=tuple(dims), hypers=tuple(hypers), ties=tuple(ties),
                   comments=tuple(header_lead), note=note.get(id(header_span)), end_comments=tuple(spec_end),
                   span=header_span)
    return spec, blocks


class _Places:
    """Where each comment goes, looked up by line in time independent of the
    number of nodes (a spec may have 10,000 declarations, each commented).
    Items and rules are in source order, so their lines do not decrease."""

    def __init__(self, header_span: ir.Span, items):
        # Of the nodes ending on a line, in source order: (end column, 1 for a rule, node).
        self.ending: dict[int, list] = {}
        self.opening: dict[int, _RawBlock] = {}  # the first block whose `{` is on a line
        if header_span.end_line > 0:
            self.ending[header_span.end_line] = [(header_span.end_column, 0, header_span)]
        for it in items:
            if isinstance(it, _RawBlock):
                for r in it.rules:
                    self.ending.setdefault(r.span.end_line, []).append((r.span.end_column, 1, r))
                self.opening.setdefault(it.span.line, it)
            self.ending.setdefault(it.span.end_line, []).append((it.span.end_column, 0, it))
        self.items = items
        self.item_lines = [it.span.line for it in items]
        self.blocks = [it for it in items if isinstance(it, _RawBlock)]
        self.block_lines = [b.span.line for b in self.blocks]
        self.rule_lines: dict[int, list[int]] = {}

    def trailing_owner(self, line: int):
        """The node a comment at the end of `line` follows: of the nodes ending
        on that line, the one ending last (`input { a = 1 }  # c` is the
        block's note, `a = 1  # c` the rule's); else a block whose `{` is on
        that line."""
        ending = self.ending.get(line)
        if ending:
            return max(ending, key=lambda e: (e[0], e[1]))[2]
        return self.opening.get(line)

    def block_around(self, line: int):
        """The block `line` is strictly inside, if any (blocks do not overlap)."""
        i = bisect.bisect_left(self.block_lines, line) - 1
        if i >= 0 and line < self.blocks[i].span.end_line:
            return self.blocks[i]
        return None

    def next_rule(self, block: _RawBlock, line: int):
        lines = self.rule_lines.get(id(block))
        if lines is None:
            lines = self.rule_lines[id(block)] = [r.span.line for r in block.rules]
        i = bisect.bisect_right(lines, line)
        return block.rules[i] if i < len(lines) else None

    def next_item(self, line: int):
        i = bisect.bisect_right(self.item_lines, line)
        return self.items[i] if i < len(self.items) else None

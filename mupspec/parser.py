"""Stage 1: `.mup` text -> `ir.Spec` exactly as written (source order, with
comments attached). lark is confined to this module: its exceptions are
translated into `MupError` here, so no lark type escapes.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from mupspec import ir
from mupspec.errors import Diagnostic, MupError

GRAMMAR = Path(__file__).with_name("grammar.lark")

# Terminal names as a user would say them, for "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a quoted title", "LBRACE": "'{'",
    "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='", "SEMICOLON": "';'",
    "DOT": "'.'", "COMMA": "','", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "CIRCUMFLEX": "'^'", "SQRT": "'sqrt'", "WIDTH": "'width'",
    "DEPTH": "'depth'", "HYPER": "'hyper'", "EXTENDS": "'extends'",
    "PARAMETRIZATION": "'parametrization'", "$END": "end of input",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=True, lexer_callbacks={"COMMENT": lambda tok: _COMMENT_SINK[0].append(tok)})


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

    def _s(self, meta) -> ir.Span:
        return _span(self.file, meta)

    # expressions
    def number(self, meta, children):
        return ir.Num.of(Fraction(str(children[0])), self._s(meta))

    def symbol(self, meta, children):
        return ir.Sym(name=str(children[0]), span=self._s(meta))

    def sqrt(self, meta, children):
        return ir.Call(func="sqrt", arg=children[1], span=self._s(meta))

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
        return ir.Rule(field=name, value=value, span=self._s(meta))

    def block(self, meta, children):
        kind_token, _, *rules, _ = children
        # The kind is checked in resolve.py (with "did you mean"); keep any
        # name here so one typo does not hide the other errors.
        return _RawBlock(str(kind_token), _span(self.file, kind_token), tuple(rules), self._s(meta))

    def width_decl(self, meta, children):
        return ir.Dim(role="width", names=tuple(str(c) for c in children), span=self._s(meta))

    def depth_decl(self, meta, children):
        return ir.Dim(role="depth", names=(str(children[0]),), span=self._s(meta))

    def hyper_decl(self, meta, children):
        return ir.Hyper(name=str(children[0]), value=children[1], span=self._s(meta))

    def extends(self, meta, children):
        tok = children[0]
        is_path = tok.type == "STRING"
        target = _unquote(tok) if is_path else str(tok)
        return ir.Ref(target=target, is_path=is_path, span=_span(self.file, tok))

    def header(self, meta, children):
        name, title, extends = children
        return ("header", str(name), _unquote(title) if title is not None else None, extends, self._s(meta))

    def start(self, meta, children):
        return children


class _RawBlock:
    """A block before its kind is validated (ir.Block only admits known kinds)."""

    def __init__(self, kind: str, kind_span: ir.Span, rules: tuple, span: ir.Span):
        self.kind, self.kind_span, self.rules, self.span = kind, kind_span, rules, span
        self.comments: tuple[str, ...] = ()
        self.note: str | None = None
        self.end_comments: tuple[str, ...] = ()


def _unquote(token: Token) -> str:
    return bytes(str(token)[1:-1], "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8") \
        if "\\" in str(token) else str(token)[1:-1]


def _syntax_error(err: UnexpectedInput, text: str, file: str | None) -> MupError:
    line, col = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
    width = 1
    if isinstance(err, UnexpectedToken) and err.token.type == "$END" or isinstance(err, UnexpectedEOF):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        found = "end of input"
    elif isinstance(err, UnexpectedToken):
        found = f"'{err.token}'"
        width = max(1, len(str(err.token)))
    elif isinstance(err, UnexpectedCharacters):
        found = f"character {text[err.pos_in_stream]!r}" if err.pos_in_stream < len(text) else "end of input"
    else:
        found = "input"
    expected = sorted({_TERMINAL_WORDS.get(t, t) for t in (getattr(err, "expected", None) or ())
                       if not t.startswith("__")})
    message = f"unexpected {found}"
    hint = None
    if expected:
        message += f"; expected {_or_list(expected)}"
    if isinstance(err, UnexpectedToken) and err.token.type == "$END":
        hint = "the file ends in the middle of a declaration: is a '}' or a value missing?"
    elif found == "'='" or (isinstance(err, UnexpectedToken) and err.token.type == "NAME"
                             and "a name" not in expected and "'='" not in expected):
        hint = "each rule reads `field = expression`, e.g. `lr.adam = 1/fan_in`"
    span = ir.Span(file=file, line=line, column=col, end_line=line, end_column=col + width)
    return MupError(Diagnostic(message, span, hint))


def _or_list(words: list[str]) -> str:
    if len(words) > 6:
        words = words[:6] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def parse_spec(text: str, file: str | None = None) -> tuple[ir.Spec, list["_RawBlock"]]:
    """Syntax only: text -> (Spec without blocks, raw blocks in source order).

    Normal code calls `resolve.parse_and_resolve` / `resolve.load_spec`, which
    validate the raw blocks into `ir.Block`s and merge any base spec.
    """
    comments: list[Token] = []
    _COMMENT_SINK[0] = comments
    try:
        items = _Builder(file).transform(_lark().parse(text))
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
    except VisitError as err:  # e.g. a literal the IR rejects
        raise MupError(Diagnostic(f"malformed input: {err.orig_exc}",
                                  ir.Span(file=file, line=1, column=1, end_line=1, end_column=2))) from None
    finally:
        _COMMENT_SINK[0] = []
    (_, name, title, extends, header_span), *rest = items
    return attach_comments(file, name, title, extends, header_span, rest, comments)


# lark fixes lexer callbacks when the parser is built; the cached parser
# appends comments to whatever list this slot holds during a parse.
_COMMENT_SINK: list[list[Token]] = [[]]


# ---------------------------------------------------------------- comments


def _text(tok: Token) -> str:
    return str(tok)[1:].rstrip()


def attach_comments(file, name, title, extends, header_span, items, comments) -> tuple[ir.Spec, list[_RawBlock]]:
    """Give every comment to the node it belongs to: a comment that ends a
    node's line is that node's `note`; a full-line comment leads the next
    node in the same scope (block or file), or closes that scope."""
    top = [("header", header_span, None)] + [(it, it.span, None) for it in items]
    lead: dict[int, list[str]] = {}
    note: dict[int, str] = {}
    end_block: dict[int, list[str]] = {}
    spec_end: list[str] = []
    header_lead: list[str] = []
    for tok in comments:
        line = tok.line
        owner = _trailing_owner(line, header_span, items)
        if owner is not None and id(owner) not in note:
            note[id(owner)] = _text(tok)
            continue
        block = next((b for b in items if isinstance(b, _RawBlock) and b.span.line < line < b.span.end_line), None)
        if block is not None:
            nxt = next((r for r in block.rules if r.span.line > line), None)
            (lead.setdefault(id(nxt), []) if nxt else end_block.setdefault(id(block), [])).append(_text(tok))
            continue
        if line < header_span.line:
            header_lead.append(_text(tok))
            continue
        nxt = next((it for it, sp, _ in top[1:] if sp.line > line), None)
        (lead.setdefault(id(nxt), []) if nxt else spec_end).append(_text(tok))

    def dress(node):
        return node.model_copy(update={"comments": tuple(lead.get(id(node), ())), "note": note.get(id(node))})

    dims, hypers, blocks = [], [], []
    for it in items:
        if isinstance(it, _RawBlock):
            it.rules = tuple(dress(r) for r in it.rules)
            it.comments, it.note = tuple(lead.get(id(it), ())), note.get(id(it))
            it.end_comments = tuple(end_block.get(id(it), ()))
            blocks.append(it)
        elif isinstance(it, ir.Dim):
            dims.append(dress(it))
        else:
            hypers.append(dress(it))
    spec = ir.Spec(name=name, title=title, extends=extends, dims=tuple(dims), hypers=tuple(hypers),
                   comments=tuple(header_lead), note=note.get(id(header_span)), end_comments=tuple(spec_end),
                   span=header_span)
    return spec, blocks


def _trailing_owner(line: int, header_span: ir.Span, items):
    """The innermost node whose last line is `line` (a comment after it)."""
    for it in items:
        if isinstance(it, _RawBlock):
            for r in it.rules:
                if r.span.end_line == line:
                    return r
            if it.span.line == line or it.span.end_line == line:
                return it
        elif it.span.end_line == line:
            return it
    return header_span if header_span.end_line == line else None

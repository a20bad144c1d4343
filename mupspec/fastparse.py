"""Stage 1, fast path: a hand-written recursive-descent parser for the
grammar of `grammar.lark`, building the same IR as `parser.py`'s lark path
directly (no parse tree, nodes built with `ir.Node.trusted`).

lark's LALR parse, its tree and the validation of every node cost about
30 us a token: 16 s for a spec at the rules limit. This parser is only a
fast path for text that is right. At anything it does not accept as it
stands -- a syntax error, a malformed number, an unknown string escape, a
resource limit crossed, a keyword used as a name, a character outside the
grammar -- it gives up (`Fallback`) and the lark path parses the text again,
so every error message and position is lark's, and every corner of the
grammar it does not cover is lark's too. `tests/test_fastparse.py` holds it
to lark's IR on every bundled spec and on generated specs.
"""

from __future__ import annotations

import re
from fractions import Fraction

from mupspec import ir

# lark's terminals (grammar.lark), as regular expressions with groups that
# do not capture; a test checks they are the grammar's own. Whitespace is lark's common.WS.
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_NOT_IN_STRING = r"\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"
STRING = rf'"[^"\\{_NOT_IN_STRING}]*(?:\\[^{_NOT_IN_STRING}][^"\\{_NOT_IN_STRING}]*)*"'
COMMENT = r"#[^\n]*"
WS = r"[ \t\f\r\n]+"

# One token per match, after blanks on its line: a newline, a comment, a
# name, a number, a string or one punctuation character. Numbers take the
# characters lark's `_on_number` looks at after them, so that `2n` or `1.`
# is one (bad) token here too.
_TOKEN = re.compile(r"[ \t\f\r]*(?:(\n)|(#[^\n]*)|(" + NAME + r")|([0-9][0-9.A-Za-z_]*)|(" + STRING
                    + r')|([{}()=;.,+\-*/^]))')
_GOOD_NUMBER = re.compile(NUMBER + r"\Z")
_NEWLINE, _COMMENT, _NAME, _NUMBER, _STRING, _PUNCT = range(1, 7)
_EOF = 0
_LEAVES = (_NAME, _NUMBER)

# Words the grammar has as keywords. lark's contextual lexer makes them
# names where the keyword cannot stand; this parser gives such text to lark.
_KEYWORDS = frozenset(("parametrization", "extends", "width", "depth", "hyper", "tie", "sqrt", "min", "max"))


class Fallback(Exception):
    """This text is for the lark path (an error, or a corner not covered)."""


class Comment(str):
    """A comment's text (with its `#`) and line, as `attach_comments` reads a lark token."""

    line: int


def _tokens(text: str) -> tuple[list, list[Comment]]:
    """(kind, text, line, column) tuples ending with an end-of-input token,
    and the comments. Lines and columns are lark's: 1-based, lines counted
    by "\\n" only."""
    tokens, comments = [], []
    line, line_start, pos = 1, 0, 0
    append = tokens.append
    for match in _TOKEN.finditer(text):
        kind = match.lastindex
        start = match.start(kind)
        if match.start() != pos:
            raise Fallback  # a character no token starts with: lark's error
        pos = match.end()
        if kind == _NEWLINE:
            line, line_start = line + 1, pos
            continue
        value = match.group(kind)
        if kind == _COMMENT:
            comment = Comment(value)
            comment.line = line
            comments.append(comment)
            continue
        if kind == _NUMBER and (len(value) > 100 or not _GOOD_NUMBER.match(value)):
            raise Fallback  # `1e3`, `2n`, `1.`, over 100 digits: lark's message
        append((kind, value, line, start - line_start + 1))
    if text[pos:].strip(" \t\f\r"):
        raise Fallback
    append((_EOF, "", line, pos - line_start + 1))
    return tokens, comments


def parse(text: str, file: str | None):
    """(header, items, comments) as `parser.attach_comments` takes them, or
    Fallback. Items are IR declarations and `parser._RawBlock`s."""
    from mupspec import parser

    tokens, comments = _tokens(text)
    try:
        items = _Parser(tokens, file, parser).items()
    except (IndexError, RecursionError):
        raise Fallback from None
    return items, comments


class _Parser:
    def __init__(self, tokens: list, file: str | None, parser):
        self.toks, self.i, self.file = tokens, 0, file
        self.raw_block = parser._RawBlock
        self.max_depth, self.max_rules, self.max_decls = parser.MAX_DEPTH, parser.MAX_RULES, parser.MAX_DECLARATIONS
        self.rules = self.decls = 0
        self.nesting = 0

    # ---------------------------------------------------------- tokens

    def next(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, value: str):
        tok = self.toks[self.i]
        if tok[1] != value or tok[0] not in (_PUNCT, _NAME):
            raise Fallback
        self.i += 1
        return tok

    def name(self):
        tok = self.toks[self.i]
        if tok[0] != _NAME or tok[1] in _KEYWORDS:
            raise Fallback
        self.i += 1
        return tok

    def span(self, line: int, column: int, end_line: int, end_column: int) -> ir.Span:
        return ir.span_at(self.file, line, column, end_line, end_column)

    def token_span(self, tok) -> ir.Span:
        return self.span(tok[2], tok[3], tok[2], tok[3] + len(tok[1]))

    # ---------------------------------------------------------- file

    def items(self) -> list:
        header = self.header()
        items = [header]
        while True:
            kind, value = self.toks[self.i][:2]
            if kind == _EOF:
                return items
            if kind != _NAME:
                raise Fallback
            if value == "width":
                items.append(self.width())
            elif value == "depth":
                items.append(self.depth())
            elif value == "hyper":
                items.append(self.hyper())
            elif value == "tie":
                items.append(self.tie())
            else:
                items.append(self.block())

    def header(self):
        start = self.expect("parametrization")
        name = self.name()
        end, title, extends = name, None, None
        if self.toks[self.i][0] == _STRING:
            end = self.next()
            title = _unquote(end[1])
        if self.toks[self.i][:2] == (_NAME, "extends"):
            self.i += 1
            target = self.next()
            if target[0] == _STRING:
                extends = ir.Ref.trusted(target=_unquote(target[1]), is_path=True, span=self.token_span(target))
            elif target[0] == _NAME and target[1] not in _KEYWORDS:
                extends = ir.Ref.trusted(target=target[1], is_path=False, span=self.token_span(target))
            else:
                raise Fallback
            end = target
        span = self.span(start[2], start[3], end[2], end[3] + len(end[1]))
        return ("header", name[1], title, extends, span)

    def count_declaration(self) -> None:
        self.decls += 1
        if self.decls > self.max_decls:
            raise Fallback

    def width(self):
        start = self.next()
        self.count_declaration()
        names, values = [], []
        while True:
            name = self.name()
            names.append(name[1])
            end = (name[2], name[3] + len(name[1]))
            if self.toks[self.i][:2] == (_PUNCT, "="):
                self.i += 1
                value, _, _, end_line, end_col = self.top_expr()
                end = (end_line, end_col)
                values.append(value)
            else:
                values.append(None)
            if self.toks[self.i][:2] != (_PUNCT, ","):
                break
            self.i += 1
        values = tuple(values) if any(v is not None for v in values) else ()
        return ir.Dim.trusted(role="width", names=tuple(names), values=values,
                              span=self.span(start[2], start[3], *end))

    def depth(self):
        start = self.next()
        self.count_declaration()
        name = self.name()
        return ir.Dim.trusted(role="depth", names=(name[1],),
                              span=self.span(start[2], start[3], name[2], name[3] + len(name[1])))

    def hyper(self):
        start = self.next()
        self.count_declaration()
        name = self.name()
        self.expect("=")
        value, _, _, end_line, end_col = self.top_expr()
        return ir.Hyper.trusted(name=name[1], value=value, span=self.span(start[2], start[3], end_line, end_col))

    def tie(self):
        start = self.next()
        self.count_declaration()
        embedding = self.name()
        self.expect(",")
        readout = self.name()
        return ir.Tie.trusted(embedding=embedding[1], readout=readout[1],
                              span=self.span(start[2], start[3], readout[2], readout[3] + len(readout[1])))

    def block(self):
        kind = self.name()
        self.expect("{")
        rules = []
        toks = self.toks
        while toks[self.i][0] == _NAME:
            rules.append(self.rule())
        close = self.expect("}")
        return self.raw_block(kind[1], self.token_span(kind), tuple(rules),
                              self.span(kind[2], kind[3], close[2], close[3] + 1))

    def rule(self):
        first = self.name()
        field = first[1]
        if self.toks[self.i][:2] == (_PUNCT, "."):
            self.i += 1
            field = f"{field}.{self.name()[1]}"
        self.expect("=")
        value, _, _, end_line, end_col = self.top_expr()
        tok = self.toks[self.i]
        if tok[:2] == (_PUNCT, ";"):
            self.i += 1
            end_line, end_col = tok[2], tok[3] + 1
        self.rules += 1
        if self.rules > self.max_rules:
            raise Fallback
        return ir.Rule.trusted(field=field, value=value, span=self.span(first[2], first[3], end_line, end_col))

    # ---------------------------------------------------------- expressions
    #
    # Each returns (node, depth, container start, container end) flattened:
    # (node, depth, line, column, end_line, end_column). The container is
    # lark's: a parenthesized expression's node keeps its own span, but the
    # nodes around it start or end at its parentheses. The depth counts
    # expression nodes, as parser._check_depth does.

    def top_expr(self):
        tok, after = self.toks[self.i], self.toks[self.i + 1]
        if tok[0] in _LEAVES and not (after[0] == _PUNCT and after[1] in "+-*/^") and tok[1] not in _KEYWORDS:
            self.i += 1  # most values are one number or name: no descent through the precedence levels
            node, _, line, col, end_line, end_col = self.leaf(tok)
            return node, line, col, end_line, end_col
        node, depth, line, col, end_line, end_col = self.expr()
        if depth > self.max_depth:
            raise Fallback
        return node, line, col, end_line, end_col

    def expr(self):
        left = self.product()
        toks = self.toks
        while True:
            kind, value = toks[self.i][:2]
            if kind != _PUNCT or value not in "+-":
                return left
            self.i += 1
            left = self.binary(value, left, self.product())

    def product(self):
        left = self.unary()
        toks = self.toks
        while True:
            kind, value = toks[self.i][:2]
            if kind != _PUNCT or value not in "*/":
                return left
            self.i += 1
            left = self.binary(value, left, self.unary())

    def binary(self, op: str, left, right):
        node, depth, line, col = left[0], left[1], left[2], left[3]
        end_line, end_col = right[4], right[5]
        depth = max(depth, right[1]) + 1
        if depth > self.max_depth:
            raise Fallback
        return (ir.BinOp.trusted(op=op, left=node, right=right[0], span=self.span(line, col, end_line, end_col)),
                depth, line, col, end_line, end_col)

    def unary(self):
        tok = self.toks[self.i]
        if tok[0] == _PUNCT and tok[1] == "-":
            self.i += 1
            self.enter()
            operand = self.unary()
            self.nesting -= 1
            depth = operand[1] + 1
            if depth > self.max_depth:
                raise Fallback
            span = self.span(tok[2], tok[3], operand[4], operand[5])
            return ir.Neg.trusted(operand=operand[0], span=span), depth, tok[2], tok[3], operand[4], operand[5]
        base = self.atom()
        tok = self.toks[self.i]
        if tok[0] == _PUNCT and tok[1] == "^":
            self.i += 1
            self.enter()
            exponent = self.unary()
            self.nesting -= 1
            return self.binary("^", base, exponent)
        return base

    def enter(self) -> None:
        """Nesting this parser recurses on (parentheses, `-`, `^`): past the
        depth limit, lark (iterative) takes it: it may be valid, e.g. many
        parentheses around one number."""
        self.nesting += 1
        if self.nesting > self.max_depth:
            raise Fallback

    def atom(self):
        tok = self.next()
        kind, value, line, col = tok
        if kind == _NAME:
            if value == "sqrt":
                return self.call(tok)
            if value in ("min", "max"):
                return self.minmax(tok)
            if value in _KEYWORDS:
                raise Fallback
        if kind in _LEAVES:
            return self.leaf(tok)
        if kind == _PUNCT and value == "(":
            self.enter()
            inner = self.expr()
            self.nesting -= 1
            close = self.expect(")")
            return inner[0], inner[1], line, col, close[2], close[3] + 1
        raise Fallback

    def leaf(self, tok):
        """A number or a name (not a keyword) as an expression."""
        kind, value, line, col = tok
        span = ir.span_at(self.file, line, col, line, col + len(value))
        if kind == _NAME:
            node = ir.Sym.trusted(name=value, span=span)
        elif "." in value:
            number = Fraction(value)
            node = ir.Num.trusted(numerator=number.numerator, denominator=number.denominator, span=span)
        else:
            node = ir.Num.trusted(numerator=int(value), denominator=1, span=span)
        return node, 1, line, col, line, col + len(value)

    def call(self, tok):
        self.expect("(")
        self.enter()
        arg = self.expr()
        self.nesting -= 1
        close = self.expect(")")
        line, col, end_line, end_col = tok[2], tok[3], close[2], close[3] + 1
        node = ir.Call.trusted(func="sqrt", arg=arg[0], span=self.span(line, col, end_line, end_col))
        return node, arg[1] + 1, line, col, end_line, end_col

    def minmax(self, tok):
        self.expect("(")
        self.enter()
        args = [self.expr()]
        while self.toks[self.i][:2] == (_PUNCT, ","):
            self.i += 1
            args.append(self.expr())
        self.nesting -= 1
        close = self.expect(")")
        if len(args) < 2:
            raise Fallback
        line, col, end_line, end_col = tok[2], tok[3], close[2], close[3] + 1
        node = ir.MinMax.trusted(func=tok[1], args=tuple(a[0] for a in args),
                                 span=self.span(line, col, end_line, end_col))
        return node, max(a[1] for a in args) + 1, line, col, end_line, end_col


_ESCAPE = re.compile(r"\\(.)")


def _unquote(token: str) -> str:
    """The text between the quotes; escapes other than \\" and \\\\ are lark's errors."""
    body = token[1:-1]
    if "\\" not in body:
        return body
    if any(m.group(1) not in '"\\' for m in _ESCAPE.finditer(body)):
        raise Fallback
    return _ESCAPE.sub(lambda m: m.group(1), body)

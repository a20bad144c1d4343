"""The fast parser (mupspec/fastparse.py) against lark's (parser.py): on any
text it either gives up (`Fallback`, and lark parses) or gives exactly the
IR lark's path gives -- every node, span, comment, field order and set
fields -- and every error is lark's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from mupspec import fastparse, ir, parser
from mupspec.errors import MupError, render_all
from mupspec.printer import format_spec
from strategies import specs

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = sorted((ROOT / "specs").glob("*.mup")) + [ROOT / "tests/data/all_constructs.mup"]
ERROR_FILES = sorted((ROOT / "tests/data/errors").glob("*.mup"))


def shape(value):
    """Everything a node holds, including what `==` does not look at: the
    class, the field order of `__dict__` and `model_fields_set`."""
    if isinstance(value, ir.Node):
        return (type(value).__name__, tuple(value.__dict__), sorted(value.model_fields_set),
                tuple(shape(v) for v in value.__dict__.values()))
    if isinstance(value, parser._RawBlock):
        return ("block", value.kind, shape(value.kind_span), shape(value.rules), shape(value.span),
                value.comments, value.note, value.end_comments)
    if isinstance(value, (tuple, list)):
        return tuple(shape(v) for v in value)
    return value


def by_lark(text: str, file: str | None = "x.mup"):
    items, comments = parser._parse_with_lark(text, file)
    return parser.attach_comments(file, *items[0][1:], items[1:], comments)


def by_fastparse(text: str, file: str | None = "x.mup"):
    items, comments = fastparse.parse(text, file)
    return parser.attach_comments(file, *items[0][1:], items[1:], comments)


def agree(text: str, file: str | None = "x.mup") -> bool:
    """True if the fast path parsed `text` (then exactly as lark does);
    False if it gave up. Any other exception escapes: a bug."""
    try:
        fast = by_fastparse(text, file)
    except fastparse.Fallback:
        return False
    try:
        slow = by_lark(text, file)
    except MupError as err:
        raise AssertionError(f"the fast path accepted text lark refuses: {err}") from None
    assert fast[0] == slow[0]
    assert shape(fast) == shape(slow)
    return True


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_the_fast_path_parses_every_bundled_spec_as_lark_does(path):
    assert agree(path.read_text(encoding="utf-8"), str(path))  # and it does not give up on them


@pytest.mark.parametrize("path", ERROR_FILES, ids=lambda p: p.name)
def test_every_error_is_larks_message_at_larks_position(path):
    """Files with an error in them: the fast path gives up on each syntax
    error (and parses the ones whose errors come later, as lark does), so
    the message a user sees is the lark path's, word for word."""
    text = path.read_text(encoding="utf-8")
    agree(text, str(path))
    try:
        by_lark(text, str(path))
    except MupError as lark_error:
        with pytest.raises(MupError) as err:
            parser._parse(text, str(path))
        assert render_all(err.value, {str(path): text}, color=False) == \
            render_all(lark_error, {str(path): text}, color=False)


@pytest.mark.parametrize("text", [
    "parametrization p\nhidden { mult = 1e3 }\n",                  # malformed number (lark's callback)
    "parametrization p\nhidden { mult = 2n }\n",
    "parametrization p\nhidden { mult = 1. }\n",
    'parametrization p "bad \\n escape"\n',                        # unknown escape
    "parametrization p\nhidden { mult = min(1) }\n",               # one argument
    "parametrization p\nhidden { mult = 1 ",                       # end of input
    "parametrization p\nhidden { mult = n \u00a0}\n",               # a character outside the grammar
    "parametrization p\nhidden { mult = (1 }\n",
    "parametrization p\nhidden { lr.adam.x = 1 }\n",
    "parametrization p\nhyper a = " + "9" * 101 + "\n",            # over 100 digits
    "parametrization p\nhidden { mult = " + "-" * 1001 + "1 }\n",  # deeper than the limit
])
def test_errors_and_limits_go_through_lark(text):
    with pytest.raises(fastparse.Fallback):
        fastparse.parse(text, "x.mup")
    with pytest.raises(MupError) as fast:
        parser._parse(text, "x.mup")
    try:
        by_lark(text)
    except MupError as lark_error:
        assert str(fast.value) == str(lark_error)


@pytest.mark.parametrize("limit,at_limit,extra,message", [
    ("MAX_DECLARATIONS", "parametrization p\nwidth n\ndepth L\nhyper a = 1\n", "tie input, output\n",
     "more than 3 declarations in one spec"),
    ("MAX_RULES", "parametrization p\nhidden { mult = 1\n lr.sgd = 1 }\n", "input {\n  mult = 1\n}\n",
     "more than 2 rules in one spec"),
])
def test_the_count_limits_are_larks_located_errors(monkeypatch, limit, at_limit, extra, message):
    """Up to a limit the fast path parses; one more declaration or rule is
    lark's located error, at line 5. (Limits made small for the test.)"""
    monkeypatch.setattr(parser, limit, int(message.split()[2]))
    assert agree(at_limit)
    with pytest.raises(fastparse.Fallback):
        fastparse.parse(at_limit + extra, "x.mup")
    with pytest.raises(MupError) as err:
        parser._parse(at_limit + extra, "x.mup")
    assert str(err.value) == message and err.value.diagnostics[0].span.line == 5


@pytest.mark.parametrize("text", [
    "parametrization p\nhyper sqrt = 1\n",           # keywords are names where lark's lexer allows
    "parametrization p\nhidden { width = 1 }\n",
    "parametrization width\n",
    "parametrization p\nhidden { mult = " + "(" * 1500 + "n" + ")" * 1500 + " }\n",  # deep parentheses, 1 node
])
def test_corners_the_fast_path_leaves_to_lark_still_parse(text):
    with pytest.raises(fastparse.Fallback):
        fastparse.parse(text, "x.mup")
    spec, blocks = parser._parse(text, "x.mup")
    assert shape((spec, blocks)) == shape(by_lark(text))


def test_depth_up_to_the_limit_is_the_fast_paths():
    deepest = "parametrization p\nhidden { mult = " + "-" * (parser.MAX_DEPTH - 1) + "n }\n"
    assert agree(deepest)
    assert not agree(deepest.replace("= -", "= --"))  # one level more: lark's located error


def test_spans_follow_larks_containers():
    """A parenthesized expression keeps its own span; the nodes around it
    start and end at its parentheses (lark's propagate_positions)."""
    text = "parametrization p\nhyper a = ((1) + 2) * (3)\nhidden {\n  mult = -(n) ;\n  lr.sgd = sqrt( n )\n}\n"
    assert agree(text)
    spec, blocks = by_fastparse(text)
    product = spec.hypers[0].value
    assert (product.span.column, product.span.end_column) == (11, 26)
    assert (product.left.span.column, product.left.span.end_column) == (12, 19)  # inside its parentheses
    assert (product.left.left.span.column, product.left.left.span.end_column) == (13, 14)  # `1`, not `(1)`
    mult = blocks[0].rules[0]
    assert (mult.span.column, mult.span.end_column) == (3, 16)  # up to the `;`


# Layout the printer never writes: tabs, form feeds, carriage returns, blank
# lines and comments between any two tokens, `;` after rules, parentheses.
_GAP = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", " \f", "\n\n  ", " # c\n", "#\n", " #x \t\n"])


_PIECE = re.compile(r'"(?:[^"\\]|\\.)*"|#.*|[ ]+|[^ "#]+')


@st.composite
def relaid(draw) -> str:
    """A printed spec with every blank between tokens replaced by a gap and
    some rules ended by `;` (comments and quoted strings kept as they are)."""
    lines = []
    for line in format_spec(draw(specs())).split("\n"):
        pieces = _PIECE.findall(line)
        if line.startswith("  ") and not line.lstrip().startswith("#") and draw(st.booleans()):
            at = next((i for i, p in enumerate(pieces) if p.startswith("#")), len(pieces))
            pieces.insert(at, ";")
        lines.append("".join(draw(_GAP) if p.isspace() else p for p in pieces))
    return "\n".join(lines)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(specs().map(format_spec), relaid()))
def test_the_fast_path_parses_generated_specs_as_lark_does(text):
    assert agree(text)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=fuzzing.inputs())
def test_on_any_input_the_fast_path_agrees_or_gives_up(text):
    """Grammar sentences, mutated bundled specs, wild values: never a
    different IR, never an exception but Fallback, never a spec lark refuses."""
    agree(text)


_PROBES = [chr(c) for c in range(0x2100)] + ["\u2028", "\u2029", "\ufeff"]
_WRAPS = ["{}", "a{}", "_{}9", "1{}", "1.{}", "{}2", '"{}"', '"a{}b"', '"\\{}"', '"\\"{}"', "#{}", "#{}x", " {}", "{} "]


@pytest.mark.parametrize("terminal", ["NAME", "NUMBER", "STRING", "COMMENT", "WS"])
def test_the_terminals_are_the_grammars(terminal):
    """The fast path's terminals match exactly what lark's do, on every
    character up to U+20FF and the line separators, alone and in context."""
    ours = re.compile(getattr(fastparse, terminal))
    larks = re.compile(next(t for t in parser._lark().terminals if t.name == terminal).pattern.to_regexp())
    for wrap in _WRAPS:
        for probe in _PROBES:
            text = wrap.format(probe)
            assert bool(ours.fullmatch(text)) == bool(larks.fullmatch(text)), (terminal, text)


def test_trusted_nodes_are_validated_nodes():
    span = ir.Span(file="f", line=1, column=2, end_line=3, end_column=4)
    for cls, values in [(ir.Span, dict(file="f", line=1, column=2, end_line=3, end_column=4)),
                        (ir.Num, dict(numerator=3, denominator=4, span=span)),
                        (ir.Sym, dict(name="n", span=span)),
                        (ir.BinOp, dict(op="^", left=ir.Sym(name="n"), right=ir.Num(numerator=2), span=span)),
                        (ir.Rule, dict(field="mult", value=ir.Sym(name="n"), span=span)),
                        (ir.Dim, dict(role="width", names=("n", "d"), values=(None, ir.Num(numerator=4)), span=span))]:
        trusted, validated = cls.trusted(**values), cls(**values)
        assert trusted == validated and shape(trusted) == shape(validated)
        assert trusted.model_dump_json() == validated.model_dump_json()
        copied = trusted.model_copy(update={"span": ir.NO_SPAN})
        assert copied.model_fields_set == validated.model_fields_set | {"span"}
        assert cls.trusted(**values).model_fields_set == trusted.model_fields_set  # shared: not grown by the copy
    at = ir.span_at("f", 1, 2, 3, 4)
    assert shape(at) == shape(span) and at.model_dump_json() == span.model_dump_json()

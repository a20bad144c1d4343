"""Property tests of the printer: for every valid spec, parse(print(spec)) is
the same spec up to spans, and printing is idempotent (fmt of fmt changes
nothing). Specs come from tests/strategies.py."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mupspec import ir
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import parse_and_validate
from tests.strategies import _acceptable_rule_value, expressions, same_ignoring_spans, specs, strip_spans


@settings(max_examples=100)
@given(specs())
def test_parse_of_print_is_identity(spec):
    text = format_spec(spec)
    parsed = parse_and_validate(text)
    assert strip_spans(parsed.model_dump()) == strip_spans(spec.model_dump()), text
    assert format_spec(parsed) == text


@settings(max_examples=150)
@given(expressions(("n", "fan_in", "L"), max_leaves=10).filter(lambda e: _acceptable_rule_value("init.var", e)))
def test_expression_round_trip(expr):
    text = f"parametrization x\nwidth n\ndepth L\nhidden {{\n  init.var = {format_expr(expr)}\n}}\n"
    parsed = parse_and_validate(text).block("hidden").rules[0].value
    assert same_ignoring_spans(parsed, expr), format_expr(expr)


def test_strip_spans_drops_every_span():
    spec = parse_and_validate("parametrization x\nhidden { mult = 1/n }\n")
    assert "span" not in repr(strip_spans(spec.model_dump()))
    assert spec.span.line == 1 and spec.blocks[0].rules[0].value.span.column == 17


_SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.mup"))
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\s+|[A-Za-z_0-9.]+|.')


@st.composite
def commented_specs(draw) -> tuple[str, list[str]]:
    """A bundled spec with `# note K` comments added between random tokens
    (each ends its line, so the spec still parses)."""
    tokens = _TOKENS.findall(draw(st.sampled_from(_SPECS)).read_text())
    free = [i for i in range(len(tokens) + 1) if i == 0 or not tokens[i - 1].startswith("#")]
    slots = sorted(draw(st.lists(st.sampled_from(free), min_size=1, max_size=8, unique=True)), reverse=True)
    added = []
    for k, slot in enumerate(slots):
        added.append(f"note {k}")
        tokens.insert(slot, f"  # note {k}\n")
    return "".join(tokens), added


@settings(max_examples=80)
@given(commented_specs())
def test_every_comment_survives_fmt(case):
    text, added = case
    once = format_spec(parse_and_validate(text))
    comments = [c.strip() for c in re.findall(r"#([^\n]*)", once)]
    for note in added:
        assert comments.count(note) == 1, (note, once)
    assert sorted(comments) == sorted(c.strip() for c in re.findall(r"#([^\n]*)", text))
    assert format_spec(parse_and_validate(once)) == once

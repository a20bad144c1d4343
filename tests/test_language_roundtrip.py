"""Property tests of the printer: for every valid spec, parse(print(spec)) is
the same spec up to spans, and printing is idempotent (fmt of fmt changes
nothing). Specs come from tests/strategies.py."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings

from mupspec import ir
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import parse_and_validate
from tests.strategies import _acceptable_rule_value, expressions, same_ignoring_spans, specs, strip_spans


@settings(max_examples=150)
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

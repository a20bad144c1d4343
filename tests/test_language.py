"""Unit tests of the .mup language's semantics: what each construct parses
to, the documented defaults, `extends` merging, precedence, comments and
exact numbers. The examples mirror docs/language.md."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from mupspec import ir
from mupspec.errors import MupError
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import load_spec, parse_and_resolve, parse_and_validate, parse_as_written

ROOT = Path(__file__).resolve().parents[1]


def _value(text: str, block: str = "hidden", field: str = "mult"):
    spec = parse_and_validate(f"parametrization x\nwidth n\ndepth L\n{block} {{ {field} = {text} }}\n")
    return spec.block(block).rule(field).value


def _shape(expr) -> str:
    """A fully parenthesized rendering, to test how an expression grouped."""
    if isinstance(expr, ir.Num):
        return str(expr.value)
    if isinstance(expr, ir.Sym):
        return expr.name
    if isinstance(expr, ir.Neg):
        return f"(-{_shape(expr.operand)})"
    if isinstance(expr, ir.Call):
        return f"sqrt({_shape(expr.arg)})"
    return f"({_shape(expr.left)}{expr.op}{_shape(expr.right)})"


@pytest.mark.parametrize("text, shape", [
    ("1/fan_in^2", "(1/(fan_in^2))"),
    ("n^-1/2", "((n^(-1))/2)"),          # the trap: not n^(-1/2)
    ("n^(-1/2)", "(n^((-1)/2))"),     # unary minus binds tighter than /
    ("-n^2", "(-(n^2))"),
    ("2^3^2", "(2^(3^2))"),              # right-associative
    ("n - 1 - 1", "((n-1)-1)"),          # left-associative
    ("n/2/L", "((n/2)/L)"),
    ("1 + n*L", "(1+(n*L))"),
    ("sqrt(n)*L^0.5", "(sqrt(n)*(L^1/2))"),
])
def test_precedence(text, shape):
    assert _shape(_value(text)) == shape


def test_canonical_form_makes_the_exponent_trap_visible():
    assert format_expr(_value("n^-1/2")) == "n^(-1)/2"
    assert format_expr(_value("n^(-1/2)")) == "n^(-1/2)"


@pytest.mark.parametrize("literal, value", [("0.5", Fraction(1, 2)), ("0.1", Fraction(1, 10)),
                                            ("2.50", Fraction(5, 2)), ("007", Fraction(7))])
def test_numbers_are_exact(literal, value):
    num = _value(literal)
    assert isinstance(num, ir.Num) and num.value == value
    assert format_expr(num) == str(float(value)).removesuffix(".0")
    dumped = num.model_dump(mode="json")
    assert (dumped["numerator"], dumped["denominator"]) == (value.numerator, value.denominator)


def test_every_construct_parses():
    spec = parse_and_validate((ROOT / "tests" / "data" / "all_constructs.mup").read_text(), "all.mup")
    assert spec.name == "all_constructs" and spec.title == 'Every "construct"'
    assert spec.widths == ("n", "d_ff") and spec.depth == "L"
    assert [h.name for h in spec.hypers] == ["alpha_out", "eta_scale"]
    assert [b.kind for b in spec.blocks] == [k for k in ir.BLOCK_KINDS if k not in ir.SUBROLES]
    assert {r.field for b in spec.blocks for r in b.rules} >= {"init.var", "init.std", "mult", "lr.sgd", "lr.adam",
                                                               "wd.sgd", "wd.adam", "eps.adam", "logit"}
    assert format_spec(parse_and_validate(format_spec(spec))) == format_spec(spec)
    resolved = load_spec(ROOT / "tests" / "data" / "all_constructs.mup")
    assert resolved.resolved and resolved.extends.is_path


def test_defaults():
    spec = parse_and_resolve("parametrization x\nhidden { lr.adam = 1/fan_in }\nattention { }\n")
    assert spec.widths == ("n",)  # no `width` declaration: the width is `n`
    hidden, attention = spec.block("hidden"), spec.block("attention")
    assert format_expr(ir.rule_value(hidden, "init.var")) == "1/fan_in"
    assert format_expr(ir.rule_value(hidden, "mult")) == "1"
    assert format_expr(ir.rule_value(hidden, "wd.adam")) == "1"
    assert format_expr(ir.rule_value(attention, "logit", spec.widths)) == "1/sqrt(n)"
    assert spec.block("input") is None  # an absent block: the spec does not cover that class
    assert ir.optimizers(spec) == ("adam",)
    assert ir.optimizers(parse_and_resolve("parametrization x\nhidden { mult = 2 }\n")) == ("sgd", "adam")


def test_init_std_is_the_square_root_of_the_variance():
    spec = parse_and_validate("parametrization x\nhidden { init.std = 1/sqrt(fan_in) }\n")
    assert format_expr(ir.rule_value(spec.block("hidden"), "init.var")) == "(1/sqrt(fan_in))^2"


def test_zero_init_is_allowed_but_zero_lr_is_not():
    parse_and_validate("parametrization x\nbias { init.var = 0 }\noutput { init.std = 0 }\n")
    with pytest.raises(MupError, match="`lr.sgd` is zero"):
        parse_and_validate("parametrization x\nbias { lr.sgd = 0 }\n")


def test_extends_by_name_merges_rule_by_rule():
    spec = load_spec(ROOT / "specs" / "sp_lr_inv_width.mup")
    base = load_spec(ROOT / "specs" / "sp.mup")
    assert spec.extends == ir.Ref(target="sp", span=spec.extends.span)
    hidden = spec.block("hidden")
    assert format_expr(hidden.rule("lr.sgd").value) == "1/n"              # overridden
    assert format_expr(hidden.rule("init.var").value) == "1/fan_in"      # inherited
    assert spec.block("attention") == base.block("attention")           # whole block inherited
    assert spec.widths == ("n",) and spec.resolved


def test_extends_by_quoted_path_and_override_of_init_spelling(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.mup").write_text(
        "parametrization base\nwidth n\nhyper alpha = 2\nhidden { init.var = 1/fan_in; mult = alpha }\n")
    derived = tmp_path / "derived.mup"
    derived.write_text('parametrization derived extends "lib/base.mup"\nhidden { init.std = 1/sqrt(n) }\n')
    spec = load_spec(derived)
    hidden = spec.block("hidden")
    assert hidden.rule("init.var") is None  # init.std replaces the base's init.var
    assert format_expr(hidden.rule("init.std").value) == "1/sqrt(n)"
    assert format_expr(hidden.rule("mult").value) == "alpha" and spec.hyper("alpha") is not None
    assert spec.extends.is_path and spec.extends.target == "lib/base.mup"
    # fmt keeps the derived file as written, validated against the base's symbols
    assert format_spec(parse_as_written(derived.read_text(), str(derived))).startswith(
        'parametrization derived extends "lib/base.mup"\n')


def test_derived_spec_may_use_base_symbols_and_redeclare_dims(tmp_path):
    (tmp_path / "base.mup").write_text("parametrization base\nwidth m\nhyper a = 1\n")
    (tmp_path / "d.mup").write_text("parametrization d extends base\ndepth L\nresidual { mult = a/sqrt(L*m) }\n")
    spec = load_spec(tmp_path / "d.mup")
    assert spec.widths == ("m",) and spec.depth == "L"


COMMENTED = """\
# file comment
parametrization c "C"  # header note

# before width
width n  # width note
hyper a = 0.5  # hyper note

# before input
input { init.var = 1/fan_in; lr.adam = 1 }  # one-line block note
hidden {  # block note
  # before rule
  mult = 1/  # inside an expression
    fan_in  # rule note
  # block end
}
# file end
"""


def _comments(text: str) -> list[str]:
    return sorted(m.group().lstrip("#").strip() for m in re.finditer(r"#[^\n]*", text))


def test_every_comment_survives_fmt():
    once = format_spec(parse_and_validate(COMMENTED))
    assert _comments(once) == _comments(COMMENTED)
    assert format_spec(parse_and_validate(once)) == once
    assert "input {  # one-line block note" in once
    assert "  mult = 1/fan_in  # rule note" in once


@pytest.mark.parametrize("title", ['plain', 'with "quotes"', "back\\slash", "μP ☃", "tab\there", ""])
def test_titles_round_trip(title):
    spec = ir.Spec(name="t", title=title)
    text = format_spec(spec)
    assert parse_and_validate(text).title == title
    assert "\n" not in text.strip()


def test_spans_point_into_the_source():
    spec = parse_and_validate("parametrization x\nwidth n\nhidden {\n  lr.sgd = 1/fan_in\n}\n", "f.mup")
    rule = spec.block("hidden").rule("lr.sgd")
    assert (rule.span.file, rule.span.line, rule.span.column, rule.span.end_column) == ("f.mup", 4, 3, 20)
    assert (rule.value.right.span.column, rule.value.right.span.end_column) == (14, 20)


def test_ir_is_frozen_and_strict():
    num = ir.Num.of(1)
    with pytest.raises(Exception):
        num.numerator = 2
    with pytest.raises(Exception):
        ir.Num(numerator=1, colour="red")
    with pytest.raises(Exception):
        ir.Num(numerator=1, denominator=3)  # not a finite decimal


def test_json_round_trips_through_the_ir():
    spec = load_spec(ROOT / "specs" / "umup.mup")
    assert ir.Spec.model_validate_json(spec.model_dump_json()) == spec

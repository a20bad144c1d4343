"""Fuzz tests: whatever the text, the language stages and the CLI fail only
with `MupError` (rendered, exit 2), never with another exception or a
traceback. Inputs: strings generated from mupspec/grammar.lark (so most get
past the lexer and many parse) and random mutations of the bundled specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings

import fuzzing
from mupspec.cli import main
from mupspec.errors import MupError, render_all
from mupspec.printer import format_spec
from mupspec.resolve import parse_and_resolve, parse_and_validate

SPECS = Path(__file__).resolve().parents[1] / "specs"
SPEC_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.mup"))}


_grammar_strings = fuzzing.grammar_strings  # shared with the campaign harness (tests/fuzzing.py)
mutated_specs = fuzzing.mutated_specs


def _all_stages(text: str, file: str) -> None:
    """Run every language stage; only MupError may come out (and it must render)."""
    try:
        spec = parse_and_resolve(text, file)
        format_spec(spec)
        spec.model_dump_json()
        again = parse_and_validate(format_spec(parse_and_validate(text, file)), file)
        format_spec(again)
    except MupError as err:
        rendered = render_all(err, {file: text}, color=False)
        assert rendered and "Traceback" not in rendered
        assert all(d.message for d in err.diagnostics)


@settings(max_examples=80)
@given(_grammar_strings())
def test_grammar_strings_fail_only_with_mup_error(text):
    _all_stages(text, str(SPECS / "fuzz.mup"))  # bases resolve against the bundled specs


@settings(max_examples=120)
@given(mutated_specs())
def test_mutated_specs_fail_only_with_mup_error(text):
    _all_stages(text, str(SPECS / "fuzz.mup"))


def test_grammar_strings_reach_the_validator():
    """The generator is useful only if many of its strings parse."""
    parsed = []

    @settings(max_examples=40)
    @given(_grammar_strings())
    def collect(text):
        try:
            parse_and_validate(text)
            parsed.append(text)
        except MupError as err:
            if "unexpected" not in str(err) and "malformed" not in str(err):
                parsed.append(text)  # a semantic error: it got past the parser

    collect()
    assert len(parsed) >= 10


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specs")
    for name in SPEC_TEXTS:
        shutil.copy(SPECS / name, folder / name)
    return folder


@settings(max_examples=40)
@given(text=mutated_specs())
def test_cli_fails_cleanly_on_mutations(text, spec_dir):
    path = spec_dir / "mutant.mup"
    path.write_text(text, encoding="utf-8")
    import contextlib
    import io

    for argv in (["parse", str(path)], ["parse", "--json", str(path)], ["fmt", "--check", str(path)]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        assert code in (0, 1, 2)
        assert "Traceback" not in err.getvalue()
        if code == 2:
            assert ": error: " in err.getvalue()

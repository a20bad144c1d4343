"""Golden tests of the diagnostics: each tests/data/errors/NAME.mup, run through
`mupspec parse`, must exit 2 and print exactly NAME.expected on stderr.

Regenerate after a deliberate change of wording:
    MUPSPEC_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_language_errors.py
then read every changed .expected (git diff) before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mupspec.cli import main

ERRORS = Path(__file__).parent / "data" / "errors"
CASES = sorted(p.stem for p in ERRORS.glob("*.mup"))
REGEN = os.environ.get("MUPSPEC_REGEN_GOLDEN") == "1"


def _run(name: str, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(ERRORS)  # paths in messages are relative: stable everywhere
    code = main(["parse", f"{name}.mup"])
    out, err = capsys.readouterr()
    return code, out, err


def test_there_are_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", CASES)
def test_golden(name, capsys, monkeypatch):
    code, out, err = _run(name, capsys, monkeypatch)
    assert code == 2, f"{name}.mup was accepted"
    assert out == ""
    assert "Traceback" not in err and "\033[" not in err
    expected = ERRORS / f"{name}.expected"
    if REGEN:
        expected.write_text(err, encoding="utf-8")
    assert expected.exists(), f"no {expected.name}; run with MUPSPEC_REGEN_GOLDEN=1"
    assert err == expected.read_text(encoding="utf-8")


def test_several_errors_are_all_reported_in_order(capsys, monkeypatch):
    _, _, err = _run("several_errors", capsys, monkeypatch)
    headers = [line for line in err.splitlines() if ": error: " in line]
    assert len(headers) == 4
    positions = [tuple(int(x) for x in h.split(":")[1:3]) for h in headers]
    assert positions == sorted(positions)


def test_end_of_input_points_after_the_last_character(capsys, monkeypatch):
    _, _, err = _run("unexpected_end_of_input", capsys, monkeypatch)
    last = (ERRORS / "unexpected_end_of_input.mup").read_text().rstrip().splitlines()
    assert err.startswith(f"unexpected_end_of_input.mup:{len(last)}:{len(last[-1]) + 1}: error: ")


def test_no_lark_terminal_names_leak(capsys, monkeypatch):
    for name in CASES:
        _, _, err = _run(name, capsys, monkeypatch)
        for raw in ("__ANON", "LPAR", "RPAR", "LBRACE", "RBRACE", "$END", "NUMBER", "SEMICOLON", "EQUAL"):
            assert raw not in err, (name, raw)

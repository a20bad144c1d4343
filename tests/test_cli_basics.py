"""The CLI's language commands (`--help`, `parse`, `fmt`): exit codes,
output, the bundled specs, and a start that imports neither torch nor sympy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mupspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.mup"))

CANONICAL = 'parametrization tiny "Tiny"\n\nwidth n\n\nhidden {\n  init.var = 1/fan_in  # He\n  lr.adam = 1/fan_in\n}\n'
SCRAMBLED = 'parametrization tiny "Tiny"\nhidden { lr.adam = 1/fan_in; init.var = 1/fan_in  # He\n}\nwidth n\n'


def test_help_lists_the_language_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "parse" in out and "fmt" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fmt", "--frobnicate", "x.mup"])
    assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_bundled_spec_parses_to_json(spec, capsys):
    assert main(["parse", "--json", str(spec)]) == 0
    ir = json.loads(capsys.readouterr().out)
    assert ir["resolved"] is True and ir["name"] == spec.stem
    assert ir["dims"][0]["role"] == "width"


def test_bundled_specs_are_canonical(capsys):
    assert main(["fmt", "--check", *map(str, SPECS)]) == 0
    assert capsys.readouterr().err == ""


def test_fmt_check_exit_codes(tmp_path, capsys):
    good, bad, broken = tmp_path / "good.mup", tmp_path / "bad.mup", tmp_path / "broken.mup"
    good.write_text(CANONICAL)
    bad.write_text(SCRAMBLED)
    broken.write_text("parametrization tiny\nhidden { lr.adam = }\n")
    assert main(["fmt", "--check", str(good)]) == 0
    assert main(["fmt", "--check", str(bad)]) == 1
    assert "would reformat" in capsys.readouterr().err
    assert main(["fmt", "--check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.mup:2:20: error: unexpected '}'" in err and "Traceback" not in err
    assert bad.read_text() == SCRAMBLED  # --check changes nothing


def test_fmt_rewrites_into_canonical_form(tmp_path, capsys):
    bad = tmp_path / "bad.mup"
    bad.write_text(SCRAMBLED)
    assert main(["fmt", str(bad)]) == 0
    assert bad.read_text() == CANONICAL
    assert main(["fmt", "--check", str(bad)]) == 0


def test_fmt_never_rewrites_a_broken_file(tmp_path):
    broken = tmp_path / "broken.mup"
    broken.write_text("parametrization tiny\nhidden { lr.adam = 1/fan_inn }\n")
    assert main(["fmt", str(broken)]) == 2
    assert broken.read_text() == "parametrization tiny\nhidden { lr.adam = 1/fan_inn }\n"


def test_missing_file_and_directory_exit_2(tmp_path, capsys):
    assert main(["parse", str(tmp_path / "nope.mup")]) == 2
    assert main(["parse", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "is a directory" in err and "Traceback" not in err


def test_parse_unresolved_shows_the_file_as_written(capsys):
    assert main(["parse", "--unresolved", str(ROOT / "specs" / "completep.mup")]) == 0
    out = capsys.readouterr().out
    assert "extends mup_table8" in out and "input {" not in out
    assert main(["parse", str(ROOT / "specs" / "completep.mup")]) == 0
    assert "input {" in capsys.readouterr().out  # merged from the base


def test_language_commands_import_neither_torch_nor_sympy():
    code = ("import sys, mupspec.cli, mupspec.commands.parse, mupspec.commands.fmt\n"
            "from mupspec.cli import main\n"
            "main(['parse', 'specs/sp.mup'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sympy'))\n"
            "sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_fmt_reports_an_unwritable_file(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.mup"
    bad.write_text(SCRAMBLED)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)  # fmt writes with open(); reading uses Path.read_text
    assert main(["fmt", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Permission denied" in err and "Traceback" not in err


def test_check_of_several_specs_prints_inherited_findings_once_and_sums_up(capsys):
    """completep extends mup_table8: the parent's eps warnings are printed in
    full once, then pointed to; diagnostics come in source order; a closing
    line counts passes and failures."""
    specs = ROOT / "specs"
    files = [str(specs / "mup_table8.mup"), str(specs / "completep.mup"), str(specs / "sp.mup")]
    assert main(["check", *files]) == 1
    out = capsys.readouterr().out
    head = f"{specs / 'mup_table8.mup'}:9:1: warning: input: eps.adam"
    assert out.count(head) == 2
    assert out.count("(as shown above for mup_table8)") == 3           # input, output, bias
    located = re.compile(re.escape(str(specs / "sp.mup")) + r":(\d+):\d+: ")
    lines = [int(m.group(1)) for m in map(located.match, out.splitlines()) if m]
    assert lines == sorted(lines) and len(lines) > 2
    assert out.rstrip().endswith(f"3 specs checked against the μP desiderata: 2 pass, 1 fail: {specs / 'sp.mup'}")

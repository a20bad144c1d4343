"""What the commands print around their results: --quiet and repeated warnings,
colour only on a terminal, the subcommand's own usage on a usage error, what
Ctrl-C says, the progress bar (terminal only, lazily imported) and verify's JSON."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mupspec.cli import main
from mupspec.errors import Diagnostic, render, use_color
from mupspec.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_repeated_eps_warnings_are_one_line_after_the_first(capsys):
    assert main(["check", "mup_table8"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == 1
    assert ("the same warning for 3 more classes: hidden (fix: eps.adam = 1/fan_in), "
            "output (fix: eps.adam = 1/fan_in), bias (fix: eps.adam = 1/fan_out)") in out


def test_quiet_leaves_warnings_out_but_counts_them(capsys):
    assert main(["check", "--quiet", "mup_table8"]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out.replace("warnings hidden", "")
    assert "diagnostics (4; 4 warnings hidden by --quiet)" in out and "verdict: μP" in out


def test_quiet_keeps_errors(capsys):
    assert main(["check", "-q", "sp"]) == 1
    assert "error:" in capsys.readouterr().out


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Terminal()) and not use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Terminal())
    warning = render(Diagnostic("eps too big", severity="warning"), color=True)
    assert "\033[33mwarning:" in warning  # yellow; errors stay red
    assert "\033[31merror:" in render(Diagnostic("bad"), color=True)


def test_piped_output_has_no_escape_codes(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mupspec", "check", "sp"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 1 and "\033[" not in result.stdout + result.stderr


@pytest.mark.parametrize("argv, usage", [
    (["fmt", "--frobnicate", "x.mup"], "usage: mupspec fmt "),
    (["experiment", "spiral", "--out", "x", "--bogus"], "usage: mupspec experiment spiral "),
])
def test_a_subcommand_usage_error_shows_that_subcommands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(usage), err
    assert "unrecognized arguments" in err


def test_ctrl_c_in_a_sweep_says_how_to_resume(monkeypatch, capsys, tmp_path):
    import mupspec.empirical.spiral as spiral

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(spiral, "run", interrupted)
    assert main(["experiment", "spiral", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == (f"interrupted: finished runs are kept in {tmp_path}; "
                                       "run the same command again to resume\n")


def test_progress_draws_counts_and_eta_on_a_terminal():
    stream = Terminal()
    bar = Progress(total=10, done=4, stream=stream, unit="networks")
    bar.cell("w64", 0)
    bar.finished(3)
    bar.close()
    text = stream.getvalue()
    assert "7/10" in text and "networks/s" in text and "<" in text  # elapsed<remaining


def test_progress_is_silent_off_a_terminal():
    stream = io.StringIO()
    bar = Progress(total=3, stream=stream)
    bar.cell("w64", 10)
    bar.on_step(5)
    bar.finished(3)
    bar.close()
    assert stream.getvalue() == "" and bar.bar is None


def test_check_does_not_import_tqdm():
    code = ("import sys; from mupspec.cli import main; main(['check', 'mup_table8']); "
            "sys.exit(1 if 'tqdm' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, "check imported tqdm"


def test_verify_json_report(capsys):
    code = main(["verify", "mup", "--widths", "64,256,1024", "--depths", "3", "--seeds", "3", "--steps", "1",
                 "--optimizer", "adam", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "mupspec.verify/1" and report["spec"] == "mup_table8"
    assert report["ok"] == (code == 0) and report["grid"]["widths"] == [64, 256, 1024]
    assert {r["quantity"] for r in report["rows"]} >= {"act", "own"}
    row = report["rows"][0]
    assert set(row) == {"optimizer", "step", "class", "quantity", "term", "source", "predicted", "measured",
                        "ci95", "agrees", "asymptotic"}
    assert all(r["agrees"] == (abs(r["measured"] - r["predicted"]) <= report["tol"]) for r in report["rows"])

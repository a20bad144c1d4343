"""The bundled specs as a user meets them: by name in every command, listed by
`mupspec specs`, and inside the wheel (the installed-wheel run is in .ci/run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mupspec import bundled
from mupspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (ROOT / "specs").glob("*.mup"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m mupspec ARGS` in `cwd` (a folder without specs/), this checkout first on the path."""
    return subprocess.run([sys.executable, "-m", "mupspec", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_the_bundled_specs_are_the_files_in_specs():
    assert bundled.names() == NAMES
    for name in NAMES:
        assert bundled.path(name).read_bytes() == (ROOT / "specs" / f"{name}.mup").read_bytes()


@pytest.mark.parametrize("args, shown", [
    (["check", "mup_table8"], "mup_table8"),
    (["check", "mup"], "mup_table8"),  # the alias --expect always took
    (["parse", "sp"], "parametrization sp"),
    (["fmt", "--check", "depth_mup"], ""),  # canonical: silent, exit 0
    (["table", "mup_table3"], "Table"),
    (["convert", "mup_table3", "--to", "table8"], "parametrization mup_table3_table8"),
    (["equiv", "mup_table3", "mup_table8"], "mup_table3 and mup_table8: equivalent"),
])
def test_every_command_takes_a_bundled_name(args, shown, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert shown in result.stdout


def test_codegen_by_name_writes_the_module(tmp_path):
    result = run("codegen", "mup_table8", "-o", "params.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "def " in (tmp_path / "params.py").read_text()


def test_a_file_beats_a_bundled_name(tmp_path):
    (tmp_path / "sp").write_text((ROOT / "specs" / "mup_table8.mup").read_text())
    result = run("parse", "sp", cwd=tmp_path)
    assert result.returncode == 0 and "parametrization mup_table8" in result.stdout


def test_an_unknown_name_says_where_the_names_are(tmp_path):
    result = run("check", "mup_tabel8", cwd=tmp_path)
    assert result.returncode == 2
    assert "no such file: mup_tabel8" in result.stderr and "mupspec specs" in result.stderr
    assert "Traceback" not in result.stderr


def test_specs_lists_names_titles_and_sources(capsys):
    assert main(["specs", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in listed] == NAMES
    by_name = {s["name"]: s for s in listed}
    assert by_name["mup_table8"]["title"] == "muP (Tensor Programs V, Table 8)"
    assert by_name["mup_table8"]["source"] == "Tensor Programs V (Yang, Hu et al. 2022, arXiv 2203.03466), Table 8"
    assert by_name["umup"]["source"].startswith('Blake et al. 2024, "u-muP: The Unit-Scaled')
    assert all(s["source"] for s in listed), [s["name"] for s in listed if not s["source"]]


def test_specs_text_has_one_entry_per_spec(capsys):
    assert main(["specs"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == NAMES


def test_equiv_labels_by_file_when_the_names_collide(tmp_path, capsys):
    edited = tmp_path / "mine.mup"
    edited.write_text((ROOT / "specs" / "mup_table3.mup").read_text().replace(
        "output {\n  init.var = 1/fan_in^2", "output {\n  init.var = 1/fan_in"))
    assert main(["equiv", str(ROOT / "specs" / "mup_table3.mup"), str(edited)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{ROOT / 'specs' / 'mup_table3.mup'} and {edited}: not equivalent"), first


def test_the_wheel_ships_every_bundled_spec(tmp_path):
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    for folder in ("mupspec", "specs"):
        shutil.copytree(ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("mupspec-*.whl")
    shipped = {Path(n).stem for n in zipfile.ZipFile(wheel).namelist() if n.startswith("mupspec/specs/")}
    assert sorted(shipped) == NAMES


def test_the_pre_commit_hooks_run_on_mup_files(tmp_path):
    """Each hook's entry, as pre-commit runs it (entry + the staged .mup files)."""
    import re

    manifest = (ROOT / ".pre-commit-hooks.yaml").read_text()
    hooks = dict(re.findall(r"- id: (\S+)\n(?:  .*\n)*?  entry: (.+)\n", manifest))
    assert set(hooks) == {"mupspec-fmt", "mupspec-check"}
    assert manifest.count(r"files: \.mup$") == 2
    good = [str(ROOT / "specs" / "mup_table8.mup"), str(ROOT / "specs" / "depth_mup.mup")]
    messy = tmp_path / "messy.mup"
    messy.write_text('parametrization messy "M"\nhidden { lr.adam = 1/fan_in; init.var = 1/fan_in }\nwidth n\n')
    for hook, bad, expected in [("mupspec-fmt", str(messy), 1), ("mupspec-check", str(ROOT / "specs/sp.mup"), 1)]:
        program, *args = hooks[hook].split()
        assert program == "mupspec"
        assert run(*args, *good, cwd=tmp_path).returncode == 0
        assert run(*args, *good, bad, cwd=tmp_path).returncode == expected


def test_a_spec_of_ones_own_extends_a_bundled_one_by_name(tmp_path):
    (tmp_path / "mine.mup").write_text('parametrization mine "M" extends gpt_table8_tied\n\nhidden {\n'
                                       '  eps.adam = 1/fan_in\n}\n')
    result = run("check", "-q", "mine.mup", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "verdict: μP" in result.stdout


def test_a_base_beside_the_spec_wins_over_the_bundled_one(tmp_path):
    (tmp_path / "mup_table8.mup").write_text((ROOT / "specs" / "sp.mup").read_text().replace(
        "parametrization sp ", "parametrization mup_table8 "))
    (tmp_path / "mine.mup").write_text('parametrization mine "M" extends mup_table8\n')
    result = run("check", "mine.mup", cwd=tmp_path)
    assert result.returncode == 1 and "NOT μP" in result.stdout  # the local (SP) base, not the bundled μP

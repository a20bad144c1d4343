"""docs/quickstart.md, run: every file it shows is written, every `.venv/bin/...`
command it shows is run in that folder (training with --steps 20 instead of the
page's 300, to stay lean), and what the page says of the results is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "quickstart.md").read_text()
BLOCK = re.compile(r"^```(\w*)(?: file=(\S+))?\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks():
    return [(lang, name, body) for lang, name, body in BLOCK.findall(PAGE)]


def commands() -> list[str]:
    return [line for lang, name, body in blocks() if lang == "bash" and not name
            for line in body.splitlines() if line.startswith(".venv/bin/")]


def as_argv(line: str) -> list[str]:
    program, *args = line.split()
    if program == ".venv/bin/mupspec":
        return [sys.executable, "-m", "mupspec", *args]
    assert program == ".venv/bin/python", line
    return [sys.executable, *args] + (["--steps", "20"] if args[0] == "train.py" else [])


def test_the_page_shows_its_files_and_commands():
    assert {name for _, name, _ in blocks() if name} == {"my_gpt.mup", "train.py", "coord.py"}
    assert ".venv/bin/mupspec codegen my_gpt.mup -o my_gpt_params.py" in commands()


@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path):
    for _, name, body in blocks():
        if name:
            (tmp_path / name).write_text(body)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", OMP_WAIT_POLICY="PASSIVE")
    outputs = {}
    for line in commands():
        result = subprocess.run(as_argv(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs[line] = result.stdout
    assert "verdict: μP" in outputs[".venv/bin/mupspec check --quiet gpt_table8_tied"]
    assert "warning" not in outputs[".venv/bin/mupspec check my_gpt.mup"]
    assert "gpt_table8_tied and my_gpt: equivalent" in outputs[".venv/bin/mupspec equiv gpt_table8_tied my_gpt.mup"]
    coord = outputs[".venv/bin/python coord.py"]
    mup, one_lr = (float(m) for m in re.findall(r"slope ([+-]\d\.\d\d)", coord))
    assert abs(mup) < 0.5 < one_lr  # what section 6 reads off the output
    trained = [line for cmd, out in outputs.items() if "train.py" in cmd for line in out.splitlines()]
    assert len(trained) == 6 and all(re.match(r"d_model +\d+ +lr \S+ +loss \d+\.\d{3}$", t) for t in trained)

"""Codegen as text: golden files for every bundled spec, determinism, the
CLI, and safety of the generated source whatever names or text a spec holds.

Regenerate the golden files after an intended change with
    MUPSPEC_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_codegen.py
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mupspec import ir
from mupspec.codegen import generate, load_module
from mupspec.codegen.emit import check_name
from mupspec.errors import MupError
from mupspec.resolve import load_spec, parse_and_resolve

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "codegen"
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.mup"))
REGEN = os.environ.get("MUPSPEC_REGEN_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # spec paths in the golden files are relative to the repository


@pytest.mark.parametrize("name", SPECS)
def test_golden(name):
    source = generate(load_spec(f"specs/{name}.mup"), f"specs/{name}.mup")
    golden = GOLDEN / f"{name}.py"
    if REGEN:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(source, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run with MUPSPEC_REGEN_GOLDEN=1"
    assert source == golden.read_text(encoding="utf-8"), "generated source changed; regenerate if intended"


@pytest.mark.parametrize("name", SPECS)
def test_generated_source_imports_only_math_and_torch(name):
    tree = ast.parse((GOLDEN / f"{name}.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"math", "torch"}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"eval", "exec", "compile", "__import__", "open", "mupspec"}


def test_header_names_spec_and_version_and_each_rule_cites_its_line():
    source = (GOLDEN / "mup_table8.py").read_text(encoding="utf-8")
    assert 'SPEC_NAME = "mup_table8"' in source and 'MUPSPEC_VERSION = "0.1.0"' in source
    assert "    # specs/mup_table8.mup:23: output { mult = 1/fan_in }\n    return (1.0 / fan_in)" in source
    assert "    # hidden.mult = 1  (language default; not in the spec)\n    return 1.0" in source


def test_cli_writes_the_module(tmp_path):
    out = tmp_path / "x.py"
    done = subprocess.run([sys.executable, "-m", "mupspec", "codegen", "specs/mup_table8.mup", "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == (GOLDEN / "mup_table8.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("args,message", [
    (["specs/nope.mup"], "no such file"),
    (["specs/mup_table8.mup", "-o", "/nonexistent-dir/x.py"], "cannot write"),
])
def test_cli_errors_are_clear(args, message):
    done = subprocess.run([sys.executable, "-m", "mupspec", "codegen", *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["__import__('os')", "a b", "x;y", "class", "match", "é", "a" * 65, "1x", ""])
def test_hostile_names_are_refused(name):
    with pytest.raises(MupError, match="cannot be used in generated code"):
        check_name(name, "hyperparameter")


def test_hostile_spec_cannot_inject_code(tmp_path):
    spec = parse_and_resolve("parametrization evil\nwidth n\nhidden { lr.adam = 1/fan_in }\n", "evil.mup")
    title = 'x"""\nimport os; os.system("echo pwned")\n"""\\'
    spec = spec.model_copy(update={"title": title, "comments": (" ok\nimport os", " \u2028 bad\rline")})
    module = load_module(spec, "evil\nimport os.mup", str(tmp_path))
    assert module.SPEC_TITLE == title and "os" not in vars(module)
    hostile = spec.model_copy(update={"hypers": (ir.Hyper(name="__import__('os')", value=ir.Num(numerator=1)),)})
    with pytest.raises(MupError):
        generate(hostile, "evil.mup")
    bad_symbol = spec.model_copy(update={"blocks": (ir.Block(kind="hidden", rules=(
        ir.Rule(field="mult", value=ir.Sym(name="os.system")),)),)})
    with pytest.raises(MupError, match="unknown symbol"):
        generate(bad_symbol, "evil.mup")


def test_generation_is_deterministic():
    spec = load_spec("specs/umup.mup")
    assert generate(spec, "specs/umup.mup") == generate(load_spec("specs/umup.mup"), "specs/umup.mup")

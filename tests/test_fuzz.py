"""The CI slice of the fuzzing campaign (tests/fuzzing.py; the long run is
benchmarks/fuzz.py): inputs from every generator through every command, in
process, with no traceback, no located-less error, no generated module that
fails to compile, import, pass the AST whitelist or evaluate, no fmt that
changes a spec's meaning. Sized by measurement to stay under 60 s on the
2-core CI machine (docs/reliability.md)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings

import fuzzing

SLICE = 80  # inputs; CPU time measured in docs/reliability.md


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = fuzzing.fresh_workdir(tmp_path_factory.mktemp("fuzz"))
    fuzzing.warm_up(folder)
    return folder


@settings(max_examples=SLICE, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=fuzzing.inputs())
def test_every_command_survives_fuzzed_inputs(text, workdir):
    tally = fuzzing.Tally()
    fuzzing.run_input(text, workdir, tally)
    real = [f for f in tally.failures if f.kind != "slow"]  # timing is asserted by the campaign, not under CI load
    assert not real, "\n".join(f"{f.kind} in {f.command}: {f.detail}" for f in real)


def test_the_whitelist_rejects_what_codegen_must_never_emit():
    from mupspec.codegen import generate
    from mupspec.resolve import load_spec

    good = generate(load_spec(fuzzing.SPECS / "mup_table8.mup"), "t8.mup")
    assert fuzzing.check_module(good) is None
    injected = {
        "an import": good.replace("import math\n", "import math\nimport os\n", 1),
        "a call in a rule": good.replace("return (1.0 / fan_in)", "return __import__('os').getpid()", 1),
        "a string in a rule": good.replace("return (1.0 / fan_in)", "return 'x'", 1),
        "a non-finite constant": good.replace("HYPER_DEFAULTS = {}", 'HYPER_DEFAULTS = {"a": float("inf")}'),
        "a changed runtime": good.replace("def param_groups(", "def param_groups2(", 1),
        "a syntax error": good.replace("BLOCKS = (", "BLOCKS = (,", 1),
    }
    for what, source in injected.items():
        assert source != good, what
        assert fuzzing.check_module(source) is not None, what


@pytest.mark.parametrize("block", ["input", "hidden", "output"])
def test_the_whitelist_admits_a_muon_spec(block, tmp_path):
    """Found by the campaign (minimized): a spec with an `lr.muon` rule gets
    `MUON_BLOCKS = (...)` in its module, which the runtime reads (its stub
    declares it); the whitelist did not know the name ("line 26: assigns an
    unexpected name"). Codegen was right; the whitelist now follows the stub."""
    path = tmp_path / "m.mup"
    path.write_text(f"parametrization m\n{block} {{ lr.muon = 1/fan_in }}\n", encoding="utf-8")
    out = tmp_path / "m.py"
    code, _, err = fuzzing.run_command(["codegen", str(path), "-o", str(out)])
    assert code == 0, err
    source = out.read_text(encoding="utf-8")
    assert f'MUON_BLOCKS = ("{block}",)' in source
    assert fuzzing.check_module(source) is None
    assert fuzzing.check_generated(out, fuzzing.Tally()) is None  # and it imports and its rules evaluate
    assert fuzzing.check_module(source.replace("MUON_BLOCKS = (", "MUON_BLOCKZ = (", 1)) is not None


def test_the_whitelist_admits_min_and_max(tmp_path):
    """Found by the campaign (minimized): a rule with `max(...)` of three
    symbols compiles to the builtin `max`, which the whitelist refused ("Call
    in a rule"); any other call stays refused."""
    path = tmp_path / "m.mup"
    path.write_text("parametrization m\nwidth n\ndepth L\nbias { lr.adam = max(n, L, L)/n }\n"
                    "hidden { init.var = min(1, 1/fan_in) }\n", encoding="utf-8")
    out = tmp_path / "m.py"
    code, _, err = fuzzing.run_command(["codegen", str(path), "-o", str(out)])
    assert code == 0, err
    source = out.read_text(encoding="utf-8")
    assert "max(" in source and "min(" in source
    assert fuzzing.check_module(source) is None
    assert fuzzing.check_generated(out, fuzzing.Tally()) is None
    in_a_rule = re.sub(r"(\n    return [^\n]*?)max\(", r"\1print(", source, count=1)
    assert in_a_rule != source and fuzzing.check_module(in_a_rule) is not None


def test_a_leading_bom_is_not_an_fmt_failure(tmp_path):
    """Found by the campaign: mupspec drops a leading BOM when it reads a file,
    but the harness parsed the input string with it ("fmt output does not
    parse: unexpected character '\\ufeff'"), blaming fmt for its own read."""
    tally = fuzzing.Tally()
    fuzzing.run_input("\ufeff# a comment\nparametrization p\nhidden { init.var = 1/fan_in }\n",
                      fuzzing.fresh_workdir(tmp_path), tally)
    assert tally.inputs == 1 and not tally.failures, [f.detail for f in tally.failures]


def test_the_whitelist_knows_every_constant_the_runtime_reads():
    assert {"MUON_BLOCKS", "RULES", "DERIVED_WIDTHS", "TIES"} <= fuzzing._CONSTANT_NAMES
    assert "os" not in fuzzing._CONSTANT_NAMES and "param_groups" not in fuzzing._CONSTANT_NAMES

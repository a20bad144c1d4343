"""benchmarks/mutate.py, the mutation runner: its mutants and how it applies one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutate_module():
    spec = importlib.util.spec_from_file_location("mutate_tool", ROOT / "benchmarks" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_tool"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_mutants_cover_the_operators_and_mark_display_text():
    mutate = _mutate_module()
    found = mutate.mutants_of("mupspec/check.py")
    in_ok = [m for m in found if m.scope == "Term.ok"]
    assert {m.description for m in in_ok} >= {"`==` -> `!=`", "`<=` -> `<`", "`0` -> `1`"}
    assert all(not m.display for m in in_ok)
    notes = [m for m in found if m.scope == "_notes"]
    assert notes and all(m.display for m in notes)  # the function is marked `# mutate: display`
    assert any(m.description == "`min(...)` -> `max(...)`" for m in found)


def test_a_mutant_is_swapped_into_the_live_function_and_back():
    from mupspec import check

    mutate = _mutate_module()
    fn = check.depth_class
    original = fn.__code__
    mutant = next(m for m in mutate.mutants_of("mupspec/check.py")
                  if m.scope == "depth_class" and m.description == "`<` -> `<=`" and m.line == original.co_firstlineno + 3)
    dex = check.sym.DepthExponents(alpha=check.HALF, update={"adam": check.ONE}, mult_alpha=check.HALF,
                                   eps_adam=check.ZERO, alpha_width=check.ZERO)
    assert check.depth_class(dex, "adam") == "Depth-μP"
    try:
        mutate.apply(mutant, check)
        assert check.depth_class(dex, "adam") == "unstable at init"  # alpha <= 1/2 now fails
    finally:
        fn.__code__ = original
    assert check.depth_class(dex, "adam") == "Depth-μP"

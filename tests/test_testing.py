"""mupspec.testing: its strategies, its assertions, and the project's own
hypothesis tests of scaling laws (drawn specs, real networks, predictions
from the checker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mupspec import check
from mupspec.testing import assert_exponent, assert_scaling, scaling_specs, seeds, widths

SPECS = Path(__file__).resolve().parents[1] / "specs"
GRID = dict(widths=(64, 256, 1024), depths=(3,), seeds=(0, 1, 2), steps=1)


@given(widths(), seeds())
def test_grid_strategies(ws, ss):
    assert list(ws) == sorted(set(ws)) and ws[-1] >= 8 * ws[0]
    assert len(set(ss)) == len(ss) >= 2


@settings(max_examples=15)
@given(scaling_specs())
def test_drawn_specs_are_stable_by_default(spec):
    assert all(r.regime != "unstable" for r in check.check_spec(spec).results.values())


def test_assert_exponent():
    xs = [64, 128, 256]
    assert assert_exponent(xs, [x ** 0.5 for x in xs], 0.5) == pytest.approx(0.5)
    with pytest.raises(AssertionError, match="fitted exponent"):
        assert_exponent(xs, [x ** 0.5 for x in xs], 0.0)


def test_assert_scaling_fails_when_sp_is_held_to_mup():
    with pytest.raises(AssertionError, match="Layers that differ"):
        assert_scaling(SPECS / "sp.mup", expect=SPECS / "mup_table8.mup", optimizers=("adam",), **GRID)


@settings(max_examples=4)
@given(scaling_specs(optimizers=("adam",)))
def test_drawn_specs_scale_as_predicted_adam(spec):
    assert_scaling(spec, optimizers=("adam",), **GRID)


@settings(max_examples=3)
@given(scaling_specs(optimizers=("sgd",)))
def test_drawn_specs_scale_as_predicted_sgd(spec):
    assert_scaling(spec, optimizers=("sgd",), **GRID)


@pytest.mark.slow
@settings(max_examples=25)
@given(scaling_specs(), st.sampled_from(["mlp", "residual", "residual-prenorm"]))
def test_drawn_specs_scale_as_predicted_many(spec, arch):
    assert_scaling(spec, arch=arch, depths=(3, 4), seeds=(0, 1, 2), steps=2)

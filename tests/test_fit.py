"""The library pieces behind verify's fits: numpy's least squares and scipy's
Student-t quantile, against published values."""

from __future__ import annotations

import math

import pytest

from mupspec.empirical.fit import slope, summarize, t95

# two-sided 95% Student-t quantiles from printed tables
PUBLISHED = {1: 12.706, 2: 4.303, 4: 2.776, 8: 2.306, 14: 2.145, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("dof, value", sorted(PUBLISHED.items()))
def test_t95_matches_the_tables(dof, value):
    assert t95(dof) == pytest.approx(value, abs=5e-4)


def test_t95_beyond_30_degrees_of_freedom_is_not_the_normal_quantile():
    """The hand-written table fell back to 1.96 past 30 replicates: a 3% too narrow interval at 40."""
    assert t95(40) > 2.02 and t95(0) == math.inf


def test_slope_of_an_exact_power_law_and_of_noise_free_data():
    xs = [64, 128, 256, 512]
    assert slope(xs, [5.0 / x for x in xs]) == pytest.approx(-1.0)
    assert math.isnan(slope([64, 64], [1.0, 2.0]))  # one distinct width: no slope


def test_summarize_is_mean_and_t_interval():
    mean, ci = summarize([0.9, 1.0, 1.1, 1.0])
    assert mean == pytest.approx(1.0)
    assert ci == pytest.approx(t95(3) * math.sqrt(0.02 / 3) / 2)

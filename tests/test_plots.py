"""Figure rules: a blown-up run does not set the y-axis, it is marked at the top;
panels that are compared share their y-scale; the headline states what the text reads."""

from __future__ import annotations

import math

import pytest

from mupspec.empirical import plots

LRS = [1e-3, 1e-2, 1e-1, 1.0]


def _entry(curves):
    return {"curves": {w: curves for w in ("train_loss", "val_loss")},
            "optima": {w: [{"lr": 1e-2, "loss": 0.2}, {"lr": 1e-2, "loss": 0.5}] for w in ("train_loss", "val_loss")},
            "shift": {w: {"per_doubling": 0.47, "lo": 0.21, "hi": 0.71, "factor_per_doubling": 2 ** 0.47}
                      for w in ("train_loss", "val_loss")}}


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_a_blown_up_run_is_a_marker_at_the_top_not_the_axis(drawn):
    sane = [[1.1, 1.1], [0.2, 0.3], [0.9, 1.0], [1.1, 1.2]]
    blown = [[1.1, 1.1], [0.5, 0.6], [1e26, 1e26], [math.nan, 1.0]]
    plots.spiral_transfer("x.png", {"SP": _entry({64: sane, 1024: blown}), "muP": _entry({64: sane, 1024: sane})},
                          LRS, "width")
    axes = drawn[0].axes
    assert all(ax.get_ylim()[1] < 10 for ax in axes)   # clipped to the finite range, not 1e26
    assert axes[0].get_ylim() == axes[1].get_ylim()     # one y-scale per row
    tops = [line for line in axes[0].lines if line.get_marker() == "^"]
    assert [list(t.get_xdata()) for t in tops] == [[1e-1, 1.0]]  # the two LRs where a seed blew up


def test_the_headline_is_best_loss_and_shift_with_its_interval():
    headline = plots._transfer_headline(_entry({}), "val_loss", "width")
    assert headline == "best loss 0.2 → 0.5\nbest-LR shift +0.47 [+0.21, +0.71] log2/doubling"


def test_compared_rows_share_the_y_scale(drawn):
    panels = [{"title": t, "xs": [64, 128], "series": {"hidden": ys}} for t, ys in
              (("SP", [1.0, 100.0]), ("muP", [1.0, 1.1]))]
    plots.panel_grid("x.png", panels, ncols=1, suptitle="", sharey="col")
    sp, mup = drawn[0].axes
    assert sp.get_ylim() == mup.get_ylim()

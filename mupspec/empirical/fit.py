"""Stage 4c: log-log exponents with confidence intervals.

Takes measurement `Sample`s and returns `Fit`s: for every (optimizer, step,
class, quantity) the exponent k of value ∝ width^k (or depth^k), fitted by
least squares on log-log axes separately for each seed (and each depth, when
fitting in width), then summarized as mean ± a 95% Student-t interval over
those replicates. numpy fits the line; scipy.special gives the t quantile
(imported on first use: scipy.stats would cost seconds of start-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np


@lru_cache(maxsize=None)
def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile; inf with no degree of freedom."""
    if dof < 1:
        return math.inf
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.975))


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x); NaN if any y <= 0 or
    fewer than two distinct x."""
    if len(set(xs)) < 2 or any(not (y > 0) or not math.isfinite(y) for y in ys):
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


@dataclass(frozen=True)
class Fit:
    optimizer: str
    step: int
    cls: str
    quantity: str
    exponent: float  # mean over replicates
    ci: float        # half-width of the 95% interval (inf with one replicate)
    replicates: int
    slopes: tuple[float, ...]

    @property
    def ok(self) -> bool:
        return math.isfinite(self.exponent)


def summarize(slopes: Sequence[float]) -> tuple[float, float]:
    good = [s for s in slopes if math.isfinite(s)]
    if len(good) < len(slopes) or not good:
        return math.nan, math.inf
    mean = sum(good) / len(good)
    if len(good) == 1:
        return mean, math.inf
    sd = math.sqrt(sum((s - mean) ** 2 for s in good) / (len(good) - 1))
    return mean, t95(len(good) - 1) * sd / math.sqrt(len(good))


def _group(samples: Iterable, key) -> dict:
    groups: dict = {}
    for s in samples:
        groups.setdefault(key(s), []).append(s)
    return groups


def fit_exponents(samples: Iterable, axis: str = "width") -> list[Fit]:
    """One Fit per (optimizer, step, class, quantity). `axis` is `width`
    (replicates: seed x depth) or `depth` (replicates: seed x width)."""
    other = "depth" if axis == "width" else "width"
    series = _group(samples, lambda s: (s.optimizer, s.step, s.cls, s.quantity, getattr(s, other), s.seed))
    slopes_by_row: dict = {}
    for (opt, step, cls, q, _, _), rows in series.items():
        rows = sorted(rows, key=lambda r: getattr(r, axis))
        xs = [getattr(r, axis) for r in rows]
        if len(set(xs)) < 2:
            continue
        slopes_by_row.setdefault((opt, step, cls, q), []).append(slope(xs, [r.value for r in rows]))
    fits = []
    for (opt, step, cls, q), slopes in sorted(slopes_by_row.items()):
        mean, ci = summarize(slopes)
        fits.append(Fit(opt, step, cls, q, mean, ci, len(slopes), tuple(slopes)))
    return fits


def fit_table(samples: Iterable, axis: str = "width") -> dict[tuple[str, int, str, str], Fit]:
    return {(f.optimizer, f.step, f.cls, f.quantity): f for f in fit_exponents(samples, axis)}

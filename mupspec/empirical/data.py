"""Data for the spiral experiments: a deterministic 2-D spiral classification set.

Takes a `SpiralConfig` (classes, points per class, noise, turns, split, seed)
and returns a `SpiralData` of float32/int64 tensors (train and validation).
The same config always gives bit-identical tensors: points lie at evenly
spaced positions along each arm, and the only randomness (Gaussian jitter and
the train/validation shuffle) comes from one `torch.Generator` seeded by
`config.seed`.

Class k's arm: for t in [0, 1] (evenly spaced, `points_per_class` values),
radius r = t and angle = 2*pi*turns*t + 2*pi*k/classes, so the arms start at
the origin and wind `turns` times around it; each point is
r*(cos angle, sin angle) + noise*N(0, I). Coordinates are then divided by the
training set's per-feature standard deviation (computed once, shared with the
validation set) so inputs have unit scale, as the init rules assume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch


@dataclass(frozen=True)
class SpiralConfig:
    classes: int = 3            # number of spiral arms = number of labels
    points_per_class: int = 400
    noise: float = 0.04         # std of the Gaussian jitter, in radius units (arm length 1)
    turns: float = 1.5          # how many times each arm winds around the origin
    val_fraction: float = 0.25  # share of points held out for validation
    seed: int = 0               # jitter and split; independent of the training seeds

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SpiralData:
    x_train: torch.Tensor   # (n_train, 2) float32
    y_train: torch.Tensor   # (n_train,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    config: SpiralConfig

    @property
    def d_in(self) -> int:
        return self.x_train.shape[1]

    @property
    def d_out(self) -> int:
        return self.config.classes


def spiral_points(config: SpiralConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All points and labels, class by class, before the split."""
    gen = torch.Generator().manual_seed(config.seed)
    t = torch.linspace(0.0, 1.0, config.points_per_class, dtype=torch.float64)
    xs, ys = [], []
    for k in range(config.classes):
        angle = 2 * math.pi * config.turns * t + 2 * math.pi * k / config.classes
        arm = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1)
        arm = arm + config.noise * torch.randn(arm.shape, generator=gen, dtype=torch.float64)
        xs.append(arm)
        ys.append(torch.full((config.points_per_class,), k, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


def make_spiral(config: SpiralConfig = SpiralConfig()) -> SpiralData:
    if config.classes < 2 or config.points_per_class < 2:
        raise ValueError("a spiral needs at least 2 classes and 2 points per class")
    if not 0.0 < config.val_fraction < 1.0:
        raise ValueError("val_fraction must lie strictly between 0 and 1")
    x, y = spiral_points(config)
    gen = torch.Generator().manual_seed(config.seed + 1)
    order = torch.randperm(len(y), generator=gen)
    n_val = max(1, round(config.val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    scale = x[train].std(dim=0)
    x = (x / scale).to(torch.float32)
    return SpiralData(x[train], y[train], x[val], y[val], config)

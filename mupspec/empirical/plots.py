"""Stage 4d: figures (matplotlib, Agg backend; imported only when plotting).

Shared by `verify --plot` (coordinate checks), the grad-ratio experiment and
the spiral experiment (whose helpers go at the end of this file). Every
function takes plain numbers and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

CLASS_COLORS = {"input": "tab:blue", "hidden": "tab:orange", "output": "tab:green",
                "bias": "tab:purple", "norm": "tab:brown"}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap_pair(path, titles: Sequence[str], grids: Sequence[Sequence[Sequence[float]]],
                 rows: Sequence[int], cols: Sequence[int], row_label: str, col_label: str,
                 suptitle: str) -> Path:
    """Side-by-side heatmaps sharing one log color scale; every cell printed."""
    flat = [v for g in grids for r in g for v in r if v > 0 and math.isfinite(v)]
    lo, hi = math.log10(min(flat)), math.log10(max(flat))
    fig, axes = plt.subplots(1, len(grids), figsize=(5.2 * len(grids), 4.4), squeeze=False)
    for ax, title, grid in zip(axes[0], titles, grids):
        logs = [[math.log10(v) if v > 0 else float("nan") for v in r] for r in grid]
        im = ax.imshow(logs, origin="lower", cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        ax.set_title(title, fontsize=10)
        for i, r in enumerate(grid):
            for j, v in enumerate(r):
                color = "white" if logs[i][j] < (lo + hi) / 2 else "black"
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7.5, color=color)
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 ratio", shrink=0.85)
    fig.suptitle(suptitle, fontsize=11)
    return _save(fig, path)


def loglog_lines(ax, xs: Sequence[float], series: Mapping[str, Sequence[float]],
                 colors: Mapping[str, str] | None = None, styles: Mapping[str, str] | None = None) -> None:
    """One log-log line per named series, with the fitted slope in the legend."""
    from mupspec.empirical.fit import slope

    for name, ys in series.items():
        k = slope(xs, ys)
        ax.loglog(xs, ys, (styles or {}).get(name, "o-"), color=(colors or {}).get(name),
                  label=f"{name} (slope {k:+.2f})", markersize=4)
    ax.grid(True, which="both", alpha=0.3)


def panel_grid(path, panels: Sequence[dict], ncols: int, suptitle: str, xlabel: str = "width") -> Path:
    """`panels`: dicts with title, xs, series (name -> ys), optional ylabel,
    colors, styles and note (text in the corner, e.g. predicted slopes)."""
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        loglog_lines(ax, panel["xs"], panel["series"], panel.get("colors"), panel.get("styles"))
        ax.set_title(panel["title"], fontsize=9.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.legend(fontsize=7, loc="best")
        if panel.get("note"):
            ax.text(0.02, 0.02, panel["note"], transform=ax.transAxes, fontsize=7, va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)

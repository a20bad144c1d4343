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

from mupspec.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

CLASS_COLORS = {"input": "tab:blue", "hidden": "tab:orange", "output": "tab:green",
                "bias": "tab:purple", "norm": "tab:brown"}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a kill mid-write never leaves half a PNG
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
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
                 colors: Mapping[str, str] | None = None, styles: Mapping[str, str] | None = None,
                 xscale: str = "log") -> None:
    """One line per named series on log y: log-log with the fitted slope in
    the legend, or (xscale="linear") semi-log with the fitted factor per unit
    of x -- the right summary of an exponential decay such as depth's."""
    from mupspec.empirical.fit import slope

    for name, ys in series.items():
        if xscale == "log":
            label = f"{name} (slope {slope(xs, ys):+.2f})"
        else:  # slope of ln y against x = slope of ln y against ln(e^x)
            label = f"{name} (x{math.exp(slope([math.exp(x) for x in xs], ys)):.2f} per +1)"
        ax.plot(xs, ys, (styles or {}).get(name, "o-"), color=(colors or {}).get(name), label=label, markersize=4)
    ax.set_xscale(xscale)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)


def panel_grid(path, panels: Sequence[dict], ncols: int, suptitle: str, xlabel: str = "width",
               xscale: str = "log", sharey: bool | str = False) -> Path:
    """`panels`: dicts with title, xs, series (name -> ys), optional ylabel,
    colors, styles and note (text in the corner, e.g. predicted slopes).
    `sharey="col"`: one y-scale per column, for rows that are compared (SP above μP)."""
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False, sharey=sharey)
    for ax, panel in zip(axes.flat, panels):
        loglog_lines(ax, panel["xs"], panel["series"], panel.get("colors"), panel.get("styles"), xscale)
        if xscale == "linear":
            ax.set_xticks(list(panel["xs"]))
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


# ---------------------------------------------------------------- verify


_TERM_STYLE = {"act": "o-", "own": "s-", "delta": "^--", "prop": "d:"}


def coordinate_check(out_dir, spec_name: str, samples, fits, preds, steps: int) -> list[Path]:
    """One figure per optimizer, one log-log panel per step: every compared
    term's size against width (geometric mean over seeds, at the middle depth),
    labelled with the fitted exponent (all depths and seeds) and check's."""
    paths = []
    depths = sorted({s.depth for s in samples})
    depth = depths[len(depths) // 2]
    for opt in sorted({s.optimizer for s in samples}):
        fig, axes = plt.subplots(1, steps + 1, figsize=(4.4 * (steps + 1), 4.0), squeeze=False)
        for step, ax in enumerate(axes[0]):
            for (quantity, cls), pred in sorted(preds.get(opt, {}).items()):
                if (quantity == "act") != (step == 0):
                    continue
                widths, values = _series(samples, opt, depth, step, cls, quantity)
                fit = fits.get((opt, step, cls, quantity))
                if not widths or fit is None:
                    continue
                ax.loglog(widths, values, _TERM_STYLE[quantity], color=CLASS_COLORS[cls], markersize=4,
                          label=f"{quantity} {cls}: fit {fit.exponent:+.2f}±{fit.ci:.2f}, pred {pred:+.2f}")
            ax.set_title(f"step {step}" + (" (init)" if step == 0 else ""), fontsize=10)
            ax.set_xlabel("width")
            ax.set_ylabel("RMS per coordinate")
            ax.grid(True, which="both", alpha=0.3)
            # below the panel, so that no line is hidden behind it
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1, frameon=False)
        fig.suptitle(f"coordinate check: {spec_name}, {opt}, depth {depth} "
                     f"(slopes fitted over depths {depths} and seeds)", fontsize=10.5)
        fig.tight_layout()
        paths.append(_save(fig, Path(out_dir) / f"coord_{spec_name}_{opt}.png"))
    return paths


def _series(samples, opt, depth, step, cls, quantity) -> tuple[list[int], list[float]]:
    by_width: dict[int, list[float]] = {}
    for s in samples:
        if (s.optimizer, s.depth, s.step, s.cls, s.quantity) == (opt, depth, step, cls, quantity) and s.value > 0:
            by_width.setdefault(s.width, []).append(s.value)
    widths = sorted(by_width)
    return widths, [math.exp(sum(map(math.log, by_width[w])) / len(by_width[w])) for w in widths]


# ---------------------------------------------------------------- spiral experiment

def _size_colors(sizes) -> dict:
    cmap = plt.get_cmap("viridis")
    return {s: cmap(0.9 * i / max(1, len(sizes) - 1)) for i, s in enumerate(sizes)}


def spiral_dataset(path, data) -> Path:
    """The spiral: training points filled, validation points hollow."""
    fig, ax = plt.subplots(figsize=(4.4, 4.4))
    for k in range(data.d_out):
        tr, va = data.x_train[data.y_train == k], data.x_val[data.y_val == k]
        dot = ax.scatter(tr[:, 0], tr[:, 1], s=6, label=f"class {k}")
        ax.scatter(va[:, 0], va[:, 1], s=14, facecolors="none", edgecolors=dot.get_facecolor())
    c = data.config
    ax.set_title(f"spiral: {c.classes} classes x {c.points_per_class} points, noise {c.noise}, "
                 f"{c.turns} turns\n(filled: train {len(data.y_train)}, hollow: validation {len(data.y_val)})",
                 fontsize=8.5)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


_FIXED_COLUMNS = (("train_loss", "train loss"),
                  ("act_hidden", "RMS of last hidden layer"),
                  ("dact_hidden", "RMS change of last hidden layer since init"),
                  ("dact_output", "RMS change of the logits since init"))


def spiral_fixed_lr(path, fixed: Mapping, axis: str, lr: float) -> Path:
    """One row per variant, one curve per size (seed mean): loss and per-layer scales over training."""
    variants = list(fixed)
    fig, axes = plt.subplots(len(variants), len(_FIXED_COLUMNS), figsize=(16, 2.9 * len(variants)),
                             squeeze=False)
    for row, label in enumerate(variants):
        sizes = list(fixed[label])
        colors = _size_colors(sizes)
        for col, (key, title) in enumerate(_FIXED_COLUMNS):
            ax = axes[row][col]
            for s in sizes:
                curve = fixed[label][s][key]
                if curve is not None:
                    skip = 1 if key.startswith("dact") else 0   # the change since init is 0 at step 0
                    ax.plot(curve[0][skip:], curve[1][skip:], color=colors[s], label=f"{axis} {s}", lw=1.3)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{label}: {title}", fontsize=9)
            if row == len(variants) - 1:
                ax.set_xlabel("step")
        axes[row][0].legend(fontsize=6.5, loc="best")
    fig.suptitle(f"Adam at one fixed LR ({lr:.3g}) for every {axis}: seed-mean curves "
                 "(a size whose seeds all diverged has no curve)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def spiral_transfer(path, transfer: Mapping, lrs: Sequence[float], axis: str, optimizer: str = "Adam") -> Path:
    """Final loss against LR per size (seed mean, band = min..max over seeds),
    the best LR of each size marked with a star; rows train / validation, one
    y-scale per row. An LR where a seed diverged, or whose loss is off the
    clipped axis, gets a triangle at the top edge instead of a point."""
    variants = list(transfer)
    fig, axes = plt.subplots(2, len(variants), figsize=(max(4.4 * len(variants), 9), 8.4), squeeze=False,
                             sharex=True, sharey="row", layout="constrained")
    for row, which in enumerate(("train_loss", "val_loss")):
        losses = [v for e in transfer.values() for seeds_by_lr in e["curves"][which].values()
                  for seeds in seeds_by_lr for v in seeds]
        top = _loss_ceiling(losses)
        bottom = 0.85 * min((v for v in losses if math.isfinite(v)), default=top / 10)
        for col, label in enumerate(variants):
            e, ax = transfer[label], axes[row][col]
            sizes = list(e["curves"][which])
            colors = _size_colors(sizes)
            for size, optimum in zip(sizes, e["optima"][which]):
                table = e["curves"][which][size]
                ok = [all(math.isfinite(v) and v <= top for v in t) for t in table]
                mean = [sum(t) / len(t) if good else math.nan for t, good in zip(table, ok)]
                lo = [min(t) if good else math.nan for t, good in zip(table, ok)]
                hi = [max(t) if good else math.nan for t, good in zip(table, ok)]
                ax.plot(lrs, mean, "o-", ms=3, color=colors[size], label=f"{axis} {size}")
                ax.fill_between(lrs, lo, hi, color=colors[size], alpha=0.15)
                off = [lr for lr, good in zip(lrs, ok) if not good]
                if off:  # (an empty unclipped line would still pull the layout to the figure's corner)
                    ax.plot(off, [top] * len(off), "^", ms=6, color=colors[size], mec="black", mew=0.5,
                            clip_on=False)
                ax.plot([optimum["lr"]], [optimum["loss"]], "*", ms=13, color=colors[size], mec="black")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(bottom, top)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{label}: final {which.replace('_', ' ')}\n{_transfer_headline(e, which, axis)}",
                         fontsize=8.5)
            if row == 1:
                ax.set_xlabel(f"learning rate ({optimizer})")
        axes[row][0].set_ylabel(f"final {which.replace('_', ' ')}")
    handles, labels = axes[0][0].get_legend_handles_labels()  # one legend for all panels, below them
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"LR transfer across {axis}: star = best LR (parabola-refined)\n"
                 "▲ at the top = a seed diverged or its loss is above the axis", fontsize=10.5)
    return _save(fig, path)


def _loss_ceiling(losses: Sequence[float]) -> float:
    """The top of a loss axis: 3x the median finite loss (chance level sits well below it),
    so that a few blown-up runs (1e26) do not squash every curve into one line."""
    finite = sorted(v for v in losses if math.isfinite(v))
    return 3 * finite[len(finite) // 2] if finite else 1.0


def _transfer_headline(e: Mapping, which: str, axis: str) -> str:
    """What the text reads off the figure: the best loss reachable at any LR, smallest to
    largest size, and the best LR's shift with its interval (docs/tutorial.md: for SP the
    optimum's position alone misleads)."""
    optima, sh = e["optima"][which], e["shift"][which]
    best = f"best loss {optima[0]['loss']:.3g} → {optima[-1]['loss']:.3g}" if optima else "no finished size"
    if sh is None:
        return best
    return f"{best}\nbest-LR shift {sh['per_doubling']:+.2f} [{sh['lo']:+.2f}, {sh['hi']:+.2f}] log2/doubling"


# ---------------------------------------------------------------- coord-check (any model)


def role_coordinate_check(out_dir, result) -> list[Path]:
    """One figure per optimizer, one log-log panel per compared role and
    quantity (mupspec.empirical.coord): the geometric mean over seeds and
    the role's sites against width, one line per step, with the fitted slope
    (dashed) and check's (dotted) drawn through the compared step's middle
    point. Legends sit below the panels, clear of the data."""
    paths = []
    for opt in sorted({r.optimizer for r in result.rows}):
        rows = [r for r in result.rows if r.optimizer == opt]
        ncols = min(4, len(rows))
        nrows = math.ceil(len(rows) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 4.1 * nrows), squeeze=False)
        steps = range(result.steps + 1)
        cmap = plt.get_cmap("viridis")
        for ax, row in zip(axes.flat, rows):
            sites = {s.site for s in row.sites}
            for step in steps:
                if (row.quantity == "act") != (step == 0) and row.quantity != "act":
                    continue
                xs, ys = _role_series(result.samples, opt, step, sites, row.quantity)
                if xs:
                    ax.loglog(xs, ys, "o-", color=cmap(0.85 * step / max(1, result.steps)), markersize=3.5,
                              label=f"step {step}")
            xs, ys = _role_series(result.samples, opt, row.step, sites, row.quantity)
            if xs:
                mid = len(xs) // 2
                for slope_, style, what in ((row.measured, "--", "fit"), (row.predicted, ":", "check")):
                    if math.isfinite(slope_):
                        ax.loglog(xs, [ys[mid] * (x / xs[mid]) ** slope_ for x in xs], style, color="black",
                                  linewidth=1.1, label=f"{what} slope {slope_:+.2f}")
            _decade_at_least(ax)
            ax.set_xticks(result.widths, [str(w) for w in result.widths])
            ax.minorticks_off()
            verdict = "PASS" if row.agrees else "FAIL"
            ax.set_title(f"{row.role}: {_QUANTITY_TITLE[row.quantity]} [{verdict}]", fontsize=9.5,
                         color="black" if row.agrees else "tab:red")
            ax.set_xlabel("width")
            ax.set_ylabel("RMS per coordinate" if row.quantity != "upd" else "|Δθ| / |θ0|")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        for ax in list(axes.flat)[len(rows):]:
            ax.axis("off")
        fig.suptitle(f"coordinate check, {opt}: mean over {len({s.seed for s in result.samples})} seeds "
                     f"and each role's sites (dashed: fitted slope, dotted: check's)", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        paths.append(_save(fig, Path(out_dir) / f"coord_check_{opt}.png"))
    return paths


def _decade_at_least(ax) -> None:
    """A y range of at least one decade: a flat line looks flat (matplotlib
    would otherwise stretch a 1e-5 wiggle over the whole panel)."""
    lo, hi = ax.get_ylim()
    if hi / lo < 10:
        mid = math.sqrt(lo * hi)
        ax.set_ylim(mid / 10 ** 0.5, mid * 10 ** 0.5)


_QUANTITY_TITLE = {"act": "size at init", "delta": "change since init", "own": "own-update term",
                   "upd": "relative update"}


def _role_series(samples, opt, step, sites, quantity) -> tuple[list[int], list[float]]:
    by_width: dict[int, list[float]] = {}
    for s in samples:
        if s.optimizer == opt and s.step == step and s.quantity == quantity and s.cls in sites and s.value > 0:
            by_width.setdefault(s.width, []).append(s.value)
    widths = sorted(by_width)
    return widths, [math.exp(sum(map(math.log, by_width[w])) / len(by_width[w])) for w in widths]


# ---------------------------------------------------------------- transformer study (lm_study.py)

def lm_best_loss(path, transfer: Mapping, axis: str) -> Path:
    """Best reachable loss (min over LR of the seed mean, 95% bootstrap bar) per size and variant."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for ax, which in zip(axes, ("train_loss", "val_loss")):
        for label, e in transfer.items():
            best = e["best"][which]
            xs, ys = [b["size"] for b in best], [b["loss"] for b in best]
            err = [[max(0.0, b["loss"] - b["lo"]) if math.isfinite(b["lo"]) else 0 for b in best],
                   [max(0.0, b["hi"] - b["loss"]) if math.isfinite(b["hi"]) else 0 for b in best]]
            ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(axis)
        ax.set_title(f"best reachable {which.replace('_', ' ')} over the LR grid", fontsize=9.5)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    return _save(fig, path)


_LM_GROUPS = ("wte", "blocks.*.attn.q", "blocks.*.mlp.fc", "blocks.*.mlp.proj", "lm_head", "logits")


def lm_coordinates(path, coords: Mapping, lr: float) -> Path:
    """Final-step coordinate statistics against width, one row per variant,
    one column per quantity, one line per weight group (geometric mean over seeds)."""
    titles = {"act": "RMS of the output", "upd": "RMS of (W - W0) x", "w": "RMS of W", "dw": "RMS of W - W0"}
    panels = []
    for label, c in coords.items():
        for q, title in titles.items():
            series = {g: c["final_means"][g][q] for g in _LM_GROUPS if q in c["final_means"].get(g, {})}
            panels.append({"title": f"{label}: {title}", "xs": c["widths"], "series": series, "ylabel": "RMS"})
    return panel_grid(path, panels, ncols=len(titles),
                      suptitle=f"coordinate statistics after training at LR {lr:.3g} against width "
                               "(geometric mean over seeds and blocks; legend: fitted slope)")


def lm_exponents_over_training(path, coords: Mapping, panels: Sequence[tuple[str, str, str]]) -> Path:
    """Fitted width exponent of a statistic at every logged step, one line per
    variant, bars = 95% t-interval over seeds."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), squeeze=False)
    for ax, (group, q, title) in zip(axes[0], panels):
        for label, c in coords.items():
            rows = [r for r in c["exponents"] if r["group"] == group and r["quantity"] == q]
            ci = [r["ci"] if math.isfinite(r["ci"]) else 0 for r in rows]
            ax.errorbar([r["step"] for r in rows], [r["exponent"] for r in rows], yerr=ci, fmt="o-",
                        capsize=3, label=label, ms=4)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("width exponent k (value ~ width^k)")
    axes[0][0].legend(fontsize=7.5)
    fig.suptitle("coordinate checks over training: width exponents, 95% intervals over seeds", fontsize=10.5)
    fig.tight_layout()
    return _save(fig, path)


def lm_hp_transfer(path, hp: Mapping, lr: float) -> Path:
    """Final loss against each hyperparameter's value at a fixed LR, one curve
    per width (seed mean, band = min..max over seeds, star = the parabola-refined
    best value); rows train / validation, one column per hyperparameter. A value
    where a seed diverged gets a triangle at the top edge."""
    names = list(hp)
    fig, axes = plt.subplots(2, len(names), figsize=(max(4.6 * len(names), 9), 8.0), squeeze=False,
                             layout="constrained")
    for row, which in enumerate(("train_loss", "val_loss")):
        losses = [v for e in hp.values() for table in e["curves"].get(which, {}).values() for t in table for v in t]
        top = _loss_ceiling(losses)
        for col, name in enumerate(names):
            e, ax = hp[name], axes[row][col]
            widths = list(e["curves"].get(which, {}))
            colors = _size_colors(widths)
            for width, optimum in zip(widths, e["optima"][which]):
                table, xs = e["curves"][which][width], e["values"]
                ok = [all(math.isfinite(v) and v <= top for v in t) for t in table]
                mean = [sum(t) / len(t) if good else math.nan for t, good in zip(table, ok)]
                ax.plot(xs, mean, "o-", ms=3, color=colors[width], label=f"width {width}")
                ax.fill_between(xs, [min(t) if g else math.nan for t, g in zip(table, ok)],
                                [max(t) if g else math.nan for t, g in zip(table, ok)], color=colors[width], alpha=0.15)
                off = [x for x, good in zip(xs, ok) if not good]
                if off:
                    ax.plot(off, [top] * len(off), "^", ms=6, color=colors[width], mec="black", mew=0.5, clip_on=False)
                ax.plot([optimum["value"]], [optimum["loss"]], "*", ms=13, color=colors[width], mec="black")
            ax.set_xscale("log", base=2)
            shown = [v for table in e["curves"].get(which, {}).values() for t in table for v in t
                     if math.isfinite(v) and v <= top]
            if shown:   # each panel its own scale: the hyperparameters move the loss by different amounts
                pad = 0.05 * (max(shown) - min(shown)) + 1e-3
                ax.set_ylim(min(shown) - pad, max(shown) + pad)
            ax.grid(True, which="both", alpha=0.3)
            sh = e["shift"][which]
            shift = "" if sh is None else \
                f"\nbest-value shift {sh['per_doubling']:+.2f} [{sh['lo']:+.2f}, {sh['hi']:+.2f}] log2/doubling"
            ax.set_title(f"{name}: final {which.replace('_', ' ')}{shift}", fontsize=8.5)
            if row == 1:
                ax.set_xlabel(name)
        axes[row][0].set_ylabel(f"final {which.replace('_', ' ')}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"muP: hyperparameter transfer across width at a fixed AdamW LR {lr:g}\n"
                 "star = best value (parabola-refined in log value), band = min..max over seeds; "
                 "▲ at the top = a seed diverged", fontsize=10.5)
    return _save(fig, path)

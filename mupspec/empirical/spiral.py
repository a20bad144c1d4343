"""`mupspec experiment spiral`: training on a 2-D spiral across widths, depths
and learning rates, SP against muP (and residual depth scalings).

Takes the command-line options; runs the resumable sweep (`sweep.py`, every
run trained by the batched engine) and writes, under --out:
  runs/...           one JSON per (cell, lr, seed) run (resumable), with its plan
                     and the software that computed it,
  runs.csv           final train/validation loss of every run,
  optima.csv         the best LR per variant and size, with a bootstrap interval,
  exponents.csv      fitted width/depth exponents of per-layer scales,
  summary.json/.md   the shift of the optimal LR per doubling, the tables, and
                     which software computed the runs,
  figures (--figures-dir, default DIR/figures): the PNGs of docs/tutorial.md.

Parts: `width` (SP vs muP over widths at depth 4: fixed-LR training curves and
per-layer scales, and LR transfer) and `depth` (plain MLPs SP/muP, and
residual MLPs with no depth scaling / Depth-muP / CompleteP, over depths).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mupspec.atomic import open_atomic, write_atomic
from mupspec.commands._io import check_output_dir
from mupspec.empirical.data import SpiralConfig
from mupspec.empirical.engine import TrainConfig
from mupspec.empirical.fit import slope, summarize
from mupspec.commands._backend import add_backend_options
from mupspec.empirical.runner import make_backend, run_sweep
from mupspec.empirical.sweep import Cell, Sweep, SweepSettings

# variant label -> (bundled spec, architecture)
WIDTH_VARIANTS = {"SP": ("sp", "mlp"), "muP": ("mup_table8", "mlp")}
# muP's width rules do nothing for depth, so the plain MLP over depth is run under SP only
DEPTH_VARIANTS = {"SP": ("sp", "mlp"),
                  "res none": ("mup_table8", "resmlp"), "res Depth-muP": ("depth_mup", "resmlp"),
                  "res CompleteP": ("completep", "resmlp")}


@dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)    # LR-transfer widths
    fixed_only_widths: tuple[int, ...] = (2048,)           # trained at the fixed LR only
    depth: int = 4                                         # depth of the width sweep
    depths: tuple[int, ...] = (2, 4, 8, 16, 32)
    depth_width: int = 128                                 # width of the depth sweep
    lrs: tuple[float, ...] = tuple(10 ** (-4 + k / 3) for k in range(13))
    seeds: tuple[int, ...] = (0, 1, 2)
    fixed_lr: float = 1e-2
    steps: int = 500
    batch: int = 32
    base_width: int = 64
    base_depth: int = 4

    def fixed(self) -> float:
        """The grid LR nearest to fixed_lr (so fixed-LR runs are shared with the LR sweep)."""
        return min(self.lrs, key=lambda lr: abs(math.log(lr / self.fixed_lr)))


FULL = Grid()
QUICK = Grid(widths=(32, 64, 128), fixed_only_widths=(256,), depths=(2, 4, 8), depth_width=32,
             lrs=tuple(10 ** (-3 + k / 2) for k in range(7)), seeds=(0, 1), steps=150,
             base_width=32, base_depth=4)


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="folder for runs, tables and (by default) figures")
    parser.add_argument("--figures-dir", help="where the PNGs go (default: OUT/figures)")
    parser.add_argument("--quick", action="store_true",
                        help="small grid and 150 steps (a minute or two; used in CI)")
    parser.add_argument("--part", choices=("all", "width", "depth"), default="all",
                        help="train only the width sweep or only the depth sweep (default: all, both)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--budget-minutes", type=float,
                        help="start no new cell after this many minutes; the report covers what finished "
                        "(run again to resume)")
    add_backend_options(parser)


def width_cells(g: Grid) -> list[Cell]:
    cells = [Cell(spec, arch, w, g.depth, g.lrs, g.seeds)
             for spec, arch in WIDTH_VARIANTS.values() for w in g.widths]
    cells += [Cell(spec, arch, w, g.depth, (g.fixed(),), g.seeds)
              for spec, arch in WIDTH_VARIANTS.values() for w in g.fixed_only_widths]
    return cells


def depth_cells(g: Grid) -> list[Cell]:
    return [Cell(spec, arch, g.depth_width, d, g.lrs, g.seeds)
            for spec, arch in DEPTH_VARIANTS.values() for d in g.depths]


def run(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    grid = QUICK if args.quick else FULL
    out = check_output_dir(args.out, "--out")  # before any work: /etc/passwd is not a folder
    figures = Path(args.figures_dir) if args.figures_dir else out / "figures"
    settings = SweepSettings(data=SpiralConfig(), train=TrainConfig(steps=grid.steps, batch=grid.batch),
                             base_width=grid.base_width, base_depth=grid.base_depth)
    backend = make_backend(args.backend, args.address)   # before any work: a missing Ray fails at once
    sweep = Sweep(out, settings)
    parts = ("width", "depth") if args.part == "all" else (args.part,)
    cells = (width_cells(grid) if "width" in parts else []) + (depth_cells(grid) if "depth" in parts else [])
    start = time.monotonic()
    # cheapest cells first: a sweep stopped early still covers every small size
    cells = sorted(_unique(cells), key=_cost)
    deadline = start + 60 * args.budget_minutes if args.budget_minutes else None
    report = run_sweep(sweep, cells, backend, threads=args.threads, progress=not args.no_progress,
                       deadline=deadline)
    seconds = time.monotonic() - start
    summary = analyse(sweep, grid, parts, figures)
    summary["timing"] = {"runs_trained_now": report.trained, "train_seconds": round(seconds, 1),
                         "threads": args.threads, "quick": args.quick, "backend": args.backend}
    failed = sweep.errors()
    summary["failed"] = {"runs": sum(len(e["runs"]) for e in failed),
                         "cells": {e["key"]: e["error"].splitlines()[0] for e in failed}}
    write_atomic(out / "summary.json", json.dumps(_json_safe(summary), indent=1))
    write_atomic(out / "summary.md", markdown(summary))
    print(f"trained {report.trained} runs in {seconds:.0f}s; tables in {out}, figures in {figures}")
    if failed:
        print(f"{summary['failed']['runs']} runs failed (errors in {out / 'errors'}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def _json_safe(x):
    """inf/nan -> null, numpy scalars -> float, int keys kept as strings by json."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _cost(cell: Cell) -> float:
    """Parameters x replicas: what a training step of the cell costs, roughly."""
    hidden = cell.depth - 2 if cell.arch == "mlp" else cell.depth
    return len(cell.lrs) * len(cell.seeds) * (hidden * cell.width ** 2 + 5 * cell.width)


def _unique(cells: list[Cell]) -> list[Cell]:
    seen, out = set(), []
    for c in cells:
        if (c.key, c.lrs, c.seeds) not in seen:
            seen.add((c.key, c.lrs, c.seeds))
            out.append(c)
    return out


# ---------------------------------------------------------------- analysis

def _loss_table(runs: list[dict], lrs, seeds, which: str) -> np.ndarray:
    """(len(lrs), len(seeds)) final losses; diverged = inf, missing = nan."""
    table = np.full((len(lrs), len(seeds)), np.nan)
    for r in runs:
        i, j = lrs.index(r["lr"]), seeds.index(r["seed"])
        table[i, j] = np.inf if r["diverged"] else r["final"][which]
    return table


def _argmin_log_lr(curve: np.ndarray, log_lrs: np.ndarray) -> tuple[float, bool]:
    """log10 of the best LR: the grid minimum refined by a parabola through it and
    its two neighbours (evenly spaced in log LR); at_edge if the minimum is on the border."""
    if not np.isfinite(curve).any():
        return math.nan, True
    i = int(np.nanargmin(np.where(np.isfinite(curve), curve, np.nan)))
    if i == 0 or i == len(curve) - 1 or not np.isfinite(curve[i - 1:i + 2]).all():
        return float(log_lrs[i]), i in (0, len(curve) - 1)
    y0, y1, y2 = curve[i - 1:i + 2]
    h = log_lrs[i + 1] - log_lrs[i]
    curv = y0 - 2 * y1 + y2
    shift = 0.0 if curv <= 0 else 0.5 * h * (y0 - y2) / curv
    return float(log_lrs[i] + max(-h, min(h, shift))), False


def _optimum(table: np.ndarray, log_lrs, rng, boots: int = 300) -> dict:
    """Best LR of the seed-mean curve, with a 95% bootstrap interval over seeds."""
    best, edge = _argmin_log_lr(table.mean(1), log_lrs)
    s = table.shape[1]
    samples = [_argmin_log_lr(table[:, rng.integers(s, size=s)].mean(1), log_lrs)[0] for _ in range(boots)]
    lo, hi = np.nanpercentile(samples, [2.5, 97.5]) if s > 1 else (math.nan, math.nan)
    i = int(np.argmin(np.where(np.isfinite(table.mean(1)), table.mean(1), np.inf)))
    return {"lr": 10 ** best, "lo": 10 ** lo, "hi": 10 ** hi, "edge": edge,
            "loss": float(table.mean(1)[i]), "samples": samples}


def _shift(sizes, optima: list[dict]) -> dict:
    """Slope of log2(best LR) against log2(size): the change of the optimum per
    doubling, in factors of 2, with the 95% interval of the same slope over the
    bootstrap samples of every size's optimum."""
    x = np.log2(sizes)
    y = np.array([math.log2(o["lr"]) for o in optima])
    point = float(np.polyfit(x, y, 1)[0])
    boot = np.array([o["samples"] for o in optima]) / math.log10(2)   # log10 -> log2
    slopes = [np.polyfit(x, boot[:, b], 1)[0] for b in range(boot.shape[1])
              if np.isfinite(boot[:, b]).all()]
    lo, hi = np.percentile(slopes, [2.5, 97.5]) if slopes else (math.nan, math.nan)
    return {"per_doubling": point, "lo": float(lo), "hi": float(hi),
            "factor_per_doubling": 2 ** point, "any_edge": any(o["edge"] for o in optima)}


def _lr_sweep(sweep: Sweep, g: Grid, variants: dict, axis: str, sizes, rng) -> dict:
    """Optimum per size and its shift, for train and validation loss."""
    log_lrs = np.log10(np.array(g.lrs))
    out = {}
    for label, (spec, arch) in variants.items():
        entry = {"curves": {}, "optima": {}, "shift": {}, "diverged": {}}
        runs = {s: sweep.load(_cell(g, spec, arch, axis, s)) for s in sizes}
        done = [s for s in sizes if len(runs[s]) == len(g.lrs) * len(g.seeds)]   # skip unfinished cells
        for which in ("train_loss", "val_loss"):
            optima = []
            for size in done:
                table = _loss_table(runs[size], list(g.lrs), list(g.seeds), which)
                optima.append(_optimum(table, log_lrs, rng))
                entry["curves"].setdefault(which, {})[size] = table.tolist()
                entry["diverged"][size] = int(np.isinf(table).sum())
            entry["optima"][which] = [dict(o, samples=None, size=s) for o, s in zip(optima, done)]
            entry["shift"][which] = _shift(done, optima) if len(done) >= 2 else None
        out[label] = entry
    return out


def _cell(g: Grid, spec: str, arch: str, axis: str, size: int, lrs=None) -> Cell:
    width, depth = (size, g.depth) if axis == "width" else (g.depth_width, size)
    return Cell(spec, arch, width, depth, lrs or g.lrs, g.seeds)


def _fixed_runs(sweep: Sweep, g: Grid, spec, arch, axis, size) -> list[dict]:
    lrs = (g.fixed(),) if axis == "width" and size in g.fixed_only_widths else g.lrs
    return [r for r in sweep.load(_cell(g, spec, arch, axis, size, lrs)) if r["lr"] == g.fixed()]


def _exponents(sweep: Sweep, g: Grid, variants: dict, axis: str, sizes) -> dict:
    """Per layer and quantity, the exponent k of (final-step value) ~ size^k,
    fitted per seed and summarized as mean +- 95% t-interval over seeds. Width:
    every layer; depth: the last hidden layer and the output (layers differ)."""
    out = {}
    for label, (spec, arch) in variants.items():
        per_size = {s: {r["seed"]: r for r in _fixed_runs(sweep, g, spec, arch, axis, s)} for s in sizes}
        sizes = [s for s in sizes if len(per_size[s]) == len(g.seeds)]    # skip unfinished cells
        if len(sizes) < 2:
            continue
        n_layers = len(next(iter(per_size[sizes[0]].values()))["plan"]["layers"])
        layers = range(n_layers) if axis == "width" else (-2, -1)
        rows = []
        for layer in layers:
            for q in ("act", "dact", "upd"):
                slopes = []
                for seed in g.seeds:
                    runs = [per_size[s].get(seed) for s in sizes]
                    if any(r is None or r["diverged"] for r in runs):
                        slopes.append(math.nan)
                        continue
                    slopes.append(slope(sizes, [r["curves"][q][-1][layer] for r in runs]))
                k, ci = summarize(slopes)
                name = _layer_name(layer, n_layers) if axis == "width" else _DEPTH_LAYERS[layer]
                rows.append({"layer": name, "quantity": q, "exponent": k, "ci": ci})
        out[label] = rows
    return out


_DEPTH_LAYERS = {-2: "last hidden", -1: "output"}


def _layer_name(i: int, n: int) -> str:
    i = i % n
    return "input" if i == 0 else "output" if i == n - 1 else f"hidden{i}"


def _mean_curve(runs: list[dict], key: str, layer: int | None = None):
    """Seed-mean of a logged curve (steps, values); None if every run diverged."""
    ok = [r for r in runs if not r["diverged"]]
    if not ok:
        return None
    vals = [[row if layer is None else row[layer] for row in r["curves"][key]] for r in ok]
    return ok[0]["curves"]["step"], np.mean(np.array(vals, dtype=float), axis=0).tolist()


def _fixed_curves(sweep, g, variants, axis, sizes) -> dict:
    """Seed-mean curves at the fixed LR: loss, and act/dact/upd of the last
    hidden layer and of the output."""
    out = {}
    for label, (spec, arch) in variants.items():
        out[label] = {}
        for s in sizes:
            runs = _fixed_runs(sweep, g, spec, arch, axis, s)
            if not runs:
                continue
            out[label][s] = {"train_loss": _mean_curve(runs, "train_loss"),
                             "diverged": sum(r["diverged"] for r in runs)}
            for q in ("act", "dact", "upd"):
                out[label][s][f"{q}_hidden"] = _mean_curve(runs, q, -2)
                out[label][s][f"{q}_output"] = _mean_curve(runs, q, -1)
            ok = [r for r in runs if not r["diverged"]]
            out[label][s]["final"] = {k: float(np.mean([r["final"][k] for r in ok])) if ok else None
                                      for k in ("train_loss", "val_loss", "val_acc")}
    return out


def analyse(sweep: Sweep, g: Grid, parts, figures: Path) -> dict:
    from mupspec.empirical import plots

    rng = np.random.default_rng(0)
    summary = {"grid": {k: list(v) if isinstance(v, tuple) else v for k, v in g.__dict__.items()},
               "fixed_lr": g.fixed(), "settings": sweep.settings.fingerprint()}
    summary["software"] = _write_runs_csv(sweep, sweep.out / "runs.csv")
    plots.spiral_dataset(figures / "spiral_data.png", sweep.data)
    if "width" in parts:
        widths = list(g.widths) + list(g.fixed_only_widths)
        w = summary["width"] = {
            "fixed": _fixed_curves(sweep, g, WIDTH_VARIANTS, "width", widths),
            "exponents": _exponents(sweep, g, WIDTH_VARIANTS, "width", widths),
            "transfer": _lr_sweep(sweep, g, WIDTH_VARIANTS, "width", list(g.widths), rng)}
        _figures(figures, "width", w, g, _scale_panels(sweep, g, WIDTH_VARIANTS, "width", widths),
                 f"per-layer scales after {g.steps} steps at LR {g.fixed():.3g} against width "
                 "(geometric mean over seeds; slope = fitted exponent)")
    if "depth" in parts:
        d = summary["depth"] = {
            "fixed": _fixed_curves(sweep, g, DEPTH_VARIANTS, "depth", list(g.depths)),
            "exponents": _exponents(sweep, g, DEPTH_VARIANTS, "depth", list(g.depths)),
            "transfer": _lr_sweep(sweep, g, DEPTH_VARIANTS, "depth", list(g.depths), rng)}
        _figures(figures, "depth", d, g,
                 _scale_panels(sweep, g, DEPTH_VARIANTS, "depth", list(g.depths), layers=(-2, -1)),
                 f"last hidden layer and logits after {g.steps} steps at LR {g.fixed():.3g} against depth "
                 "(geometric mean over seeds)")
    _write_tables(summary, sweep.out)
    _write_plans(sweep, sweep.out / "plans.md")
    return summary


def _write_plans(sweep: Sweep, path: Path) -> None:
    """The per-layer numbers every cell trained with (from its saved runs)."""
    lines = ["| cell | layer | fan_in x fan_out | init std | multiplier | LR factor | bias LR factor | "
             "Adam eps factor | branch multiplier |", "|---|---|---|---|---|---|---|---|---|"]
    plans: dict = {}
    for cell, run in sweep.all_runs():
        plans.setdefault(cell, run["plan"])
    for cell, plan in plans.items():
        for i, l in enumerate(plan["layers"]):
            branch = f"{plan['branch_mult']:.4g}" if l["branch"] else ""
            lines.append(f"| {cell} | {i} {l['kind']} | {l['fan_in']}x{l['fan_out']} | {l['init_std']:.4g} | "
                         f"{l['mult']:.4g} | {l['lr']:.4g} | {l['bias_lr']:.4g} | {l['eps']:.4g} | {branch} |")
    write_atomic(path, "\n".join(lines) + "\n")


def _figures(figures: Path, axis: str, part: dict, g: Grid, scale_panels: list, title: str) -> None:
    """The three figures of a part, each only if some cell of it has finished."""
    from mupspec.empirical import plots

    fixed = {k: v for k, v in part["fixed"].items() if v}
    if fixed:
        plots.spiral_fixed_lr(figures / f"{axis}_fixed_lr.png", fixed, axis, g.fixed())
    if scale_panels:
        plots.panel_grid(figures / f"{axis}_exponents.png", scale_panels, ncols=3, suptitle=title, xlabel=axis,
                         sharey="col")
    transfer = {k: v for k, v in part["transfer"].items() if v["optima"].get("val_loss")}
    if transfer:
        plots.spiral_transfer(figures / f"{axis}_transfer.png", transfer, g.lrs, axis)


def _write_runs_csv(sweep: Sweep, path: Path) -> list[dict]:
    """runs.csv; returns the distinct `software` records of the runs (with counts)."""
    rows, software = [], {}
    for _, r in sweep.all_runs():
        key = json.dumps(r.get("software", "not recorded"), sort_keys=True)
        software[key] = software.get(key, 0) + 1
        c = r["cell"]
        rows.append([c["spec"], c["arch"], c["width"], c["depth"], r["lr"], r["seed"], r["diverged"],
                     r["final"].get("train_loss"), r["final"].get("val_loss"), r["final"].get("val_acc")])
    with open_atomic(path) as f:
        w = csv.writer(f)
        w.writerow(["spec", "arch", "width", "depth", "lr", "seed", "diverged",
                    "train_loss", "val_loss", "val_acc"])
        w.writerows(rows)
    return [{"runs": n, "software": json.loads(key)} for key, n in software.items()]


def _write_tables(summary: dict, out: Path) -> None:
    with open_atomic(out / "optima.csv") as f:
        w = csv.writer(f)
        w.writerow(["axis", "variant", "loss", "size", "best_lr", "ci_lo", "ci_hi", "at_edge", "best_loss"])
        for axis in ("width", "depth"):
            for label, e in summary.get(axis, {}).get("transfer", {}).items():
                for which, optima in e["optima"].items():
                    for o in optima:
                        w.writerow([axis, label, which, o["size"], o["lr"], o["lo"], o["hi"], o["edge"], o["loss"]])
    with open_atomic(out / "exponents.csv") as f:
        w = csv.writer(f)
        w.writerow(["axis", "variant", "layer", "quantity", "exponent", "ci95"])
        for axis in ("width", "depth"):
            for label, rows in summary.get(axis, {}).get("exponents", {}).items():
                for r in rows:
                    w.writerow([axis, label, r["layer"], r["quantity"], r["exponent"], r["ci"]])


def markdown(summary: dict) -> str:
    """The tables the tutorial quotes, as markdown."""
    lines = [f"Fixed LR: {summary['fixed_lr']:.3g}. Settings: {json.dumps(summary['settings'])}", ""]
    for entry in summary.get("software", []):
        lines += [f"{entry['runs']} runs computed with: {json.dumps(entry['software'])}", ""]
    if summary.get("failed", {}).get("runs"):
        lines += [f"{summary['failed']['runs']} runs FAILED (not in the tables; errors/ has each error):", ""]
        lines += [f"- {key}: {error}" for key, error in summary["failed"]["cells"].items()] + [""]
    for axis in ("width", "depth"):
        if axis not in summary:
            continue
        s = summary[axis]
        lines += [f"## {axis}: final loss at the fixed LR (seed mean)", "",
                  f"| variant | {axis} | train loss | val loss | val acc | diverged seeds |", "|---|---|---|---|---|---|"]
        for label, by_size in s["fixed"].items():
            for size, e in by_size.items():
                f = e["final"]
                fmt = lambda v: "—" if v is None else f"{v:.3f}"
                lines.append(f"| {label} | {size} | {fmt(f['train_loss'])} | {fmt(f['val_loss'])} | "
                             f"{fmt(f['val_acc'])} | {e['diverged']} |")
        lines += ["", f"## {axis}: fitted exponents at the fixed LR, final step (value ~ {axis}^k, "
                  "mean ± 95% CI over seeds)", "", "| variant | layer | act | dact | upd |", "|---|---|---|---|---|"]
        for label, rows in s["exponents"].items():
            by_layer: dict = {}
            for r in rows:
                by_layer.setdefault(r["layer"], {})[r["quantity"]] = f"{r['exponent']:+.2f} ± {r['ci']:.2f}"
            for layer, q in by_layer.items():
                lines.append(f"| {label} | {layer} | {q['act']} | {q['dact']} | {q['upd']} |")
        lines += ["", f"## {axis}: best LR per {axis} (95% bootstrap interval over seeds)", "",
                  f"| variant | loss | {axis}: best LR [interval] seed-mean loss there | shift per doubling (log2) [95%] |", "|---|---|---|---|"]
        for label, e in s["transfer"].items():
            for which, optima in e["optima"].items():
                cells = ", ".join(f"{o['size']}: {o['lr']:.2g} [{o['lo']:.2g}, {o['hi']:.2g}]"
                                  + ("*" if o["edge"] else "") + f" loss {o['loss']:.3f}" for o in optima)
                sh = e["shift"][which]
                shift = "—" if sh is None else f"{sh['per_doubling']:+.2f} [{sh['lo']:+.2f}, {sh['hi']:+.2f}]"
                lines.append(f"| {label} | {which} | {cells} | {shift} |")
        lines += ["", "(* = optimum on the edge of the LR grid)", ""]
    return "\n".join(lines) + "\n"


_QUANTITY_TITLES = {"act": "RMS of the layer's output", "dact": "RMS change since init",
                    "upd": "RMS of (mult * dW) x"}


def _scale_panels(sweep, g, variants, axis, sizes, layers=None) -> list[dict]:
    """Panels for plots.panel_grid: one per (variant, quantity), one line per layer."""
    panels = []
    for label, (spec, arch) in variants.items():
        runs = {s: [r for r in _fixed_runs(sweep, g, spec, arch, axis, s) if not r["diverged"]] for s in sizes}
        ok = [s for s in sizes if runs[s]]
        if len(ok) < 2:
            continue
        n_layers = len(runs[ok[0]][0]["plan"]["layers"])
        for q, title in _QUANTITY_TITLES.items():
            series = {}
            for layer in (layers or range(n_layers)):
                name = _layer_name(layer, n_layers) if axis == "width" else _DEPTH_LAYERS[layer]
                series[name] = [float(np.exp(np.mean([math.log(max(r["curves"][q][-1][layer], 1e-30))
                                                      for r in runs[s]]))) for s in ok]
            panels.append({"title": f"{label}: {title}", "xs": ok, "series": series, "ylabel": "RMS"})
    return panels

"""`mupspec experiment grad-ratio`: the original ||grad W||/||W|| experiment
(one backward pass of an SP MLP and a "muP_MLP" over widths and depths, meant to
show the muP ratio width-invariant), reproduced exactly, then done right.

Takes bundled spec files and a grid; writes into --out:
- `grad_ratio.csv`: one row per (spec, width, depth, seed, layer): weight
  norms, gradient norms, LRs and relative updates, Frobenius and spectral;
- `stability_heatmap.png`: the original figure, output-layer Frobenius ratio,
  SP vs the original "muP_MLP" side by side (widths x depths);
- `slopes.csv`, `summary.md` (the printed tables) and figures for
  docs/grad-ratio.md: width exponents per layer class of the raw gradient
  ratio and of the LR-scaled relative update; depth decay of SP.

The original setup (docs/grad-ratio.md §1): x in R^128 drawn once from N(0, 1) and
reused; widths 64..1024; depths 2..32 (number of hidden layers: depth + 1
weight matrices); ReLU MLP without biases; loss = output.sum(); one forward
and one backward pass. The relative update of one step is computed from that
gradient: SGD moves w by lr*g, Adam's first step by lr*g/(|g| + eps) (eps ->
0: lr*sign(g)); the LRs are the spec's values at that width (base LR 1).
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import torch

from mupspec.bundled import DIR as SPECS_DIR
from mupspec.commands._io import check_output_dir, write_atomic
from mupspec.empirical.fit import summarize, slope
from mupspec.empirical.measure import spectral_norm
from mupspec.empirical.models import Arch, build
from mupspec.resolve import load_spec

SEED_SPECS = ("sp", "seed_mlp")
REAL_SPECS = ("sp", "seed_mlp", "mup_table3", "mup_table8", "mup_table9")
WIDTHS = (64, 128, 256, 512, 1024)
DEPTHS = (2, 4, 8, 16, 32)
CLASSES = ("input", "hidden", "output")
FIELDS = ("spec", "width", "depth", "seed", "layer", "cls", "w_fro", "w_spec", "g_fro", "g_spec",
          "ratio_fro", "ratio_spec", "lr_sgd", "lr_adam", "upd_sgd_fro", "upd_sgd_spec",
          "upd_adam_fro", "upd_adam_spec")


def configure(parser) -> None:
    parser.add_argument("--out", default="grad-ratio-out", help="output folder (created)")
    parser.add_argument("--widths", type=_ints, default=WIDTHS, help="comma-separated (default 64..1024)")
    parser.add_argument("--depths", type=_ints, default=DEPTHS, help="comma-separated (default 2..32)")
    parser.add_argument("--seeds", type=int, default=5, help="init seeds for the fitted slopes (default 5)")
    parser.add_argument("--d-out", type=int, default=1, help="output dimension (default 1)")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def seed_input(d_in: int = 128) -> torch.Tensor:
    """The original x: one vector from N(0, 1), drawn once and reused."""
    return torch.randn(1, d_in, generator=torch.Generator().manual_seed(0))


def one_pass(spec, spec_name: str, width: int, depth: int, seed: int, x: torch.Tensor, d_out: int,
             spectral: bool) -> list[dict]:
    """One forward/backward of loss = output.sum(); a row per weight matrix."""
    net = build(spec, width, depth, arch=Arch(kind="mlp", d_in=x.shape[1], d_out=d_out, bias=False), seed=seed)
    net(x).sum().backward()
    rows = []
    for index, layer in enumerate(net.layers):
        w, g = layer.weight.detach(), layer.weight.grad.detach()
        lr_sgd, lr_adam = layer.scale.lr["sgd"], layer.scale.lr["adam"]
        adam_dir = torch.sign(g)
        w_fro, g_fro, a_fro = float(w.norm()), float(g.norm()), float(adam_dir.norm())
        # g (one input: rank 1) and sign(g) (rank 1 too) converge in one power step
        w_spec, g_spec, a_spec = ((spectral_norm(w), spectral_norm(g, iters=3), spectral_norm(adam_dir, iters=3))
                                  if spectral else (math.nan,) * 3)
        rows.append({"spec": spec_name, "width": width, "depth": depth, "seed": seed, "layer": index,
                     "cls": layer.kind, "w_fro": w_fro, "w_spec": w_spec, "g_fro": g_fro, "g_spec": g_spec,
                     "ratio_fro": g_fro / w_fro, "ratio_spec": g_spec / w_spec,
                     "lr_sgd": lr_sgd, "lr_adam": lr_adam,
                     "upd_sgd_fro": lr_sgd * g_fro / w_fro, "upd_sgd_spec": lr_sgd * g_spec / w_spec,
                     "upd_adam_fro": lr_adam * a_fro / w_fro, "upd_adam_spec": lr_adam * a_spec / w_spec})
    return rows


def run_grid(spec_names, widths, depths, seeds, d_out: int, spectral_depths=()) -> list[dict]:
    torch.set_num_threads(2)
    x = seed_input()
    rows = []
    for name in spec_names:
        spec = load_spec(SPECS_DIR / f"{name}.mup")
        for depth in depths:
            for width in widths:
                for seed in seeds:
                    rows.extend(one_pass(spec, name, width, depth, seed, x, d_out, depth in spectral_depths))
    return rows


def class_value(rows: list[dict], spec: str, width: int, depth: int, seed: int, cls: str, field: str) -> float:
    """The class's value: the mean over its layers (hidden has depth - 1)."""
    vals = [r[field] for r in rows if (r["spec"], r["width"], r["depth"], r["seed"], r["cls"]) ==
            (spec, width, depth, seed, cls)]
    return sum(vals) / len(vals) if vals else math.nan


def width_slopes(rows, specs, widths, depth, seeds, fields) -> list[dict]:
    """Width exponent per (spec, class, quantity): mean ± 95% CI over seeds."""
    out = []
    for spec in specs:
        for cls in CLASSES:
            for field in fields:
                per_seed = [slope(widths, [class_value(rows, spec, w, depth, s, cls, field) for w in widths])
                            for s in seeds]
                mean, ci = summarize(per_seed)
                out.append({"spec": spec, "depth": depth, "cls": cls, "quantity": field,
                            "slope": round(mean, 3), "ci95": round(ci, 3)})
    return out


def write_csv(path: Path, rows: list[dict], fields) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- report


def figures(out: Path, seed_rows, real_rows, widths, depths, fit_depth, seeds) -> list[Path]:
    from mupspec.empirical import plots

    grids = [[[class_value(seed_rows, name, w, d, 0, "output", "ratio_fro") for w in widths] for d in depths]
             for name in SEED_SPECS]
    paths = [plots.heatmap_pair(out / "stability_heatmap.png",
                                ["SP_MLP (specs/sp.mup)", "original muP_MLP (specs/seed_mlp.mup)"], grids,
                                depths, widths, "depth (hidden layers)", "width",
                                "output layer ||grad W||_F / ||W||_F, loss = output.sum(), one backward")]
    labels = {"ratio_fro": "||grad W||_F / ||W||_F", "ratio_spec": "||grad W||_2 / ||W||_2",
              "upd_sgd_spec": "SGD: lr ||grad W||_2 / ||W||_2", "upd_adam_spec": "Adam: ||dW||_2 / ||W||_2"}
    specs = ("sp", "mup_table3", "mup_table8", "mup_table9")
    panels = []
    for quantity, label in labels.items():
        for cls in CLASSES:
            series = {name: [_seed_mean(real_rows, name, w, fit_depth, seeds, cls, quantity) for w in widths]
                      for name in specs}
            panels.append({"title": f"{cls}: {label}", "xs": widths, "series": series, "styles": _STYLES})
    paths.append(plots.panel_grid(out / "ratio_vs_width.png", panels, 3,
                                  f"Width scaling at depth {fit_depth} (mean of {len(seeds)} seeds): "
                                  "raw gradient ratios move between equivalent muP tables, "
                                  "spectral relative updates do not"))
    panels = []
    for cls in CLASSES:
        series = {f"width {w}": [class_value(seed_rows, "sp", w, d, 0, cls, "ratio_fro") for d in depths]
                  for w in widths}
        panels.append({"title": f"SP plain MLP, {cls}: ||grad W||_F / ||W||_F", "xs": depths, "series": series})
    paths.append(plots.panel_grid(out / "depth_sp.png", panels, 3,
                                  "What depth does to a plain ReLU MLP (SP, Var = 1/fan_in, no skips): "
                                  "an exponential decay, factor per added hidden layer in the legend",
                                  xlabel="depth (hidden layers)", xscale="linear"))
    return paths


# equivalent tables often coincide: distinct markers and dashes keep each visible
_STYLES = {"sp": "o-", "mup_table3": "s-", "mup_table8": "x--", "mup_table9": "^:"}


def _seed_mean(rows, spec, width, depth, seeds, cls, field) -> float:
    vals = [class_value(rows, spec, width, depth, s, cls, field) for s in seeds]
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def summary(seed_rows, slopes, widths, depths) -> str:
    lines = ["## The original experiment: output-layer ||grad W||_F/||W||_F (seed 0)", "",
             "| depth | " + " | ".join(f"SP w={w}" for w in widths) + " | max rel. diff original muP_MLP vs SP |",
             "|---" * (len(widths) + 2) + "|"]
    for d in depths:
        sp = [class_value(seed_rows, "sp", w, d, 0, "output", "ratio_fro") for w in widths]
        mu = [class_value(seed_rows, "seed_mlp", w, d, 0, "output", "ratio_fro") for w in widths]
        diff = max(abs(a - b) / abs(a) for a, b in zip(sp, mu))
        lines.append(f"| {d} | " + " | ".join(f"{v:.4g}" for v in sp) + f" | {diff:.1e} |")
    lines += ["", "## Depth, SP plain MLP: factor per added hidden layer (fit of ln ratio vs depth, seed 0)", "",
              "| class | " + " | ".join(f"w={w}" for w in widths) + " |", "|---" * (len(widths) + 1) + "|"]
    for cls in CLASSES:
        factors = [math.exp(slope([math.exp(d) for d in depths],
                                  [class_value(seed_rows, "sp", w, d, 0, cls, "ratio_fro") for d in depths]))
                   for w in widths]
        lines.append(f"| {cls} | " + " | ".join(f"{f:.3f}" for f in factors) + " |")
    quantities = ("ratio_fro", "ratio_spec", "upd_sgd_fro", "upd_sgd_spec", "upd_adam_fro", "upd_adam_spec")
    lines += ["", "## Width exponents (slope of log value vs log width, mean ± 95% CI over seeds)", "",
              "| spec | class | " + " | ".join(quantities) + " |", "|---" * (len(quantities) + 2) + "|"]
    table = {(r["spec"], r["cls"], r["quantity"]): r for r in slopes}
    for spec in REAL_SPECS:
        for cls in CLASSES:
            cells = [f"{table[spec, cls, q]['slope']:+.2f} ± {table[spec, cls, q]['ci95']:.2f}" for q in quantities]
            lines.append(f"| {spec} | {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args) -> int:
    out = check_output_dir(args.out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    seeds = tuple(range(args.seeds))
    fit_depth = 4 if 4 in args.depths else args.depths[0]
    # Part 1, the original experiment exactly: SP vs its muP_MLP, one init, every (width, depth).
    seed_rows = run_grid(SEED_SPECS, args.widths, args.depths, (0,), args.d_out)
    # Part 2, done right: the real muP tables, Frobenius and spectral, several seeds.
    real_rows = run_grid(REAL_SPECS, args.widths, (fit_depth,), seeds, args.d_out, spectral_depths=(fit_depth,))
    write_csv(out / "grad_ratio.csv", seed_rows + real_rows, FIELDS)
    quantities = ("ratio_fro", "ratio_spec", "upd_sgd_fro", "upd_sgd_spec", "upd_adam_fro", "upd_adam_spec")
    slopes = width_slopes(real_rows, REAL_SPECS, args.widths, fit_depth, seeds, quantities)
    write_csv(out / "slopes.csv", slopes, ("spec", "depth", "cls", "quantity", "slope", "ci95"))
    paths = figures(out, seed_rows, real_rows, args.widths, args.depths, fit_depth, seeds)
    text = summary(seed_rows, slopes, args.widths, args.depths)
    write_atomic(out / "summary.md", text + "\n")
    print(text)
    print(f"\nwrote {out / 'grad_ratio.csv'}, {out / 'slopes.csv'}, " + ", ".join(str(f) for f in paths))
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0

"""`mupspec experiment transformer`: muP on a byte-level GPT language model,
the design of "A thorough reproduction and evaluation of muP" (TMLR 2025) at
laptop scale.

Takes the command-line options; trains, per cell (spec x width x depth), every
(LR x seed) replica together (`lm_engine.py`), saving each run the moment its
cell finishes (`RunStore`), and writes under --out:
  runs/<cell>/lr..._s..json  one run: loss curves, coordinate statistics, the
                             generated plan's numbers, the software;
  runs.csv                   final train/validation loss of every run;
  optima.csv                 best LR per variant and size (bootstrap interval),
                             and the best reachable loss there;
  exponents.csv              width exponents of the coordinate statistics over
                             training (mean and 95% t-interval over seeds);
  summary.json / summary.md  the shift of the optimal LR per doubling, the tables;
  figures/                   the PNGs of docs/lm-study.md.

Parts: `width` (SP against muP, and u-muP in --full, over d_model at a fixed
depth), `depth` (muP with no depth rule against CompleteP over blocks) and
`transfer` (HP transfer beyond the LR: muP's output multiplier and hidden init
scale, each swept at two widths with the LR fixed; a cell's arch string
carries its hyperparameters, `gpt+alpha_out=0.25`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mupspec.atomic import open_atomic, write_atomic
from mupspec.commands._backend import add_backend_options
from mupspec.empirical.spiral import _json_safe
from mupspec.empirical.sweep import Cell, Sweep
from mupspec.errors import Diagnostic, MupError

# the bundled specs of each family: Table 8 as microsoft/mup does it (and the specs
# derived from it), or the Transformer specs (sub-roles: zero-init query and readout,
# 1/d_head attention, d_ff and d_head derived from d_model)
SPEC_FAMILIES = {
    "table8": {"SP": "sp", "muP": "mup_table8", "u-muP": "umup", "CompleteP": "completep"},
    "gpt": {"SP": "sp", "muP": "gpt_mup", "u-muP": "umup_gpt", "CompleteP": "completep_gpt"},
}
DEPTH_LABELS = {"muP (no depth rule)": "muP", "CompleteP": "CompleteP"}
QUANTITIES = ("act", "upd", "w", "dw")
ARCH = "gpt"   # the cells' architecture (a cell is spec x arch x width x depth, as in the spiral sweep)
TIED_ARCH = "gpt_tied"   # --tied: the readout is the token embedding
# --tied: the spec that declares the tie where the family's own cannot share one tensor
TIED_SPECS = {"sp": "sp_tied"}
# HP transfer: alpha_out in factors of 2 over 1/8..32, sigma_hidden in factors of sqrt(2) over 1/4..4
# (rounded to 4 digits: the arch string carries them): in the default run no optimum lies on an edge
HP_GRID = (("alpha_out", tuple(2.0 ** k for k in range(-3, 6))),
           ("sigma_hidden", tuple(float(f"{2 ** (k / 2):.4g}") for k in range(-4, 5))))


@dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depth: int = 2                                  # blocks, in the width sweep
    depths: tuple[int, ...] = (2, 4, 8)
    depth_width: int = 64                           # d_model of the depth sweep
    lrs: tuple[float, ...] = tuple(10 ** (-3.25 + k / 4) for k in range(10))   # 5.6e-4 .. 0.1
    seeds: tuple[int, ...] = (0, 1)
    coord_seeds: tuple[int, ...] = (2, 3, 4)        # more seeds at the fixed LR, for the exponents' intervals
    fixed_lr: float = 1e-2                          # the coordinate statistics' LR (nearest grid value)
    width_variants: tuple[str, ...] = ("SP", "muP")
    specs: str = "table8"                           # the spec family (SPEC_FAMILIES)
    steps: int = 200
    batch: int = 16
    context: int = 32
    heads: int = 4
    warmup: int = 20
    log_every: int = 50
    base_width: int = 32
    base_depth: int = 2
    # HP transfer beyond the LR: each hyper of transfer_spec over its values at these widths (depth
    # `depth`), LR fixed at transfer_lr: muP's best validation LR of the width part (docs/lm-study.md, 2)
    transfer_spec: str = "mup_table8_hp"
    transfer_widths: tuple[int, ...] = (32, 128)
    transfer_hypers: tuple = HP_GRID
    transfer_seeds: tuple[int, ...] = (0, 1, 2)
    transfer_lr: float = 0.02
    tied: bool = False                              # the readout tied to the token embedding (--tied)

    def fixed(self) -> float:
        return min(self.lrs, key=lambda lr: abs(math.log(lr / self.fixed_lr)))


DEFAULT = Grid()
QUICK = Grid(widths=(32, 64, 128), depths=(2, 4), depth_width=32, lrs=tuple(10 ** (-2.75 + k / 2) for k in range(6)),
             coord_seeds=(2,), steps=30, batch=8, context=16, warmup=5, log_every=15, transfer_widths=(32, 64),
             transfer_hypers=(("alpha_out", (0.25, 1.0, 4.0)), ("sigma_hidden", (0.5, 1.0, 2.0))),
             transfer_seeds=(0, 1))
FULL = Grid(widths=(32, 64, 128, 256, 512, 1024), depth=4, depths=(2, 4, 8, 16), depth_width=256,
            lrs=tuple(10 ** (-3.5 + k / 4) for k in range(13)), seeds=(0, 1, 2), coord_seeds=(3, 4),
            fixed_lr=3e-3, width_variants=("SP", "muP", "u-muP"), steps=2000, batch=32, context=128,
            warmup=100, log_every=250, base_depth=4, transfer_widths=(64, 512),
            transfer_lr=3e-3)   # not tuned: the full grid has not been run


def _spec(g: Grid, name: str) -> str:
    return TIED_SPECS.get(name, name) if g.tied else name


def width_specs(g: Grid) -> dict[str, str]:
    return {label: _spec(g, SPEC_FAMILIES[g.specs][label]) for label in g.width_variants}


def depth_specs(g: Grid) -> dict[str, str]:
    return {label: _spec(g, SPEC_FAMILIES[g.specs][name]) for label, name in DEPTH_LABELS.items()}


def arch_of(g: Grid) -> str:
    return TIED_ARCH if g.tied else ARCH


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="folder for runs, tables and (by default) figures")
    parser.add_argument("--figures-dir", help="where the PNGs go (default: OUT/figures)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small grid, 30 steps (about a minute; used in CI)")
    size.add_argument("--full", action="store_true",
                      help="d_model up to 1024, 2000 steps (for a GPU: --device cuda; hours on a CPU)")
    parser.add_argument("--part", choices=("all", "width", "depth", "transfer"), default="all")
    parser.add_argument("--hyper", action="append", metavar="NAME=V1,V2,...",
                        help="the transfer part: sweep this hyperparameter of specs/mup_table8_hp.mup over these "
                        "values (each > 0; repeatable; replaces the grid's alpha_out and sigma_hidden)")
    parser.add_argument("--text", help="train on this text file instead of the built-in corpus "
                        "(CPython's pydoc_data.topics)")
    parser.add_argument("--specs", choices=tuple(SPEC_FAMILIES), default="table8",
                        help="the muP / u-muP / CompleteP specs: table8 (mup_table8, umup, completep; default) or "
                        "gpt (the Transformer specs gpt_mup, umup_gpt, completep_gpt); SP is specs/sp.mup")
    parser.add_argument("--tied", action="store_true",
                        help="tie the readout to the token embedding (nanoGPT, GPT-2); SP becomes "
                        "specs/sp_tied.mup, which declares the tie; the runs go to their own cells (arch gpt_tied)")
    parser.add_argument("--lrs", help="comma-separated learning rates replacing the grid's (each > 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--budget-minutes", type=float,
                        help="start no new cell after this many minutes; the report covers what finished "
                        "(run again to resume)")
    parser.add_argument("--memory-gib", type=float,
                        help="memory the runs training at once may take, GiB (default: 70%% of what the device "
                        "has free when a shape starts; on a CPU, the share of --threads in its cores); a shape's "
                        "runs train in groups that fit")
    parser.add_argument("--runs-per-task", type=int, metavar="K",
                        help="split each shape's runs into tasks of at most K runs, which the workers of a "
                        "cluster (--backend ray) train side by side (default: one task per shape)")
    add_backend_options(parser)


# ---------------------------------------------------------------- cells and the run store

class RunStore(Sweep):
    """The results store of the spiral sweep (`sweep.py`: one JSON per run under
    DIR/runs/<cell>/, atomic writes by the driver alone, damaged files counted
    as missing, a settings fingerprint in DIR/sweep.json, one writer at a time)
    holding this study's runs. `missing`, `save` and `load` are all the training
    loop needs: the seam where the sweep runner's backends can take over."""

    def __init__(self, out: Path, settings: dict):
        super().__init__(out, _Fingerprint(settings))

    def save(self, cell: Cell, run: dict) -> None:
        self.write_runs(cell, [run], [(run["lr"], run["seed"])])


@dataclass(frozen=True)
class _Fingerprint:
    values: dict

    def fingerprint(self) -> dict:
        return self.values


def settings_of(grid: Grid, data) -> dict:
    """What makes runs comparable: the training settings and the text itself."""
    from mupspec.empirical.lm_engine import RESIDUAL_BRANCHES

    digest = hashlib.sha256(data.train.numpy().tobytes() + data.val.numpy().tobytes()).hexdigest()[:16]
    keep = ("steps", "batch", "context", "heads", "warmup", "log_every", "base_width", "base_depth")
    return {"train": {k: getattr(grid, k) for k in keep}, "text": {"source": data.source, "sha256": digest},
            "residual_branches": RESIDUAL_BRANCHES}


def width_cells(g: Grid) -> list[Cell]:
    cells = []
    for spec in width_specs(g).values():
        for w in g.widths:
            cells.append(Cell(spec, arch_of(g), w, g.depth, g.lrs, g.seeds))
            if g.coord_seeds:
                cells.append(Cell(spec, arch_of(g), w, g.depth, (g.fixed(),), g.coord_seeds))
    return cells


def depth_cells(g: Grid) -> list[Cell]:
    return [Cell(spec, arch_of(g), g.depth_width, d, g.lrs, g.seeds) for spec in depth_specs(g).values()
            for d in g.depths]


def transfer_cells(g: Grid) -> list[Cell]:
    """One cell per (hyper, value, width): the seeds at the one fixed LR."""
    return [Cell(g.transfer_spec, hyper_arch(name, v, arch_of(g)), w, g.depth, (g.transfer_lr,), g.transfer_seeds)
            for name, values in g.transfer_hypers for w in g.transfer_widths for v in values]


def hyper_arch(name: str, value: float, base: str = ARCH) -> str:
    """The arch string of a cell with one hyperparameter set: gpt+alpha_out=0.25."""
    return f"{base}+{name}={value:.6g}"


def arch_tied(arch: str) -> bool:
    """Whether a cell's arch string (checked by arch_hypers) is the tied GPT."""
    return arch.split("+")[0] == TIED_ARCH


def arch_hypers(arch: str) -> dict[str, float]:
    """The hyperparameters an arch string carries: 'gpt' -> {}, 'gpt+alpha_out=0.25' ->
    {'alpha_out': 0.25}; the run trains with exactly these values."""
    base, *items = arch.split("+")
    if base not in (ARCH, TIED_ARCH):
        raise MupError(Diagnostic(f"cell arch {arch!r}: expected {ARCH!r} or {TIED_ARCH!r}",
                                  hint="e.g. gpt+alpha_out=0.25"))
    hypers: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not sep or not name.isidentifier() or name in hypers or not value > 0 or \
                not math.isfinite(value):
            raise MupError(Diagnostic(f"cell arch {arch!r}: expected {ARCH}+NAME=VALUE+..., each value a "
                                      "positive number and each name once", hint="e.g. gpt+alpha_out=0.25"))
        hypers[name] = value
    return hypers


@dataclass(frozen=True)
class ShapeRuns(Cell):
    """Every run of one shape, whatever cells they come from (the LR sweep and
    the coordinate seeds at the fixed LR): one batched computation. Its key,
    and so its folder, is the cells' own."""

    pairs: tuple[tuple[float, int], ...] = ()

    def runs(self) -> list[tuple[float, int]]:
        return list(self.pairs)


def _shape_runs(cell: Cell, pairs) -> ShapeRuns:
    """These (lr, seed) runs of the cell's shape, in order."""
    pairs = tuple(pairs)
    return ShapeRuns(cell.spec, cell.arch, cell.width, cell.depth, tuple(dict.fromkeys(lr for lr, _ in pairs)),
                     tuple(dict.fromkeys(s for _, s in pairs)), pairs)


def split_runs(shape: ShapeRuns, most: int) -> list[ShapeRuns]:
    """The shape's runs as consecutive parts of at most `most` runs: tasks that
    several workers of a cluster train side by side."""
    pairs = shape.runs()
    return [_shape_runs(shape, pairs[i:i + most]) for i in range(0, len(pairs), most)]


def by_shape(cells: list[Cell]) -> list[ShapeRuns]:
    """The cells merged per shape (spec, arch, width, depth), runs in order, each once."""
    merged: dict[str, tuple[Cell, dict]] = {}
    for cell in cells:
        merged.setdefault(cell.key, (cell, {}))[1].update(dict.fromkeys(cell.runs()))
    return [_shape_runs(c, runs) for c, runs in merged.values()]


def _cost(cell: Cell) -> float:
    """Matrix parameters x replicas: what a step of the cell costs, roughly."""
    return len(cell.runs()) * (12 * cell.depth * cell.width ** 2 + 256 * cell.width)


MEMORY_FRACTION = 0.7   # of the device's free memory, by default: room for the rest of the process


def shape_of(cell: Cell, g: Grid):
    from mupspec.empirical.lm_engine import Shape

    return Shape(cell.width, cell.depth, g.heads, g.context, arch_tied(cell.arch))


def replicas_that_fit(cell: Cell, g: Grid, device: str, memory_gib: float | None) -> int:
    """How many of the cell's runs may train at once (replica_bytes against the
    budget); MupError when not even one fits."""
    from mupspec.empirical.lm_engine import replica_bytes

    budget = memory_gib * 2 ** 30 if memory_gib else default_budget(device)
    one = replica_bytes(shape_of(cell, g), g.batch)
    if one > budget:
        where = "--memory-gib" if memory_gib else f"this process's share of the memory {device} has free now"
        raise MupError(Diagnostic(
            f"{cell.key}: one run (d_model {cell.width}, {cell.depth} blocks, batch {g.batch} x context "
            f"{g.context}) needs about {one / 2 ** 30:.3g} GiB, more than {where} ({budget / 2 ** 30:.3g} GiB)",
            hint="a machine or GPU with more memory (--backend ray trains each shape on a worker), "
                 "or a smaller grid (the default grid's largest run needs "
                 f"{_run_gib(largest_run(width_cells(DEFAULT) + depth_cells(DEFAULT), DEFAULT), DEFAULT):.2f} GiB)"))
    return max(1, int(budget // one))


def default_budget(device: str) -> float:
    """MEMORY_FRACTION of the device's free memory. On a CPU, this process's
    share of it by threads: a Ray node runs one task per --threads cores side by
    side, each reading the same free memory. (A task holds a GPU of its own.)"""
    import os

    import torch

    from mupspec.empirical.lm_engine import available_bytes

    share = 1.0
    if not device.startswith("cuda"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = min(1.0, torch.get_num_threads() / cores)
    return MEMORY_FRACTION * share * available_bytes(device)


def _run_gib(cell: Cell, g: Grid) -> float:
    from mupspec.empirical.lm_engine import replica_bytes

    return replica_bytes(shape_of(cell, g), g.batch) / 2 ** 30


def largest_run(cells: list[Cell], g: Grid) -> Cell:
    """The cell whose one run needs the most memory."""
    return max(cells, key=lambda c: _run_gib(c, g))


def train_cells(store: RunStore, cells: list[Cell], grid: Grid, data, device: str,
                deadline: float | None, progress: bool, backend=None, threads: int = 2,
                memory_gib: float | None = None, runs_per_task: int | None = None):
    """Train the missing runs of each shape (cheapest first; the cells of one
    shape together, or in tasks of at most `runs_per_task` runs) on `backend`
    (default local), holding the store's lock; no new task starts after the
    deadline; one that raises is recorded in errors/ and the others go on.
    Returns (runs trained now, tasks not started)."""
    from mupspec.empirical.runner import run_sweep

    tasks = sorted(by_shape(cells), key=_cost)
    if runs_per_task:
        tasks = [part for shape in tasks for part in split_runs(shape, runs_per_task)]
    make_task = lambda cell, missing: cell_task(cell, missing, grid, data, device, threads, memory_gib)  # noqa: E731
    report = run_sweep(store, tasks, backend, make_task=make_task, progress=progress, deadline=deadline)
    return report.trained, report.postponed_cells


def cell_task(cell: Cell, missing, grid: Grid, data, device: str, threads: int, memory_gib: float | None = None):
    """The sweep-runner task training a cell's missing runs: the text and the grid,
    the same for every cell, are its shared object (sent to a Ray cluster once)."""
    from mupspec.empirical.runner import Task

    return Task(train_cell, (cell, tuple(missing), device, memory_gib), threads=threads, shared=(grid, data),
                gpus=1 if device.startswith("cuda") else 0, label=cell.key, steps=grid.steps)


def train_cell(cell: Cell, runs, device: str, memory_gib: float | None = None, *, shared,
               on_step=None) -> list[dict]:
    """The (lr, seed) runs of a cell, as many together as fit the memory of the
    machine that trains them; every run's record as saved."""
    from mupspec.empirical.lm_engine import LMTrainConfig, Shape, software, train_runs

    grid, data = shared
    cfg = LMTrainConfig(steps=grid.steps, batch=grid.batch, warmup=grid.warmup, log_every=grid.log_every)
    base = Shape(grid.base_width, grid.base_depth, grid.heads, grid.context)
    hypers = arch_hypers(cell.arch)
    results = train_runs(cell.spec, shape_of(cell, grid), base, data, list(runs), cfg, device=device,
                         on_step=on_step, hypers=hypers or None,
                         max_replicas=replicas_that_fit(cell, grid, device, memory_gib))
    header = {"cell": {"spec": cell.spec, "arch": cell.arch, "width": cell.width, "depth": cell.depth,
                       "hypers": hypers},   # empty: the spec's defaults
              "software": software(device, "torch.float32")}
    return [header | run for run in results]


# ---------------------------------------------------------------- the command

def _parse_lrs(text: str) -> tuple[float, ...]:
    try:
        lrs = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise MupError(Diagnostic(f"--lrs {text!r}: expected comma-separated numbers",
                                  hint="e.g. --lrs 1e-3,3e-3,1e-2")) from None
    bad = [x for x in lrs if not (x > 0 and math.isfinite(x))]
    if bad:
        raise MupError(Diagnostic(f"--lrs: every learning rate must be a positive number, got {bad[0]}",
                                  hint="e.g. --lrs 1e-3,3e-3,1e-2"))
    return tuple(sorted(set(lrs)))


def _parse_hypers(texts: list[str], spec: str) -> tuple:
    """--hyper NAME=V1,V2,... (repeatable) as the grid's transfer_hypers; every
    name must be a hyperparameter the spec declares."""
    from mupspec.empirical.lm_engine import spec_module

    declared = sorted(spec_module(spec).HYPER_DEFAULTS)
    out = []
    for text in texts:
        name, sep, values = text.partition("=")
        hint = f"e.g. --hyper alpha_out=0.5,1,2; {spec} declares: {', '.join(declared)}"
        if name not in declared:
            raise MupError(Diagnostic(f"--hyper {text!r}: {spec} has no hyperparameter `{name}`", hint=hint))
        if name in dict(out):
            raise MupError(Diagnostic(f"--hyper {name}: given twice", hint=hint))
        try:
            parsed = tuple(sorted({float(v) for v in values.split(",")}))
        except ValueError:
            parsed = ()
        if not sep or not parsed or not all(v > 0 and math.isfinite(v) for v in parsed):
            raise MupError(Diagnostic(f"--hyper {text!r}: expected NAME=V1,V2,... with every value a positive "
                                      "number", hint=hint))
        out.append((name, parsed))
    return tuple(out)


def _check_tie(spec: str, g: Grid) -> None:
    """--tied: the spec's generated module must accept a readout that is the token
    embedding (a clear error before anything is written, not a failed cell)."""
    from mupspec.empirical.lm_engine import Shape, build

    base = Shape(g.base_width, g.base_depth, g.heads, g.context, tied=True)
    try:
        build(spec, Shape(2 * g.base_width, g.base_depth, g.heads, g.context, tied=True), base, 0)
    except ValueError as err:
        raise MupError(Diagnostic(f"--tied: spec `{spec}` cannot parametrize a GPT whose readout is its token "
                                  f"embedding: {str(err).splitlines()[-1].strip()}",
                                  hint="--tied works with --specs table8 (SP becomes specs/sp_tied.mup); "
                                       "drop --tied for the other specs")) from None


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.split(":")[0] != "cuda":
        raise MupError(Diagnostic(f"--device {device!r}: expected cpu or cuda"))
    if not torch.cuda.is_available():
        raise MupError(Diagnostic("--device cuda: no CUDA device is available to this torch",
                                  hint="run with --device cpu"))


def run(args) -> int:
    import torch

    from mupspec.empirical.text import TextConfig, load_text

    torch.set_num_threads(args.threads)
    grid = QUICK if args.quick else FULL if args.full else DEFAULT
    grid = Grid(**{**asdict(grid), "specs": args.specs, "tied": args.tied}
                | ({"lrs": _parse_lrs(args.lrs)} if args.lrs else {})
                | ({"transfer_hypers": _parse_hypers(args.hyper, grid.transfer_spec)} if args.hyper else {}))
    _check_device(args.device)
    if args.budget_minutes is not None and not args.budget_minutes >= 0:
        raise MupError(Diagnostic(f"--budget-minutes {args.budget_minutes:g}: expected a number of minutes >= 0",
                                  hint="--budget-minutes 0 trains nothing new and only rewrites the report"))
    if args.runs_per_task is not None and args.runs_per_task < 1:
        raise MupError(Diagnostic(f"--runs-per-task {args.runs_per_task}: expected a number of runs >= 1",
                                  hint="e.g. --runs-per-task 8; without it, each shape is one task"))
    if args.memory_gib is not None and not (math.isfinite(args.memory_gib) and args.memory_gib > 0):
        raise MupError(Diagnostic(f"--memory-gib {args.memory_gib:g}: expected a number of GiB > 0",
                                  hint="e.g. --memory-gib 16"))
    data = load_text(TextConfig(path=args.text, context=grid.context))   # bad text: error before --out is touched
    from mupspec.empirical.runner import make_backend

    backend = make_backend(args.backend, args.address)   # before any work: a missing Ray fails at once
    out = Path(args.out)
    figures = Path(args.figures_dir) if args.figures_dir else out / "figures"
    parts = ("width", "depth", "transfer") if args.part == "all" else (args.part,)
    cells = by_shape((width_cells(grid) if "width" in parts else []) + (depth_cells(grid) if "depth" in parts else [])
                     + (transfer_cells(grid) if "transfer" in parts else []))
    from mupspec.empirical.lm_engine import spec_module

    for spec in sorted({c.spec for c in cells}):   # generate every module now: a broken spec fails before training
        spec_module(spec)
        if grid.tied:
            _check_tie(spec, grid)
    if args.backend == "local" and cells:   # here: a run that cannot fit is an error before anything is written
        replicas_that_fit(largest_run(cells, grid), grid, args.device, args.memory_gib)
    store = RunStore(out, settings_of(grid, data))
    start = time.monotonic()
    deadline = start + 60 * args.budget_minutes if args.budget_minutes is not None else None
    trained, skipped = train_cells(store, cells, grid, data, args.device, deadline, not args.no_progress,
                                   backend, args.threads, args.memory_gib, args.runs_per_task)
    seconds = time.monotonic() - start
    summary = analyse(store, grid, parts, figures)
    done = sum(not store.missing(c) for c in cells)
    summary["timing"] = {"runs_trained_now": trained, "train_seconds": round(seconds, 1), "threads": args.threads,
                         "device": args.device, "grid": "quick" if args.quick else "full" if args.full else "default",
                         "cells_finished": done, "cells_total": len(cells), "cells_not_started": skipped,
                         "backend": args.backend}
    failed = store.errors()
    summary["failed"] = {"runs": sum(len(e["runs"]) for e in failed),
                         "cells": {e["key"]: e["error"].splitlines()[0] for e in failed}}
    write_atomic(out / "summary.json", json.dumps(_json_safe(summary), indent=1))
    write_atomic(out / "summary.md", markdown(summary))
    print(f"trained {trained} runs in {seconds:.0f}s; {done}/{len(cells)} cells finished"
          + (f" ({skipped} not started: budget reached; run again to resume)" if skipped else "")
          + f"; tables in {out}, figures in {figures}")
    if failed:   # the other cells went on; a rerun retries exactly the failed runs
        print(f"{summary['failed']['runs']} runs failed (errors in {out / 'errors'}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- analysis: LR transfer

def _best_loss(table: np.ndarray, rng, boots: int = 300) -> dict:
    """Best reachable loss: the minimum over LRs of the seed-mean curve, with a
    95% bootstrap interval over seeds."""
    def best(t):
        m = t.mean(1)
        return float(np.min(np.where(np.isfinite(m), m, np.inf)))
    s = table.shape[1]
    samples = [best(table[:, rng.integers(s, size=s)]) for _ in range(boots)]
    lo, hi = np.percentile(samples, [2.5, 97.5]) if s > 1 else (math.nan, math.nan)
    return {"loss": best(table), "lo": float(lo), "hi": float(hi)}


def transfer(store: RunStore, g: Grid, variants: dict, axis: str, sizes, rng) -> dict:
    """Per variant: loss-vs-LR tables, the best LR per size with its bootstrap
    interval, its shift per doubling, and the best reachable loss per size."""
    from mupspec.empirical.spiral import _loss_table, _optimum, _shift

    log_lrs = np.log10(np.array(g.lrs))
    out = {}
    for label, spec in variants.items():
        entry = {"curves": {}, "optima": {}, "shift": {}, "best": {}, "diverged": {}}
        runs = {s: store.load(_cell(g, spec, axis, s)) for s in sizes}
        done = [s for s in sizes if len(runs[s]) == len(g.lrs) * len(g.seeds)]   # skip unfinished cells
        for which in ("train_loss", "val_loss"):
            optima, best = [], []
            for size in done:
                table = _loss_table(runs[size], list(g.lrs), list(g.seeds), which)
                optima.append(_optimum(table, log_lrs, rng))
                best.append(dict(_best_loss(table, rng), size=size))
                entry["curves"].setdefault(which, {})[size] = table.tolist()
                entry["diverged"][size] = int(np.isinf(table).sum())
            entry["optima"][which] = [dict(o, samples=None, size=s) for o, s in zip(optima, done)]
            entry["shift"][which] = _shift(done, optima) if len(done) >= 2 else None
            entry["best"][which] = best
        out[label] = entry
    return out


def _cell(g: Grid, spec: str, axis: str, size: int, lrs=None, seeds=None) -> Cell:
    width, depth = (size, g.depth) if axis == "width" else (g.depth_width, size)
    return Cell(spec, arch_of(g), width, depth, lrs or g.lrs, seeds or g.seeds)


def hp_transfer(store: RunStore, g: Grid, rng) -> dict:
    """Per hyperparameter: loss-vs-value tables per width (LR fixed), the best
    value per width with its bootstrap interval over seeds (parabola-refined in
    log value, as the best LR), and its shift per width doubling."""
    from mupspec.empirical.spiral import _loss_table, _optimum, _shift

    out = {}
    for name, values in g.transfer_hypers:
        entry = {"values": list(values), "lr": g.transfer_lr, "curves": {}, "optima": {}, "shift": {}}
        for which in ("train_loss", "val_loss"):
            done, optima = [], []
            for w in g.transfer_widths:
                rows = [_loss_table(store.load(Cell(g.transfer_spec, hyper_arch(name, v, arch_of(g)), w, g.depth,
                                                    (g.transfer_lr,), g.transfer_seeds)),
                                    [g.transfer_lr], list(g.transfer_seeds), which)[0] for v in values]
                table = np.array(rows)
                if np.isnan(table).any():
                    continue   # an unfinished width
                done.append(w)
                optima.append(_optimum(table, np.log10(np.array(values)), rng))
                entry["curves"].setdefault(which, {})[w] = table.tolist()
            entry["optima"][which] = [{"width": w, "value": o["lr"], "lo": o["lo"], "hi": o["hi"],
                                       "edge": o["edge"], "loss": o["loss"]} for w, o in zip(done, optima)]
            entry["shift"][which] = _shift(done, optima) if len(done) >= 2 else None
        out[name] = entry
    return out


# ---------------------------------------------------------------- analysis: coordinate statistics

def _group(name: str) -> str:
    """blocks.3.mlp.fc -> blocks.*.mlp.fc: the same weight in every block."""
    return re.sub(r"^blocks\.\d+\.", "blocks.*.", name)


def _coord_values(run: dict) -> dict[str, dict[str, list[float]]]:
    """{group: {quantity: [value per logged step]}}: geometric mean over blocks;
    the logits as group 'logits' (quantity act)."""
    out: dict = {"logits": {"act": [row["logits"] for row in run["coords"]]}}
    for q in QUANTITIES:
        per_group: dict = {}
        for row in run["coords"]:
            logs: dict = {}
            for name, stats in row["modules"].items():
                logs.setdefault(_group(name), []).append(math.log(max(stats[q], 1e-30)))
            for grp, vals in logs.items():
                per_group.setdefault(grp, []).append(math.exp(sum(vals) / len(vals)))
        for grp, series in per_group.items():
            out.setdefault(grp, {})[q] = series
    return out


def coordinates(store: RunStore, g: Grid, variants: dict) -> dict:
    """Width exponents of every coordinate statistic at every logged step, at
    the fixed LR: value ~ width^k fitted per seed, mean and 95% t-interval over
    seeds (a seed that diverged at some width is left out of every fit)."""
    from mupspec.empirical.fit import slope, summarize

    seeds, lr = tuple(g.seeds) + tuple(g.coord_seeds), g.fixed()
    out = {}
    for label, spec in variants.items():
        runs = {w: {r["seed"]: r for r in store.load(Cell(spec, arch_of(g), w, g.depth, (lr,), seeds))} for w in g.widths}
        widths = [w for w in g.widths if runs[w]]
        ok = [s for s in seeds if all(s in runs[w] and not runs[w][s]["diverged"] for w in widths)]
        if len(widths) < 2 or not ok:
            continue
        values = {w: {s: _coord_values(runs[w][s]) for s in ok} for w in widths}
        steps = [row["step"] for row in runs[widths[0]][ok[0]]["coords"]]
        rows, means = [], {}
        for grp, qs in values[widths[0]][ok[0]].items():
            for q in qs:
                for i, step in enumerate(steps):
                    per_seed = [[values[w][s][grp][q][i] for w in widths] for s in ok]
                    if step == 0 and q in ("upd", "dw"):
                        continue   # no change yet at initialization
                    k, ci = summarize([slope(widths, ys) for ys in per_seed])
                    rows.append({"group": grp, "quantity": q, "step": step, "exponent": k, "ci": ci,
                                 "seeds": len(ok)})
                means.setdefault(grp, {})[q] = [float(np.exp(np.mean(np.log(np.maximum(
                    [values[w][s][grp][q][-1] for s in ok], 1e-30))))) for w in widths]
        out[label] = {"widths": widths, "steps": steps, "seeds": ok, "exponents": rows, "final_means": means}
    return out


# ---------------------------------------------------------------- analysis: tables and figures

def analyse(store: RunStore, g: Grid, parts, figures: Path) -> dict:
    rng = np.random.default_rng(0)
    summary = {"grid": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(g).items()},
               "fixed_lr": g.fixed(), "settings": store.settings.fingerprint()}
    summary["software"] = _write_runs_csv(store, store.out / "runs.csv")
    if "width" in parts:
        summary["width"] = {"transfer": transfer(store, g, width_specs(g), "width", list(g.widths), rng),
                            "coordinates": coordinates(store, g, width_specs(g))}
    if "depth" in parts:
        summary["depth"] = {"transfer": transfer(store, g, depth_specs(g), "depth", list(g.depths), rng)}
    if "transfer" in parts:
        summary["hp_transfer"] = hp_transfer(store, g, rng)
    _write_tables(summary, store.out)
    _figures(summary, g, figures)
    return summary


def _figures(summary: dict, g: Grid, figures: Path) -> None:
    from mupspec.empirical import plots

    for axis in ("width", "depth"):
        part = summary.get(axis, {}).get("transfer", {})
        ready = {k: v for k, v in part.items() if v["optima"].get("val_loss")}
        if ready:
            plots.spiral_transfer(figures / f"{axis}_transfer.png", ready, g.lrs, axis, optimizer="AdamW")
            plots.lm_best_loss(figures / f"{axis}_best_loss.png", ready, axis)
    ready = {k: v for k, v in summary.get("hp_transfer", {}).items() if v["optima"]["val_loss"]}
    if ready:
        plots.lm_hp_transfer(figures / "hp_transfer.png", ready, g.transfer_lr)
    coords = summary.get("width", {}).get("coordinates", {})
    if coords:
        plots.lm_coordinates(figures / "coordinates_width.png", coords, g.fixed())
        plots.lm_exponents_over_training(figures / "exponents_over_training.png", coords, COORD_PANELS)


# (group, quantity, title) of the exponent-over-training figure
COORD_PANELS = (("logits", "act", "output logits"), ("lm_head", "upd", "readout update (dW x)"),
                ("blocks.*.mlp.fc", "upd", "hidden update (MLP in, dW x)"),
                ("blocks.*.attn.q", "upd", "hidden update (query, dW x)"),
                ("wte", "upd", "token-embedding update"), ("blocks.*.mlp.fc", "w", "hidden weights (RMS)"))


def _write_runs_csv(store: RunStore, path: Path) -> list[dict]:
    rows, software = [], {}
    for _, r in store.all_runs():
        key = json.dumps(r.get("software", "not recorded"), sort_keys=True)
        software[key] = software.get(key, 0) + 1
        c = r["cell"]
        rows.append([c["spec"], c["width"], c["depth"], r["lr"], r["seed"], r["diverged"],
                     r["final"].get("train_loss"), r["final"].get("val_loss")])
    with open_atomic(path) as f:
        w = csv.writer(f)
        w.writerow(["spec", "width", "depth", "lr", "seed", "diverged", "train_loss", "val_loss"])
        w.writerows(rows)
    return [{"runs": n, "software": json.loads(key)} for key, n in software.items()]


def _write_tables(summary: dict, out: Path) -> None:
    with open_atomic(out / "optima.csv") as f:
        w = csv.writer(f)
        w.writerow(["axis", "variant", "loss", "size", "best_lr", "ci_lo", "ci_hi", "at_edge",
                    "best_loss", "best_loss_lo", "best_loss_hi"])
        for axis in ("width", "depth"):
            for label, e in summary.get(axis, {}).get("transfer", {}).items():
                for which, optima in e["optima"].items():
                    for o, b in zip(optima, e["best"][which]):
                        w.writerow([axis, label, which, o["size"], o["lr"], o["lo"], o["hi"], o["edge"],
                                    b["loss"], b["lo"], b["hi"]])
    with open_atomic(out / "exponents.csv") as f:
        w = csv.writer(f)
        w.writerow(["variant", "group", "quantity", "step", "exponent", "ci95", "seeds"])
        for label, c in summary.get("width", {}).get("coordinates", {}).items():
            for r in c["exponents"]:
                w.writerow([label, r["group"], r["quantity"], r["step"], r["exponent"], r["ci"], r["seeds"]])


def markdown(summary: dict) -> str:
    """The tables docs/lm-study.md quotes."""
    fmt = lambda v: "—" if v is None or not math.isfinite(v) else f"{v:.3f}"  # noqa: E731
    t = summary.get("timing", {})
    lines = [f"Grid: {t.get('grid', '?')}; fixed LR {summary['fixed_lr']:.3g}; "
             f"settings {json.dumps(summary['settings'])}", ""]
    for entry in summary.get("software", []):
        lines += [f"{entry['runs']} runs computed with: {json.dumps(entry['software'])}", ""]
    for axis in ("width", "depth"):
        if axis not in summary:
            continue
        lines += [f"## {axis}: best LR per {axis} (95% bootstrap interval over seeds) and its shift", "",
                  f"| variant | loss | {axis}: best LR [interval] | shift per doubling (log2) [95%] |",
                  "|---|---|---|---|"]
        for label, e in summary[axis]["transfer"].items():
            for which, optima in e["optima"].items():
                cells = ", ".join(f"{o['size']}: {o['lr']:.2g} [{o['lo']:.2g}, {o['hi']:.2g}]"
                                  + ("*" if o["edge"] else "") for o in optima)
                sh = e["shift"][which]
                shift = "—" if sh is None else f"{sh['per_doubling']:+.2f} [{sh['lo']:+.2f}, {sh['hi']:+.2f}]"
                lines.append(f"| {label} | {which} | {cells} | {shift} |")
        lines += ["", "(* = optimum on the edge of the LR grid)", "",
                  f"## {axis}: best reachable loss per {axis} (min over LR of the seed mean, 95% bootstrap)", "",
                  f"| variant | loss | {axis}: best [interval] | diverged runs per {axis} |", "|---|---|---|---|"]
        for label, e in summary[axis]["transfer"].items():
            for which, best in e["best"].items():
                cells = ", ".join(f"{b['size']}: {fmt(b['loss'])} [{fmt(b['lo'])}, {fmt(b['hi'])}]" for b in best)
                div = ", ".join(f"{s}: {n}" for s, n in e["diverged"].items())
                lines.append(f"| {label} | {which} | {cells} | {div} |")
        lines.append("")
    lines += _hp_markdown(summary.get("hp_transfer", {}), fmt)
    coords = summary.get("width", {}).get("coordinates", {})
    if coords:
        lines += [f"## width exponents at the fixed LR (value ~ width^k; mean ± 95% t-interval over seeds)", "",
                  "| variant | statistic | " + " | ".join(f"step {s}" for s in next(iter(coords.values()))["steps"])
                  + " |", "|---|---|" + "---|" * len(next(iter(coords.values()))["steps"])]
        for label, c in coords.items():
            by: dict = {}
            for r in c["exponents"]:
                by.setdefault((r["group"], r["quantity"]), {})[r["step"]] = f"{r['exponent']:+.2f} ± {r['ci']:.2f}"
            for (grp, q), per_step in by.items():
                lines.append(f"| {label} | {grp} {q} | " + " | ".join(per_step.get(s, "") for s in c["steps"]) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _hp_markdown(hp: dict, fmt) -> list[str]:
    if not hp:
        return []
    lr = next(iter(hp.values()))["lr"]
    lines = [f"## HP transfer (muP, LR fixed at {lr:g}): best value per width (95% bootstrap interval over "
             "seeds) and its shift", "",
             "| hyper | loss | width: best value [interval] | shift per doubling (log2) [95%] | "
             "width: loss at the best grid value |", "|---|---|---|---|---|"]
    for name, e in hp.items():
        for which, optima in e["optima"].items():
            cells = ", ".join(f"{o['width']}: {o['value']:.3g} [{o['lo']:.3g}, {o['hi']:.3g}]"
                              + ("*" if o["edge"] else "") for o in optima)
            sh = e["shift"][which]
            shift = "—" if sh is None else f"{sh['per_doubling']:+.2f} [{sh['lo']:+.2f}, {sh['hi']:+.2f}]"
            losses = ", ".join(f"{o['width']}: {fmt(o['loss'])}" for o in optima)
            lines.append(f"| {name} | {which} | {cells} | {shift} | {losses} |")
    return lines + ["", "(* = optimum on the edge of the value grid)", ""]

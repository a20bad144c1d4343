"""Resumable sweeps: many cells (spec x arch x width x depth), each trained as
one batched (LR x seed) computation by the engine, every run saved to its own
JSON file the moment its batch finishes.

Takes a list of `Cell`s, a `SweepSettings` (data, training config, base shape)
and an output folder; writes `DIR/runs/<cell>/<lr>_<seed>.json` per run and
`DIR/sweep.json` (the settings). Guarantees:
- atomic writes (temporary file in the same folder, fsync, os.replace): an
  interrupted sweep never leaves a half-written run file;
- re-running skips every run whose file exists, and trains only the missing
  (lr, seed) pairs of a cell, so nothing finished is lost or redone;
- a diverged run (NaN/inf loss) is saved with "diverged": true and the sweep
  goes on (the engine freezes it inside its batch);
- a progress bar on stderr says how many runs are done and where the current
  batch is.
Settings are fingerprinted: resuming into a folder made with other settings
is refused, so results of different configurations are never mixed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from mupspec.bundled import DIR as SPECS_DIR
from mupspec.empirical.data import SpiralConfig, make_spiral
from mupspec.empirical.engine import TrainConfig, software, train_batched
from mupspec.empirical.netplan import plan_from_codegen
from mupspec.errors import Diagnostic, MupError
from mupspec.progress import Progress
from mupspec.resolve import load_spec


@dataclass(frozen=True)
class Cell:
    """One network shape under one spec; its runs are all (lr, seed) pairs."""

    spec: str                     # bundled spec name, e.g. "sp", "mup_table8", "depth_mup"
    arch: str                     # "mlp" or "resmlp"
    width: int
    depth: int
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.spec}-{self.arch}-w{self.width}-d{self.depth}"

    def runs(self) -> list[tuple[float, int]]:
        return [(lr, s) for lr in self.lrs for s in self.seeds]


@dataclass(frozen=True)
class SweepSettings:
    data: SpiralConfig = field(default_factory=SpiralConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base_width: int = 64
    base_depth: int = 4

    def fingerprint(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def run_name(lr: float, seed: int) -> str:
    return f"lr{lr:.6e}_s{seed}.json"


def atomic_write_json(path: Path, payload: dict) -> None:
    """Write JSON so that `path` is either absent or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Sweep:
    def __init__(self, out_dir: str | Path, settings: SweepSettings = SweepSettings()):
        self.out = Path(out_dir)
        self.settings = settings
        self._check_settings()
        self.data = make_spiral(settings.data)
        self._specs: dict = {}

    def _check_settings(self) -> None:
        path = self.out / "sweep.json"
        mine = self.settings.fingerprint()
        if path.exists():
            theirs = json.loads(path.read_text())
            if theirs != mine:
                raise MupError(Diagnostic(
                    f"{path} was made with other settings; refusing to mix results",
                    hint="use a new --out folder, or delete the old one"))
        else:
            atomic_write_json(path, mine)

    def spec(self, name: str):
        if name not in self._specs:
            self._specs[name] = load_spec(SPECS_DIR / f"{name}.mup")
        return self._specs[name]

    def run_path(self, cell: Cell, lr: float, seed: int) -> Path:
        return self.out / "runs" / cell.key / run_name(lr, seed)

    def missing(self, cell: Cell) -> list[tuple[float, int]]:
        return [(lr, s) for lr, s in cell.runs() if not self.run_path(cell, lr, s).exists()]

    def plan(self, cell: Cell):
        s = self.settings
        # per-layer numbers from the generated module (codegen), as users would apply them
        return plan_from_codegen(self.spec(cell.spec), arch=cell.arch, width=cell.width, depth=cell.depth,
                              d_in=self.data.d_in, d_out=self.data.d_out, optimizer=s.train.optimizer,
                              base_width=s.base_width, base_depth=s.base_depth)

    def run(self, cells: Iterable[Cell], progress: bool = True,
            after_cell: Callable[[Cell], None] | None = None, deadline: float | None = None) -> int:
        """Train every missing run; returns how many runs were trained now. With a
        deadline (time.monotonic()), no new cell starts after it (resume later)."""
        cells = list(cells)
        total = sum(len(c.runs()) for c in cells)
        todo = {c.key: self.missing(c) for c in cells}
        bar = Progress(total, total - sum(len(v) for v in todo.values()),
                       stream=sys.stderr if progress else open(os.devnull, "w"))
        trained = 0
        try:
            for cell in cells:
                missing = todo[cell.key]
                if missing and deadline is not None and time.monotonic() > deadline:
                    continue
                if missing:
                    trained += self._run_cell(cell, missing, bar)
                if after_cell:
                    after_cell(cell)
        finally:
            bar.close()
        return trained

    def _run_cell(self, cell: Cell, missing: list[tuple[float, int]], bar: Progress) -> int:
        # train the smallest (lr x seed) product that covers the missing pairs
        lrs = [lr for lr in cell.lrs if any(m[0] == lr for m in missing)]
        seeds = [s for s in cell.seeds if any(m[1] == s for m in missing)]
        plan = self.plan(cell)
        bar.cell(cell.key, self.settings.train.steps)
        results = train_batched(plan, self.data, lrs, seeds, self.settings.train, on_step=bar.on_step)
        wanted = set(missing)
        header = {"cell": {k: v for k, v in asdict(cell).items() if k not in ("lrs", "seeds")},
                  "plan": asdict(plan), "software": software()}
        for res in results:
            if (res["lr"], res["seed"]) in wanted:
                atomic_write_json(self.run_path(cell, res["lr"], res["seed"]), header | res)
        bar.finished(len(wanted))
        return len(wanted)

    def load(self, cell: Cell) -> list[dict]:
        """Every saved run of a cell, in (lr, seed) order; missing runs are skipped."""
        out = []
        for lr, s in cell.runs():
            path = self.run_path(cell, lr, s)
            if path.exists():
                out.append(json.loads(path.read_text()))
        return out

"""The results store of a sweep: many cells (spec x arch x width x depth), each
cell's runs one (lr, seed) pair, every run one JSON file.

Layout of an output folder:
  sweep.json                 the settings (a fingerprint: resuming into a folder
                             made with other settings is refused);
  runs/<cell>/<lr>_<seed>.json   one finished run (its plan, the software that
                             computed it, losses and per-layer curves);
  errors/<cell>.json         a cell whose computation raised (the error, the runs
                             it covered), until a later sweep finishes it;
  .lock                      held (flock) by the one process writing the folder.

Guarantees:
- atomic writes (`mupspec.atomic`: temporary file in the same folder, fsync,
  rename): a run file is absent or complete, never partial;
- a run is finished only if its file parses and is a run of that (lr, seed): a
  zero-byte or truncated file (a copy gone wrong, a full disk) is computed again;
- one writer: a second sweep on the same folder stops with a clear message; the
  lock is the kernel's (flock), released when its process dies, so a killed
  sweep never leaves a stale lock behind;
- divergence: a NaN/inf loss (the engine freezes that replica) or a loss above
  DIVERGENCE_FACTOR x the run's initial loss marks the run "diverged".
The runner (`runner.py`) decides what to compute and on which backend; only it
writes here, and only from the driver process.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mupspec.atomic import is_temporary, write_json
from mupspec.bundled import DIR as SPECS_DIR
from mupspec.empirical.data import SpiralConfig, make_spiral
from mupspec.empirical.engine import TrainConfig
from mupspec.errors import Diagnostic, MupError

# a loss this many times its initial value is a blow-up, finite or not
DIVERGENCE_FACTOR = 1e6


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


def _read_json(path: Path):
    """The parsed file, or None if it is missing, empty or not (complete) JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def mark_divergence(result: dict, factor: float = DIVERGENCE_FACTOR) -> dict:
    """The engine's result, with a finite blow-up also counted as diverged: a
    logged training loss (window mean) or a final loss above factor x the
    initial loss. NaN/inf the engine has already flagged."""
    if result["diverged"]:
        return result
    losses = result["curves"]["train_loss"]
    bound = factor * losses[0]
    logged = [(s, v) for s, v in zip(result["curves"]["step"], losses) if v > bound]
    finals = [v for k, v in result["final"].items() if k.endswith("_loss") and v > bound]
    if not logged and not finals:
        return result
    step = logged[0][0] if logged else result["curves"]["step"][-1]
    worst = max([v for _, v in logged] + finals)
    return result | {"diverged": True, "diverged_step": step, "final": {},
                     "diverged_reason": f"loss {worst:.3g} > {factor:g} x initial loss {losses[0]:.3g}"}


class Sweep:
    """The results store in one output folder (see the module docstring)."""

    def __init__(self, out_dir: str | Path, settings: SweepSettings = SweepSettings()):
        self.out = Path(out_dir)
        self.settings = settings
        self._check_settings()

    @cached_property
    def data(self):
        return make_spiral(self.settings.data)

    def _check_settings(self) -> None:
        path = self.out / "sweep.json"
        mine = self.settings.fingerprint()
        if not path.exists():
            write_json(path, mine)
            return
        theirs = _read_json(path)
        if not isinstance(theirs, dict):
            raise MupError(Diagnostic(
                f"{path} is empty or truncated (not complete JSON): cannot tell which settings made "
                "the runs in this folder",
                hint="use a new --out folder; or, if you know this command made them, delete "
                f"{path.name} and run again (the finished runs are kept)"))
        if theirs != mine:
            raise MupError(Diagnostic(
                f"{path} was made with other settings; refusing to mix results",
                hint="use a new --out folder, or delete the old one"))

    @contextmanager
    def lock(self):
        """Hold the folder for one writer. flock: the kernel drops it when the
        holding process ends, however it ends."""
        import fcntl

        self.out.mkdir(parents=True, exist_ok=True)
        f = open(self.out / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise MupError(Diagnostic(
                f"{self.out} is being written by another sweep ({holder})",
                hint="wait for it to finish, or use another --out folder (the lock goes away with "
                "its process: a killed sweep does not leave it behind)")) from None
        try:
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            f.flush()
            self._remove_partial_writes()
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def _remove_partial_writes(self) -> None:
        """Temporary files a killed writer left behind (never renamed: not runs)."""
        for tmp in self.out.glob("*/**/.*"):
            if is_temporary(tmp):
                tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ runs

    def run_path(self, cell: Cell, lr: float, seed: int) -> Path:
        return self.out / "runs" / cell.key / run_name(lr, seed)

    def _finished_run(self, cell: Cell, lr: float, seed: int) -> dict | None:
        run = _read_json(self.run_path(cell, lr, seed))
        ok = isinstance(run, dict) and run.get("lr") == lr and run.get("seed") == seed and "diverged" in run
        return run if ok else None

    def missing(self, cell: Cell) -> list[tuple[float, int]]:
        return [(lr, s) for lr, s in cell.runs() if self._finished_run(cell, lr, s) is None]

    def write_runs(self, cell: Cell, results: list[dict], wanted: Iterable[tuple[float, int]]) -> int:
        """Save the wanted runs among `results`; returns how many were saved."""
        wanted = set(wanted)
        saved = 0
        for res in results:
            if (res["lr"], res["seed"]) in wanted:
                write_json(self.run_path(cell, res["lr"], res["seed"]), res)
                saved += 1
        error = self.out / "errors" / f"{cell.key}.json"
        failed = _read_json(error)
        if failed is None or all(self._finished_run(cell, lr, s) for lr, s in failed["runs"]):
            error.unlink(missing_ok=True)     # every run it failed on is finished now
        return saved

    def write_error(self, cell: Cell, runs: list[tuple[float, int]], error: str) -> None:
        """Record that these runs of the cell failed, beside the still unfinished
        runs of an earlier record of its folder (a shape's runs may be split
        over several tasks, each failing on its own)."""
        path = self.out / "errors" / f"{cell.key}.json"
        earlier = _read_json(path)
        kept = [tuple(r) for r in earlier["runs"] if not self._finished_run(cell, *r)] \
            if isinstance(earlier, dict) and isinstance(earlier.get("runs"), list) else []
        runs = list(dict.fromkeys(kept + [tuple(r) for r in runs]))
        write_json(path, {"key": cell.key, "cell": asdict(cell), "runs": [list(r) for r in runs], "error": error})

    def errors(self) -> list[dict]:
        """The recorded failures: cells whose computation raised and is not finished since."""
        folder = self.out / "errors"
        found = [_read_json(p) for p in sorted(folder.glob("[!.]*.json"))]
        return [e for e in found if isinstance(e, dict)]

    def all_runs(self) -> Iterator[tuple[str, dict]]:
        """(cell key, run) of every finished run in the folder, by cell and file name;
        damaged files and temporary files are skipped."""
        for path in sorted((self.out / "runs").glob("*/[!.]*.json")):
            run = _read_json(path)
            if isinstance(run, dict) and "diverged" in run:
                yield path.parent.name, run

    def load(self, cell: Cell) -> list[dict]:
        """Every finished run of a cell, in (lr, seed) order; missing runs are skipped."""
        runs = (self._finished_run(cell, lr, s) for lr, s in cell.runs())
        return [r for r in runs if r is not None]

    def run(self, cells: Iterable[Cell], progress: bool = True,
            after_cell: Callable[[Cell], None] | None = None, deadline: float | None = None) -> int:
        """Compute every missing run on the local backend; returns how many runs were computed now."""
        from mupspec.empirical.runner import run_sweep

        return run_sweep(self, cells, progress=progress, after_cell=after_cell, deadline=deadline).trained

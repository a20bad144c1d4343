"""The sweep runner: cells -> tasks -> runs in the results store, on one of two
backends behind one interface.

Takes a `Sweep` (the store, `sweep.py`), its cells and a backend; computes every
missing run and returns a `Report` (runs computed now, cells that failed).

- A task is one cell's missing (lr, seed) pairs, computed exactly as the local
  backend computes them: it carries the network plan (per-layer init, multipliers,
  LR and eps factors, from the spec's generated module), the data and training
  settings, the pairs and the thread count (the engine's shards, each with
  single-threaded kernels), and returns the run records, each with the software
  that computed it. A worker only computes; the driver alone writes the store,
  so a store is byte-identical whichever backend filled it.
- `LocalBackend` computes the tasks one after another in this process (no service).
- `RayBackend` submits them as Ray tasks to a cluster (`address`: "local" starts
  a private one on this machine, "auto" joins the one `ray start` made here or
  RAY_ADDRESS names, or HOST:PORT), with mupspec's own code shipped along so the
  workers run the driver's version. A worker that dies is replaced and its task
  retried by Ray; a task that raises is recorded as failed, not retried.
- Finished runs are never recomputed: a rerun (after a kill, a deadline, a
  failure) computes exactly what the store is missing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mupspec.empirical.data import SpiralConfig, make_spiral
from mupspec.empirical.engine import TrainConfig
from mupspec.empirical.netplan import NetPlan, plan_from_codegen
from mupspec.empirical.sweep import SPECS_DIR, Cell, Sweep, mark_divergence
from mupspec.commands._backend import BACKENDS
from mupspec.errors import Diagnostic, MupError
from mupspec.progress import Progress

RAY_INSTALL_HINT = 'install it with: pip install "mupspec[ray]"  (or: pip install "ray>=2.9")'


@dataclass(frozen=True)
class Task:
    """Everything a worker needs to compute one cell's runs; it looks nothing up."""

    cell: Cell
    plan: NetPlan
    lrs: tuple[float, ...]        # the smallest (lr x seed) product covering the missing runs
    seeds: tuple[int, ...]
    data: SpiralConfig
    train: TrainConfig
    threads: int                  # engine shards, each on one single-threaded kernel

    @property
    def label(self) -> str:
        return self.cell.key

    def runs(self) -> list[tuple[float, int]]:
        return [(lr, s) for lr in self.lrs for s in self.seeds]


@dataclass
class Report:
    trained: int = 0                                     # runs computed and saved now
    failed: list[dict] = field(default_factory=list)     # {"cell", "runs", "error"} per failed cell
    postponed: int = 0                                   # runs not started before the deadline

    @property
    def failed_runs(self) -> int:
        return sum(len(f["runs"]) for f in self.failed)


# ---------------------------------------------------------------- computing one task

@lru_cache(maxsize=4)
def _spiral(config: SpiralConfig):
    return make_spiral(config)


def compute(task: Task, on_step: Callable[[int], None] | None = None) -> list[dict]:
    """One task's run records (lr-major order), as saved in the store."""
    import torch

    from mupspec.empirical.engine import software, train_batched

    before = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    try:
        results = train_batched(task.plan, _spiral(task.data), list(task.lrs), list(task.seeds), task.train,
                                on_step=on_step, shards=task.threads)
    finally:
        torch.set_num_threads(before)
    header = {"cell": {k: v for k, v in asdict(task.cell).items() if k not in ("lrs", "seeds")},
              "plan": asdict(task.plan), "software": software()}
    return [header | mark_divergence(res) for res in results]


def _describe(err: BaseException) -> str:
    """The error and where it was raised (the last frames), for the store's errors/ file."""
    tail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
    return f"{type(err).__name__}: {err}\n{tail}".strip()


# ---------------------------------------------------------------- backends
#
# One interface: `with backend: for item, result, error in backend.map(fn, items): ...`
# computes fn(item) for every item (a module-level function, so that Ray can ship
# it by name), yielding each result as it arrives, or the error it raised (then
# result is None). An item may say how many CPU threads it uses (`threads`) and
# how to call it in logs (`label`). The local backend also passes
# on_step=on_start(item) to fn, for a progress bar.

class LocalBackend:
    """Compute the items one by one in this process: what `mupspec` always did."""

    name = "local"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, fn: Callable, items: Iterable, on_start: Callable | None = None) -> Iterator[tuple]:
        for item in items:
            try:
                result = fn(item, on_step=on_start(item)) if on_start else fn(item)
            except Exception as err:   # a failing item is reported; the others go on
                yield item, None, _describe(err)
                continue
            yield item, result, None


def import_ray():
    try:
        import ray
    except ImportError:
        raise MupError(Diagnostic("--backend ray needs Ray, which is not installed",
                                  hint=RAY_INSTALL_HINT)) from None
    return ray


def _ray_call(fn: Callable, item):
    return fn(item)


class RayBackend:
    """Compute the tasks as Ray tasks on a cluster, a few in flight per free CPU."""

    name = "ray"
    RETRIES = 3          # a task whose worker process dies is run again this often

    def __init__(self, address: str = "local"):
        if address == "local":
            # a private cluster serves this process only: Ray's single-machine mode keeps
            # every address it opens on 127.0.0.1 (read when ray is first imported)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        self.ray = import_ray()
        self.address = address
        self.owns = False

    def __enter__(self):
        ray = self.ray
        # Ray prints its own notices (a worker died, ...) on stdout: keep stdout for mupspec's output
        self.quiet = contextlib.redirect_stdout(sys.stderr)
        self.quiet.__enter__()
        if not ray.is_initialized():
            # ship mupspec itself: every worker runs the driver's code, whatever is installed there
            env = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
            if "OMP_WAIT_POLICY" in os.environ:   # idle OpenMP threads must not spin on shared cores
                env["env_vars"] = {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
            options = {"include_dashboard": False} if self.address == "local" else {}
            try:
                ray.init(address=self.address, runtime_env=env, log_to_driver=False,
                         configure_logging=False, **options)
            except ConnectionError as err:
                self.quiet.__exit__(None, None, None)
                raise MupError(Diagnostic(f"cannot reach a Ray cluster at --address {self.address}: {err}",
                                          hint="start one with `ray start --head`, or use --address local "
                                          "to start a private one on this machine")) from None
            self.owns = True
        self.remote = ray.remote(max_retries=self.RETRIES, retry_exceptions=False)(_ray_call)
        return self

    def __exit__(self, *exc) -> None:
        if self.owns:
            self.ray.shutdown()
            self.owns = False
        self.quiet.__exit__(None, None, None)

    def map(self, fn: Callable, items: Iterable, on_start: Callable | None = None) -> Iterator[tuple]:
        ray, items = self.ray, iter(items)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pending: dict = {}

        def submit() -> bool:
            item = next(items, None)
            if item is None:
                return False
            options = {"num_cpus": getattr(item, "threads", 1),
                       "name": f"mupspec {getattr(item, 'label', type(item).__name__)}"}
            pending[self.remote.options(**options).remote(fn, item)] = item
            return True

        # keep each CPU busy and one task queued behind it; submitting lazily keeps the
        # deadline meaningful and a killed driver's lost work small
        while len(pending) < cpus + 1 and submit():
            pass
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(ref)
            try:
                results, error = ray.get(ref), None
            except ray.exceptions.RayTaskError as err:   # the task raised: record it
                results, error = None, _describe(err.cause if err.cause else err)
            except ray.exceptions.RayError as err:       # its worker died more often than retried
                results, error = None, f"{type(err).__name__}: {err}"
            submit()
            yield item, results, error


def make_backend(name: str, address: str | None = None):
    if name == "local":
        return LocalBackend()
    if name == "ray":
        return RayBackend(address or "local")
    raise MupError(Diagnostic(f"unknown backend {name!r}", hint=f"use one of: {', '.join(BACKENDS)}"))


# ---------------------------------------------------------------- the driver

@lru_cache(maxsize=None)
def _spec(name: str):
    from mupspec.resolve import load_spec

    return load_spec(SPECS_DIR / f"{name}.mup")


def plan_task(sweep: Sweep, cell: Cell, missing: list[tuple[float, int]], threads: int) -> Task:
    """The task computing a cell's missing runs: the smallest (lr x seed) product covering them."""
    s = sweep.settings
    plan = plan_from_codegen(_spec(cell.spec), arch=cell.arch, width=cell.width, depth=cell.depth,
                             d_in=sweep.data.d_in, d_out=sweep.data.d_out, optimizer=s.train.optimizer,
                             base_width=s.base_width, base_depth=s.base_depth)
    lrs = tuple(lr for lr in cell.lrs if any(m[0] == lr for m in missing))
    seeds = tuple(sd for sd in cell.seeds if any(m[1] == sd for m in missing))
    return Task(cell, plan, lrs, seeds, s.data, s.train, threads)


def run_sweep(sweep: Sweep, cells: Iterable[Cell], backend=None, *, threads: int | None = None,
              progress: bool = True, after_cell: Callable[[Cell], None] | None = None,
              deadline: float | None = None) -> Report:
    """Compute every missing run of `cells` on `backend` (default local), saving each
    task's runs the moment it returns. With a deadline (time.monotonic()), no task
    starts after it (run again to resume)."""
    import torch

    cells = list(dict.fromkeys(cells))
    backend = backend or LocalBackend()
    threads = threads or torch.get_num_threads()
    report = Report()
    with sweep.lock():
        todo = [(c, sweep.missing(c)) for c in cells]
        todo = [(c, m) for c, m in todo if m]
        total = sum(len(c.runs()) for c in cells)
        bar = Progress(total, total - sum(len(m) for _, m in todo),
                       stream=sys.stderr if progress else None)
        wanted = dict(todo)    # by Cell: cells may share a folder (the same shape, other LRs or seeds)

        def tasks() -> Iterator[Task]:
            for cell, missing in todo:
                if deadline is not None and time.monotonic() > deadline:
                    report.postponed += len(missing)
                    continue
                try:
                    yield plan_task(sweep, cell, missing, threads)
                except Exception as err:   # an unplannable cell fails alone
                    _failed(sweep, report, cell, missing, _describe(err))

        try:
            def start(task: Task):
                bar.cell(task.cell.key, task.train.steps)
                return bar.on_step

            with backend:
                for task, results, error in backend.map(compute, tasks(), on_start=start):
                    if error is None:
                        report.trained += sweep.write_runs(task.cell, results, wanted[task.cell])
                    else:
                        _failed(sweep, report, task.cell, wanted[task.cell], error)
                    bar.finished(len(wanted[task.cell]))
                    if after_cell:
                        after_cell(task.cell)
        finally:
            bar.close()
    return report


def _failed(sweep: Sweep, report: Report, cell: Cell, runs: list[tuple[float, int]], error: str) -> None:
    sweep.write_error(cell, runs, error)
    report.failed.append({"cell": cell.key, "runs": [list(r) for r in runs], "error": error})

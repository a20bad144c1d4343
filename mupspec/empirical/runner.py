"""The sweep runner: tasks -> results on one of two backends behind one
interface, and, for the experiments with a results store, cells -> tasks ->
runs in the store.

- A `Task` is an importable function, its arguments, the CPU threads it uses
  and, optionally, one `shared` object many tasks read (the text of the
  Transformer study, a sweep's settings, coord-check's model factory). It is
  computed exactly as the local backend computes it: a worker looks nothing
  up, and the thread count travels with it (torch's kernels give the same
  floating-point results on the same number of threads).
- `LocalBackend` computes the tasks one after another in this process (no service).
- `RayBackend` submits them as Ray tasks to a cluster (`address`: "local" starts
  a private one on this machine, "auto" joins the one `ray start` made here or
  RAY_ADDRESS names, or HOST:PORT), with mupspec's own code shipped along so the
  workers run the driver's version; a `shared` object is put into Ray's object
  store once and read by every task; functions from a user's file (coord-check's
  --model FILE.py:FACTORY) travel by value. A worker that dies is replaced and
  its task retried by Ray; a task that raises is reported, not retried. Inside
  a Ray task (a task that runs a sweep of its own) it joins the running Ray
  instead of starting another.
- `run_tasks` computes a list of tasks and returns their results in order
  (verify's grid, coord-check's networks: the fits need every one).
- `run_sweep` computes the missing runs of a store's cells (`sweep.py`), one
  task per cell (`make_task`: the spiral's by default, the Transformer study's
  `lm_study.cell_task`). A worker only computes; the driver alone writes the
  store, so a store is byte-identical whichever backend filled it. Finished
  runs are never recomputed: a rerun (after a kill, a deadline, a failure)
  computes exactly what the store is missing; a cell that raises is recorded
  in errors/ and the others go on.
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
from typing import Any, Callable, Iterable, Iterator

from mupspec.empirical.data import SpiralConfig, make_spiral
from mupspec.empirical.netplan import NetPlan, plan_from_codegen
from mupspec.empirical.sweep import SPECS_DIR, Cell, Sweep, SweepSettings, mark_divergence
from mupspec.commands._backend import BACKENDS
from mupspec.errors import Diagnostic, MupError
from mupspec.progress import Progress

RAY_INSTALL_HINT = 'install it with: pip install "mupspec[ray]"  (or: pip install "ray>=2.9")'
# modules made from a user's file (coord-check --model FILE.py:FACTORY): no worker can import
# them by name, so their functions travel by value
BY_VALUE_PREFIXES = ("mupspec_user_",)


@dataclass(eq=False)
class Task:
    """One unit of work: `fn(*args)`, or `fn(*args, shared=shared)` when the task
    has a shared object. `fn` is a module-level function (Ray ships it by name,
    or by value from a user's file); everything it needs is in args and shared."""

    fn: Callable
    args: tuple = ()
    threads: int = 1              # torch CPU threads while it runs (and the CPUs a Ray task reserves)
    gpus: float = 0               # the GPUs a Ray task reserves (a task training on cuda: 1)
    shared: Any = None            # one object many tasks read: sent to a Ray cluster once
    label: str = ""               # how logs, progress and Ray's process titles name it
    steps: int = 0                # on_step calls it makes (for a progress bar); 0: none
    cell: Cell | None = None      # run_sweep's: the cell whose runs it computes

    def __call__(self, on_step: Callable[[int], None] | None = None):
        return execute(self.fn, self.args, self.shared, self.threads, on_step)


def execute(fn: Callable, args: tuple, shared, threads: int, on_step=None):
    """fn(*args[, shared=][, on_step=]) on `threads` torch threads (restored after)."""
    import torch

    kwargs = {} if shared is None else {"shared": shared}
    if on_step is not None:
        kwargs["on_step"] = on_step
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


@dataclass
class Report:
    trained: int = 0                                     # runs computed and saved now
    failed: list[dict] = field(default_factory=list)     # {"cell", "runs", "error"} per failed cell
    postponed: int = 0                                   # runs not started before the deadline
    postponed_cells: int = 0                             # cells (folders) with runs not started before the deadline

    @property
    def failed_runs(self) -> int:
        return sum(len(f["runs"]) for f in self.failed)


def _describe(err: BaseException) -> str:
    """The error and where it was raised (the last frames), for the store's errors/ file."""
    tail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
    return f"{type(err).__name__}: {err}\n{tail}".strip()


# ---------------------------------------------------------------- backends
#
# One interface: `with backend: for task, result, error in backend.map(tasks): ...`
# computes every task, yielding each result as it arrives, or the exception it
# raised (then result is None). With on_start, the local backend also passes
# on_step=on_start(task) to the task, for a progress bar.

class LocalBackend:
    """Compute the tasks one by one in this process: what `mupspec` always did."""

    name = "local"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, tasks: Iterable[Task], on_start: Callable | None = None) -> Iterator[tuple]:
        for task in tasks:
            try:
                result = task(on_step=on_start(task) if on_start else None)
            except Exception as err:   # a failing task is reported; the others go on
                yield task, None, err
                continue
            yield task, result, None


def import_ray():
    try:
        import ray
    except ImportError:
        raise MupError(Diagnostic("--backend ray needs Ray, which is not installed",
                                  hint=RAY_INSTALL_HINT)) from None
    return ray


_IN_RAY_TASK = False   # set in a Ray worker while it computes one of our tasks


def _ray_call(fn: Callable, args: tuple, shared, threads: int):
    global _IN_RAY_TASK
    outer, _IN_RAY_TASK = _IN_RAY_TASK, True
    try:
        return execute(fn, args, shared, threads)
    finally:
        _IN_RAY_TASK = outer


def _ship_user_code_by_value(ray) -> None:
    """Functions from a user's file (imported under a made-up module name) go to
    the workers by value: there is no file of that name to import there."""
    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith(BY_VALUE_PREFIXES):
            ray.cloudpickle.register_pickle_by_value(module)


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
        # in a Ray task (a task running a sweep of its own), Ray is running already: use it, start nothing
        if not (_IN_RAY_TASK or ray.is_initialized()):
            self._connect()
            self.owns = True
        _ship_user_code_by_value(ray)
        self.remote = ray.remote(max_retries=self.RETRIES, retry_exceptions=False)(_ray_call)
        return self

    def _connect(self) -> None:
        # ship mupspec itself: every worker runs the driver's code, whatever is installed there
        env = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
        if "OMP_WAIT_POLICY" in os.environ:   # idle OpenMP threads must not spin on shared cores
            env["env_vars"] = {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
        options = {"include_dashboard": False} if self.address == "local" else {}
        try:
            self.ray.init(address=self.address, runtime_env=env, log_to_driver=False,
                          configure_logging=False, **options)
        except ConnectionError as err:
            self.quiet.__exit__(None, None, None)
            raise MupError(Diagnostic(f"cannot reach a Ray cluster at --address {self.address}: {err}",
                                      hint="start one with `ray start --head`, or use --address local "
                                      "to start a private one on this machine")) from None

    def __exit__(self, *exc) -> None:
        if self.owns:
            self.ray.shutdown()
            self.owns = False
        self.quiet.__exit__(None, None, None)

    def map(self, tasks: Iterable[Task], on_start: Callable | None = None) -> Iterator[tuple]:
        ray, tasks = self.ray, iter(tasks)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pending: dict = {}
        shared_refs: dict[int, tuple] = {}    # id(shared) -> (shared, its object ref): put once

        def put_once(shared):
            if shared is None:
                return None
            if id(shared) not in shared_refs:     # the object is kept alive with it: its id stays its own
                shared_refs[id(shared)] = (shared, ray.put(shared))
            return shared_refs[id(shared)][1]

        def submit() -> bool:
            task = next(tasks, None)
            if task is None:
                return False
            options = {"num_cpus": task.threads, "num_gpus": task.gpus,
                       "name": f"mupspec {task.label or task.fn.__name__}"}
            # an object ref as a top-level argument: Ray hands the worker the object itself
            ref = self.remote.options(**options).remote(task.fn, task.args, put_once(task.shared), task.threads)
            pending[ref] = task
            return True

        # keep each CPU busy and one task queued behind it; submitting lazily keeps the
        # deadline meaningful and a killed driver's lost work small
        while len(pending) < cpus + 1 and submit():
            pass
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            try:
                result, error = ray.get(ref), None
            except ray.exceptions.RayTaskError as err:   # the task raised: report what it raised
                result, error = None, err.cause if err.cause else err
            except ray.exceptions.RayError as err:       # its worker died more often than retried
                result, error = None, err
            submit()
            yield task, result, error


def make_backend(name: str, address: str | None = None):
    if name == "local":
        return LocalBackend()
    if name == "ray":
        return RayBackend(address or "local")
    raise MupError(Diagnostic(f"unknown backend {name!r}", hint=f"use one of: {', '.join(BACKENDS)}"))


# ---------------------------------------------------------------- the drivers

def run_tasks(tasks: list[Task], backend=None, on_done: Callable[[Task], None] = lambda task: None) -> list:
    """Every task's result, in the tasks' order, computed on `backend` (default
    local); the first task that fails stops it: its own MupError (bad input the
    task found), or a MupError naming the task and what it raised."""
    backend = backend or LocalBackend()
    index = {id(t): i for i, t in enumerate(tasks)}
    results: list = [None] * len(tasks)
    with backend:
        for task, result, error in backend.map(tasks):
            if isinstance(error, MupError):
                raise error
            if error is not None:
                raise MupError(Diagnostic(f"{task.label or task.fn.__name__} failed on the {backend.name} "
                                          f"backend: {_describe(error)}"))
            results[index[id(task)]] = result
            on_done(task)
    return results


def run_sweep(sweep: Sweep, cells: Iterable[Cell], backend=None, *,
              make_task: Callable[[Cell, list[tuple[float, int]]], Task] | None = None,
              threads: int | None = None, progress: bool = True,
              after_cell: Callable[[Cell], None] | None = None, deadline: float | None = None) -> Report:
    """Compute every missing run of `cells` on `backend` (default local), one task
    per cell, saving each task's runs the moment it returns. `make_task(cell,
    missing runs)` makes the task (default: the spiral experiment's, on `threads`
    threads); its result is the list of run records. With a deadline
    (time.monotonic()), no task starts after it (run again to resume)."""
    import torch

    cells = list(dict.fromkeys(cells))
    backend = backend or LocalBackend()
    if make_task is None:
        threads = threads or torch.get_num_threads()
        make_task = lambda cell, missing: spiral_task(sweep, cell, missing, threads)  # noqa: E731
    report = Report()
    with sweep.lock():
        todo = [(c, sweep.missing(c)) for c in cells]
        todo = [(c, m) for c, m in todo if m]
        total = sum(len(c.runs()) for c in cells)
        bar = Progress(total, total - sum(len(m) for _, m in todo),
                       stream=sys.stderr if progress else None)
        wanted = dict(todo)    # by Cell: cells may share a folder (the same shape, other LRs or seeds)
        postponed: set[str] = set()

        def tasks() -> Iterator[Task]:
            for cell, missing in todo:
                if deadline is not None and time.monotonic() > deadline:
                    report.postponed += len(missing)
                    postponed.add(cell.key)
                    continue
                try:
                    task = make_task(cell, missing)
                except Exception as err:   # an unplannable cell fails alone
                    _failed(sweep, report, cell, missing, _describe(err))
                    continue
                task.cell = cell
                yield task

        def start(task: Task):
            bar.cell(task.cell.key, task.steps)
            return bar.on_step

        try:
            with backend:
                for task, results, error in backend.map(tasks(), on_start=start):
                    if error is None:
                        report.trained += sweep.write_runs(task.cell, results, wanted[task.cell])
                    else:
                        _failed(sweep, report, task.cell, wanted[task.cell], _describe(error))
                    bar.finished(len(wanted[task.cell]))
                    if after_cell:
                        after_cell(task.cell)
        finally:
            bar.close()
    report.postponed_cells = len(postponed)
    return report


def _failed(sweep: Sweep, report: Report, cell: Cell, runs: list[tuple[float, int]], error: str) -> None:
    sweep.write_error(cell, runs, error)
    report.failed.append({"cell": cell.key, "runs": [list(r) for r in runs], "error": error})


# ---------------------------------------------------------------- the spiral experiment's task

@lru_cache(maxsize=None)
def _spec(name: str):
    from mupspec.resolve import load_spec

    return load_spec(SPECS_DIR / f"{name}.mup")


@lru_cache(maxsize=4)
def _spiral(config: SpiralConfig):
    return make_spiral(config)


def spiral_task(sweep: Sweep, cell: Cell, missing: list[tuple[float, int]], threads: int) -> Task:
    """The task computing a cell's missing runs, the smallest (lr x seed) product
    covering them. It carries the network plan (per-layer init, multipliers, LR and
    eps factors, from the spec's generated module), the pairs and, shared by every
    task, the sweep's data and training settings."""
    s = sweep.settings
    plan = plan_from_codegen(_spec(cell.spec), arch=cell.arch, width=cell.width, depth=cell.depth,
                             d_in=sweep.data.d_in, d_out=sweep.data.d_out, optimizer=s.train.optimizer,
                             base_width=s.base_width, base_depth=s.base_depth)
    lrs = tuple(lr for lr in cell.lrs if any(m[0] == lr for m in missing))
    seeds = tuple(sd for sd in cell.seeds if any(m[1] == sd for m in missing))
    return Task(compute_spiral, (cell, plan, lrs, seeds, threads), threads=threads, shared=s,
                label=cell.key, steps=s.train.steps)


def compute_spiral(cell: Cell, plan: NetPlan, lrs: tuple[float, ...], seeds: tuple[int, ...], shards: int, *,
                   shared: SweepSettings, on_step: Callable[[int], None] | None = None) -> list[dict]:
    """One cell's run records (lr-major order), as saved in the store: the engine
    splits the replicas into `shards`, each on single-threaded kernels."""
    from mupspec.empirical.engine import software, train_batched

    results = train_batched(plan, _spiral(shared.data), list(lrs), list(seeds), shared.train,
                            on_step=on_step, shards=shards)
    header = {"cell": {k: v for k, v in asdict(cell).items() if k not in ("lrs", "seeds")},
              "plan": asdict(plan), "software": software()}
    return [header | mark_divergence(res) for res in results]

"""The sweep runner's generic parts: a Task (function, arguments, threads, one
shared object), the local backend, run_tasks and run_sweep with an
experiment's own make_task; the Ray backend's bookkeeping (a shared object put
once, no second Ray started inside a Ray task, a user's file shipped by value)
against a stand-in for Ray. The real cluster: tests/test_ray_faults.py."""

import pickle
import sys
import types

import pytest
import torch

from mupspec.empirical import runner
from mupspec.empirical.runner import LocalBackend, RayBackend, Task, run_sweep, run_tasks
from mupspec.empirical.sweep import Cell, Sweep
from mupspec.errors import Diagnostic, MupError


def scaled(x, factor=1, *, shared=None):
    """A task function: x times factor times the shared object's scale, and the threads it ran on."""
    scale = shared["scale"] if shared is not None else 1
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * factor * scale, torch.get_num_threads()


def test_a_task_gets_its_args_the_shared_object_and_its_threads():
    before = torch.get_num_threads()
    shared = {"scale": 10}
    assert Task(scaled, (3, 2), threads=1, shared=shared)() == (60, 1)
    assert Task(scaled, (3,), threads=2)() == (3, 2)
    assert torch.get_num_threads() == before          # restored after the task


def test_local_backend_reports_a_failing_task_and_goes_on():
    tasks = [Task(scaled, (x,), label=f"x={x}") for x in (1, -1, 2)]
    with LocalBackend() as backend:
        out = [(t.label, result, error) for t, result, error in backend.map(tasks)]
    assert [o[0] for o in out] == ["x=1", "x=-1", "x=2"]
    assert out[0][1][0] == 1 and out[2][1][0] == 2 and out[1][1] is None
    assert isinstance(out[1][2], ValueError) and str(out[1][2]) == "negative input -1"


def test_every_task_reads_the_one_shared_object():
    seen = []

    def remember(i, *, shared):
        seen.append(shared)
        return i

    shared = {"big": list(range(1000))}
    assert run_tasks([Task(remember, (i,), shared=shared) for i in range(3)]) == [0, 1, 2]
    assert len(seen) == 3 and all(s is shared for s in seen)


def test_run_tasks_keeps_the_order_and_names_the_task_that_failed():
    done = []
    assert [r[0] for r in run_tasks([Task(scaled, (x,)) for x in (3, 1, 2)],
                                    on_done=lambda t: done.append(t.args[0]))] == [3, 1, 2]
    assert done == [3, 1, 2]
    with pytest.raises(MupError, match="cell w8 failed on the local backend: ValueError: negative input -5"):
        run_tasks([Task(scaled, (1,)), Task(scaled, (-5,), label="cell w8")])
    with pytest.raises(MupError, match="^bad width 3$"):     # bad input a task found: its own message, as is
        run_tasks([Task(bad_input, (3,))])


def bad_input(width):
    raise MupError(Diagnostic(f"bad width {width}"))


def test_a_mup_error_survives_pickling_as_across_processes():
    err = pickle.loads(pickle.dumps(MupError(Diagnostic("bad width 3", hint="use 4"))))
    assert str(err) == "bad width 3" and err.diagnostics[0].hint == "use 4"


# ---------------------------------------------------------------- run_sweep with an experiment's own tasks

def fake_runs(cell, lrs, seeds, *, shared, on_step=None):
    """Run records as an experiment returns them: no training, a loss from the numbers."""
    if cell.width > 100:
        raise MemoryError("too wide")
    for step in range(shared["steps"]):
        if on_step:
            on_step(step)
    return [{"lr": lr, "seed": s, "diverged": False, "final": {"train_loss": lr * cell.width + s}}
            for lr in lrs for s in seeds]


def test_run_sweep_with_an_experiments_make_task(tmp_path):
    cells = [Cell("sp", "gpt", w, 2, (1e-3, 1e-2), (0, 1)) for w in (16, 32, 1000)]
    shared = {"steps": 3}
    made = []

    def make_task(cell, missing):
        made.append((cell.width, sorted(missing)))
        lrs = tuple(lr for lr in cell.lrs if any(m[0] == lr for m in missing))
        seeds = tuple(s for s in cell.seeds if any(m[1] == s for m in missing))
        return Task(fake_runs, (cell, lrs, seeds), shared=shared, label=cell.key, steps=3)

    sweep = Sweep(tmp_path)
    report = run_sweep(sweep, cells, make_task=make_task, progress=False)
    assert report.trained == 8 and [f["cell"] for f in report.failed] == ["sp-gpt-w1000-d2"]
    assert [e["key"] for e in sweep.errors()] == ["sp-gpt-w1000-d2"] and "too wide" in sweep.errors()[0]["error"]
    assert [r["final"]["train_loss"] for r in sweep.load(cells[1])] == [0.032, 1.032, 0.32, 1.32]
    # one run lost: the rerun makes a task for exactly it (and the failed cell), nothing else
    sweep.run_path(cells[0], 1e-2, 1).unlink()
    made.clear()
    again = run_sweep(sweep, cells, make_task=make_task, progress=False)
    assert again.trained == 1 and made == [(16, [(1e-2, 1)]), (1000, sorted(cells[2].runs()))]


def test_no_task_starts_after_the_deadline(tmp_path):
    cells = [Cell("sp", "gpt", w, 2, (1e-3,), (0,)) for w in (16, 32)]
    report = run_sweep(Sweep(tmp_path), cells, progress=False, deadline=0.0,
                       make_task=lambda c, m: Task(fake_runs, (c, (1e-3,), (0,)), shared={"steps": 1}))
    assert report.trained == 0 and report.postponed == 2 and report.postponed_cells == 2


# ---------------------------------------------------------------- the Ray backend's bookkeeping, without Ray

class FakeRay(types.SimpleNamespace):
    """What RayBackend uses of Ray; tasks run at once, in this process, as Ray would run them."""

    class Ref:
        def __init__(self, value=None, error=None):
            self.value, self.error = value, error

    def __init__(self):
        super().__init__(inits=0, shutdowns=0, puts=[], by_value=[], options=[], initialized=False)
        self.exceptions = types.SimpleNamespace(RayTaskError=type("RayTaskError", (Exception,), {"cause": None}),
                                                RayError=type("RayError", (Exception,), {}))
        self.cloudpickle = types.SimpleNamespace(register_pickle_by_value=self.by_value.append)

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.inits += 1
        self.initialized = True

    def shutdown(self):
        self.shutdowns += 1
        self.initialized = False

    def cluster_resources(self):
        return {"CPU": 2}

    def put(self, value):
        self.puts.append(value)
        return self.Ref(value)

    def remote(self, **options):
        ray = self

        class Remote:
            def __init__(self, fn):
                self.fn = fn

            def options(self, **kw):
                ray.options.append(kw)
                return self

            def remote(self, *args):
                args = [a.value if isinstance(a, FakeRay.Ref) else a for a in args]   # top-level refs resolved
                try:
                    return FakeRay.Ref(self.fn(*args))
                except Exception as err:
                    wrapped = ray.exceptions.RayTaskError(str(err))
                    wrapped.cause = err
                    return FakeRay.Ref(error=wrapped)

        return Remote

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error:
            raise ref.error
        return ref.value


def nested_sweep(n):
    """A task that computes tasks of its own on a Ray backend, as from inside a Ray worker."""
    return sum(r[0] for r in run_tasks([Task(scaled, (i,)) for i in range(n)], RayBackend("auto")))


def test_ray_backend_puts_a_shared_object_once_and_starts_no_ray_inside_a_task(monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(runner, "import_ray", lambda: fake)
    shared = {"scale": 2}
    assert [r[0] for r in run_tasks([Task(scaled, (i,), shared=shared) for i in range(4)], RayBackend())] \
        == [0, 2, 4, 6]
    assert fake.puts == [shared] and (fake.inits, fake.shutdowns) == (1, 1)   # put once; its own Ray stopped
    assert [(o["num_cpus"], o["num_gpus"]) for o in fake.options] == [(1, 0)] * 4
    # a task that runs a sweep itself: the nested backend uses the running Ray, starts and stops none
    assert run_tasks([Task(nested_sweep, (3,))], RayBackend()) == [3]
    assert (fake.inits, fake.shutdowns) == (2, 2)      # the outer backend's only
    # even where the worker's Ray does not say it is initialized, a task knows it runs in Ray
    fake.is_initialized = lambda: False
    assert run_tasks([Task(nested_sweep, (2,))], RayBackend()) == [1]
    assert (fake.inits, fake.shutdowns) == (3, 3)


def test_functions_from_a_users_file_are_shipped_by_value(monkeypatch, tmp_path):
    from mupspec.commands.coord_check import load_callable

    fake = FakeRay()
    monkeypatch.setattr(runner, "import_ray", lambda: fake)
    (tmp_path / "mine.py").write_text("def double(x):\n    return 2 * x\n")
    double = load_callable(f"{tmp_path / 'mine.py'}:double", "--model")
    assert run_tasks([Task(double, (21,))], RayBackend()) == [42]
    assert sys.modules[double.__module__] in fake.by_value


def test_a_transformer_cell_on_cuda_reserves_a_gpu_on_ray():
    from mupspec.empirical import lm_study

    cell = Cell("sp", "gpt", 32, 2, (1e-3, 1e-2), (0, 1))
    on_gpu = lm_study.cell_task(cell, [(1e-2, 1)], lm_study.QUICK, None, "cuda", threads=2)
    assert (on_gpu.gpus, on_gpu.threads, on_gpu.args[1:]) == (1, 2, (((1e-2, 1),), "cuda", None))
    assert lm_study.cell_task(cell, cell.runs(), lm_study.QUICK, None, "cpu", threads=1).gpus == 0


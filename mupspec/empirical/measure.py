"""Stage 4b: measure per-class scales of real networks across widths and depths.

Takes a resolved spec and a `Grid` (widths, depths, seeds, optimizers, steps,
architecture) and returns a list of `Sample` rows, one per (optimizer, width,
depth, seed, step, class, quantity). Quantities (per coordinate RMS unless a
ratio):
- `act`    the layer's output (pre-activation; residual stream; network output)
- `own`    the own-update term  mult * (W_t - W_0) x_t   (step >= 1)
- `prop`   the propagated term  mult * W_0 (x_t - x_0)   (step >= 1, not input)
- `delta`  the whole change h_t - h_0                    (step >= 1)
- `grad_fro`, `grad_spec`  ||grad w|| / ||w|| at init, Frobenius and spectral
- `upd_fro`, `upd_spec`    ||w_t - w_0|| / ||w_0||: the LR-scaled relative update
- `delta@CLS`, `prop@CLS`  the parts of `delta` (hidden) and `prop` (output)
                           caused by class CLS's update (see _measure_sources)
For the hidden class, act/own/prop/delta are read on the LAST hidden layer
(the one feeding the output, whose input is itself a hidden layer once depth
>= 3: earlier hidden layers' propagated terms inherit the input layer's
scale, so a mean over layers would mix two exponents); the weight ratios are
the mean over hidden layers.

Precision: float64 by default (see `Grid.dtype`). Training: full batch of `batch` N(0,1) inputs, reused every step; the loss is
linear, sum(f(x) * c) with a fixed N(0,1) cotangent c, so its gradient in the
output is Θ(1) whatever the output's size (a squared loss would hide scaling
behind the output's own size). The base LR is small so that every run stays
in the regime where one step's change is a small perturbation: exponents, not
instabilities, are what is measured (`Grid.lr`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from mupspec import ir
from mupspec.empirical.models import Arch, SpecNet, build, build_codegen, codegen_supports

QUANTITIES = ("act", "own", "prop", "delta", "grad_fro", "grad_spec", "upd_fro", "upd_spec")
CLASSES = ("input", "hidden", "output", "bias", "norm")


@dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    depths: tuple[int, ...] = (3, 4, 6)
    seeds: tuple[int, ...] = (0, 1, 2)
    optimizers: tuple[str, ...] = ("sgd", "adam")
    steps: int = 2
    batch: int = 8
    arch: Arch = field(default_factory=Arch)
    # base LR per optimizer: small, so that growing terms of unstable specs
    # are still measured as clean power laws at the largest width
    lr: tuple[tuple[str, float], ...] = (("sgd", 1e-4), ("adam", 1e-5), ("adafactor", 1e-5), ("lion", 1e-5),
                                         ("muon", 1e-5))
    ratios: bool = True  # the grad_*/upd_* weight-norm ratios (power iterations: the costly part)
    # float64: an update is read as W_t - W_0, and at a small LR in a spec
    # whose updates vanish with width it falls below float32's resolution
    dtype: torch.dtype = torch.float64
    # "codegen": plain torch (residual) MLPs parametrized by the module
    # `mupspec codegen` emits for the spec (anchored at width 64, depth 1);
    # "numeric": models.SpecNet from numeric.layer_value (absolute values).
    builder: str = "codegen"

    def base_lr(self, optimizer: str) -> float:
        return dict(self.lr)[optimizer]


@dataclass(frozen=True)
class Sample:
    optimizer: str
    width: int
    depth: int
    seed: int
    step: int
    cls: str
    quantity: str
    value: float


def rms(t: torch.Tensor) -> float:
    return float(t.detach().pow(2).mean().sqrt())


def spectral_norm(m: torch.Tensor, iters: int = 30) -> float:
    """Largest singular value by power iteration (a 1% estimate is plenty for
    a log-log slope, and it is ~100x cheaper than an SVD at width 1024)."""
    if m.dim() == 1:
        return float(m.norm())
    v = torch.ones(m.shape[1], dtype=m.dtype) / m.shape[1] ** 0.5
    v = v + 0.01 * torch.randn(m.shape[1], dtype=m.dtype, generator=torch.Generator().manual_seed(0))
    for _ in range(iters):
        v = m.T @ (m @ v)
        norm = v.norm()
        if norm == 0:
            return 0.0
        v = v / norm
    return float((m @ v).norm())


def _params_by_class(net: SpecNet) -> list[tuple[str, torch.nn.Parameter]]:
    out = []
    for layer in net.layers:
        out.append((layer.kind, layer.weight))
        if layer.bias is not None:
            out.append(("bias", layer.bias))
        if layer.norm_gain is not None:
            out.append(("norm", layer.norm_gain))
    return out


def _last_per_class(values: list[tuple[str, float]]) -> dict[str, float]:
    return dict(values)  # later layers overwrite earlier ones of the same class


def _class_means(values: list[tuple[str, float]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for cls, v in values:
        sums.setdefault(cls, []).append(v)
    return {cls: sum(vs) / len(vs) for cls, vs in sums.items()}


def _ratios(pairs: list[tuple[str, torch.Tensor, torch.Tensor]], kind: str,
            cache: dict[int, float]) -> dict[str, float]:
    """||top|| / ||bottom|| per class (skipping zero-init parameters); the
    spectral norms of the initial weights are computed once, in `cache`."""
    vals = []
    for cls, top, bottom in pairs:
        if kind == "fro":
            denom, num = float(bottom.norm()), float(top.norm())
        else:
            if id(bottom) not in cache:
                cache[id(bottom)] = spectral_norm(bottom)
            # tops are gradients and updates: rank <= batch x steps, so the
            # power iteration converges in a few steps
            denom, num = cache[id(bottom)], spectral_norm(top, iters=12)
        if denom > 0:
            vals.append((cls, num / denom))
    return _class_means(vals)


def _make_optimizer(net: SpecNet, optimizer: str, base_lr: float) -> torch.optim.Optimizer:
    if optimizer not in ("sgd", "adam"):  # Adafactor, Lion, Muon (+ AdamW): as the generated module makes them
        made = net.generated.make_optimizer(net.model, net.plan, lr=base_lr, eps=1e-12)
        return _Steps([o for o in (made if isinstance(made, tuple) else (made,)) if o is not None])
    groups = net.param_groups(optimizer, base_lr)
    if optimizer == "sgd":
        for g in groups:
            g.pop("eps", None)
        return torch.optim.SGD(groups, lr=base_lr, foreach=True)
    return torch.optim.Adam(groups, lr=base_lr, foreach=True)


class _Steps:
    """Several optimizers stepped as one (Muon's pair)."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    def step(self):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self):
        for opt in self.optimizers:
            opt.zero_grad()


def uses_codegen(spec: ir.Spec, grid: Grid) -> bool:
    return grid.builder == "codegen" and codegen_supports(spec, grid.arch)


def run_one(spec: ir.Spec, grid: Grid, optimizer: str, width: int, depth: int, seed: int,
            generated=None) -> list[Sample]:
    """Train one network for `grid.steps` steps and measure every quantity.
    `generated`: the spec's codegen module (generated once by `measure`)."""
    if uses_codegen(spec, grid):
        net = build_codegen(spec, width, depth, optimizer, arch=grid.arch, seed=seed, dtype=grid.dtype,
                            module=generated)
    else:
        net = build(spec, width, depth, arch=grid.arch, seed=seed, dtype=grid.dtype)
    data = torch.Generator().manual_seed(10_000 + seed)  # same data at every width
    x = torch.randn(grid.batch, grid.arch.d_in, generator=data, dtype=grid.dtype)
    cotangent = torch.randn(grid.batch, grid.arch.d_out, generator=data, dtype=grid.dtype)
    rows: list[Sample] = []

    def add(step: int, per_class: dict[str, float], quantity: str) -> None:
        rows.extend(Sample(optimizer, width, depth, seed, step, c, quantity, v) for c, v in per_class.items())

    record0: list = []
    out = net(x, record0)
    add(0, _last_per_class([(layer.kind, rms(o)) for layer, _, o in record0]), "act")
    (out * cotangent).sum().backward()
    params = _params_by_class(net)
    initial = [(cls, p.detach().clone()) for cls, p in params]
    w0_by_param = {id(p): w0 for (_, p), (_, w0) in zip(params, initial)}
    spec_cache: dict[int, float] = {}
    if grid.ratios:
        grads = [(cls, p.grad.detach(), w0) for (cls, p), (_, w0) in zip(params, initial)]
        add(0, _ratios(grads, "fro", spec_cache), "grad_fro")
        add(0, _ratios(grads, "spec", spec_cache), "grad_spec")
    opt = _make_optimizer(net, optimizer, grid.base_lr(optimizer))
    for step in range(1, grid.steps + 1):
        opt.step()
        opt.zero_grad()
        # before the forward whose graph the next backward uses: it moves
        # parameters in place (and puts them back)
        _measure_sources(net, x, step, params, initial, record0, add)
        record: list = []
        out = net(x, record)
        _measure_step(step, record, record0, w0_by_param, add)
        if grid.ratios:
            moved = [(cls, p.detach() - w0, w0) for (cls, p), (_, w0) in zip(params, initial)]
            add(step, _ratios(moved, "fro", spec_cache), "upd_fro")
            add(step, _ratios(moved, "spec", spec_cache), "upd_spec")
        if step < grid.steps:
            (out * cotangent).sum().backward()
    return rows


@torch.no_grad()
def _measure_step(step, record, record0, w0_by_param, add) -> None:
    act, own, prop, delta, bias_own = [], [], [], [], []
    last_hidden = max((i for i, (layer, _, _) in enumerate(record) if layer.kind == "hidden"), default=-1)
    for index, ((layer, inp, out), (_, inp0, out0)) in enumerate(zip(record, record0)):
        branch = layer.branch if layer.kind == "hidden" else 1.0
        if layer.bias is not None:  # a bias's own update: mult * Δb (fan_in 1)
            b0 = w0_by_param[id(layer.bias)]
            bias_own.append(("bias", rms(branch * layer.bias_scale.mult * (layer.bias - b0))))
        if layer.kind == "hidden" and index != last_hidden:
            continue  # only the last hidden layer represents its class (module doc)
        w0 = w0_by_param[id(layer.weight)]
        act.append((layer.kind, rms(out)))
        own.append((layer.kind, rms(branch * layer.scale.mult * (inp @ (layer.weight - w0).T))))
        if layer.kind != "input":
            prop.append((layer.kind, rms(branch * layer.scale.mult * ((inp - inp0) @ w0.T))))
        delta.append((layer.kind, rms(out - out0)))
    for name, values in (("act", act), ("own", own), ("prop", prop), ("delta", delta)):
        add(step, _last_per_class(values), name)
    if bias_own:
        add(step, _class_means(bias_own), "own")


@torch.no_grad()
def _measure_sources(net: SpecNet, x, step, params, initial, record0, add) -> None:
    """The feature change and the output's W_out·Δx split by the class whose
    update caused it: forward again with only that class's parameters moved
    (first order in the LR, the parts add up). A sum's width exponent is its
    largest part's, but at finite width a part with a smaller exponent and a
    larger constant can hide it (e.g. μP with a cut hidden LR: the input
    layer's Θ(1) change under the hidden layers' n^-1/2 own updates); the
    parts are clean power laws. Quantities `delta@CLS` (last hidden layer)
    and `prop@CLS` (output, through the initial W_out)."""
    last_hidden = max((i for i, (layer, _, _) in enumerate(record0) if layer.kind == "hidden"), default=None)
    if last_hidden is None:
        return
    current = [p.detach().clone() for _, p in params]
    out_layer = record0[-1][0]
    w_out0 = dict((id(p), w0) for (_, p), (_, w0) in zip(params, initial))[id(out_layer.weight)]
    try:
        for source in sorted({cls for cls, _ in params}):
            for (cls, p), (_, w0), now in zip(params, initial, current):
                p.copy_(now if cls == source else w0)
            record: list = []
            net(x, record)
            dx = record[last_hidden][2] - record0[last_hidden][2]
            add(step, {"hidden": rms(dx)}, f"delta@{source}")
            x_change = record[-1][1] - record0[-1][1]
            add(step, {"output": rms(out_layer.scale.mult * (x_change @ w_out0.T))}, f"prop@{source}")
    finally:
        for (_, p), now in zip(params, current):
            p.copy_(now)


@dataclass(frozen=True)
class Run:
    """One network of a grid as a sweep-runner task (`runner.py`): all it needs travels with it."""

    spec: ir.Spec
    grid: Grid
    optimizer: str
    width: int
    depth: int
    seed: int
    threads: int = 2

    @property
    def label(self) -> str:
        return f"verify {self.spec.name} {self.optimizer} w{self.width} d{self.depth} s{self.seed}"


_GENERATED: dict = {}


def run_task(run: Run, on_step=None) -> list[Sample]:
    """`run_one` as measure computes it: 2 threads, the spec's codegen module generated once per process."""
    torch.set_num_threads(run.threads)
    generated = None
    if uses_codegen(run.spec, run.grid):
        from mupspec.codegen import load_module
        key = run.spec.model_dump_json()
        if key not in _GENERATED:
            _GENERATED[key] = load_module(run.spec, f"{run.spec.name}.mup")
        generated = _GENERATED[key]
    return run_one(run.spec, run.grid, run.optimizer, run.width, run.depth, run.seed, generated)


def measure_on(backend, spec: ir.Spec, grid: Grid = Grid(),
               on_run: Callable[[], None] = lambda: None) -> list[Sample]:
    """`measure` with every run a task of a sweep-runner backend; the same rows, in the same order."""
    from mupspec.empirical.runner import Task, run_tasks

    runs = [Run(spec, grid, o, w, d, s) for o in grid.optimizers for d in grid.depths for w in grid.widths
            for s in grid.seeds]
    tasks = [Task(run_task, (run,), threads=run.threads, label=run.label) for run in runs]
    rows = run_tasks(tasks, backend, on_done=lambda task: on_run())
    return [row for samples in rows for row in samples]


def measure(spec: ir.Spec, grid: Grid = Grid(), on_run: Callable[[], None] = lambda: None) -> list[Sample]:
    """Every run of the grid (`on_run` after each); torch uses 2 threads (the target machine)."""
    torch.set_num_threads(2)
    generated = None
    if uses_codegen(spec, grid):
        from mupspec.codegen import load_module
        generated = load_module(spec, f"{spec.name}.mup")
    rows: list[Sample] = []
    for optimizer in grid.optimizers:
        for depth in grid.depths:
            for width in grid.widths:
                for seed in grid.seeds:
                    rows.extend(run_one(spec, grid, optimizer, width, depth, seed, generated))
                    on_run()
    return rows

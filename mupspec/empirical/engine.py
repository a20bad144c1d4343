"""Batched training engine: every (LR x seed) replica of one network shape
trains as ONE batched computation.

Takes a `NetPlan` (per-layer init std, forward multiplier, LR and eps factors,
built from a spec by `plan_from_spec`), a `SpiralData`, a list of
learning rates and a list of seeds; returns one result dict per (lr, seed).

How it batches: each weight is a stacked tensor of shape (R, fan_in, fan_out)
(R = #LRs x #seeds), the forward pass is `torch.baddbmm` per layer, the loss
is the sum over replicas of each replica's mean cross-entropy (so autograd
gives every replica exactly its own gradient, in one backward pass), and
Adam/SGD update all replicas at once with a per-replica LR tensor of shape
(R, 1, 1) times the layer's factor from the plan. Replicas with the same seed
share init and mini-batches, so a seed is a paired comparison across LRs.

A replica whose loss becomes NaN/inf is recorded as diverged (with the step)
and frozen (weights and optimizer state zeroed, LR 0), so it cannot poison
the others; the batch trains on.

`train_reference` is the plain sequential version (nn.Module + torch.optim,
one run at a time) used by the equivalence test and the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from mupspec import ir
from mupspec.empirical.data import SpiralData
from mupspec.numeric import class_fans, layer_value


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 500
    batch: int = 32
    optimizer: str = "adam"      # "adam" or "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8            # base Adam eps, times each layer's eps factor
    log_every: int = 25          # steps between measurements on the probe batch
    probe_size: int = 256        # validation points used for activation measurements


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Layer:
    kind: str            # "input", "hidden" or "output"
    fan_in: int
    fan_out: int
    init_std: float
    mult: float          # forward multiplier on W (x @ W * mult + b)
    lr: float            # factor on the replica's LR for W
    bias_lr: float       # factor on the replica's LR for b
    eps: float           # factor on the base Adam eps
    branch: bool = False # a residual branch: h <- h + branch_mult * (layer output)


@dataclass(frozen=True)
class NetPlan:
    spec: str
    arch: str            # "mlp" (plain, ReLU) or "resmlp" (residual branches)
    width: int
    depth: int           # mlp: number of linear layers; resmlp: number of residual blocks
    layers: tuple[Layer, ...]
    branch_mult: float = 1.0


def _anchored(spec, kind, field, fans, base_fans, width, base_width, depth, base_depth):
    """rule(n, L) / rule(n0, L0): the spec's scaling relative to the base shape."""
    here = layer_value(spec, kind, field, fan_in=fans[0], fan_out=fans[1], width=width, depth=depth)
    base = layer_value(spec, kind, field, fan_in=base_fans[0], fan_out=base_fans[1],
                       width=base_width, depth=base_depth)
    return 0.0 if base == 0 else here / base


def plan_from_spec(spec: ir.Spec, *, arch: str, width: int, depth: int, d_in: int, d_out: int,
                   optimizer: str = "adam", base_width: int = 64, base_depth: int = 4) -> NetPlan:
    """Per-layer numbers for one network shape, anchored at (base_width, base_depth):
    value(n) = standard value * rule(n)/rule(n0), where the standard value is
    Var = 1/fan_in at the base width for init and 1 for multipliers, LR and
    eps factors. So at the base shape every spec is SP with the same LR."""
    if arch not in ("mlp", "resmlp"):
        raise ValueError(f"unknown architecture {arch!r}")
    n_hidden = depth - 2 if arch == "mlp" else depth
    if n_hidden < 0:
        raise ValueError("a plain MLP needs depth >= 2 (input and output layers)")
    kinds = ["input"] + ["hidden"] * n_hidden + ["output"]
    lr_field = f"lr.{optimizer}"
    res = spec.block("residual") if arch == "resmlp" else None
    def res_ratio(field):
        if res is None:
            return 1.0
        return _anchored(spec, "residual", field, (width, width), (base_width, base_width),
                         width, base_width, depth, base_depth)
    layers = []
    for kind in kinds:
        fans = class_fans(kind, width, d_in, d_out)
        base_fans = class_fans(kind, base_width, d_in, d_out)
        bias_fans, base_bias_fans = (1, fans[1]), (1, base_fans[1])
        ratio = lambda field, k=kind, f=fans, bf=base_fans: _anchored(
            spec, k, field, f, bf, width, base_width, depth, base_depth)
        bias_ratio = lambda field: _anchored(spec, "bias", field, bias_fans, base_bias_fans,
                                             width, base_width, depth, base_depth)
        branch = arch == "resmlp" and kind == "hidden"
        lr_res = res_ratio(lr_field) if branch else 1.0
        eps_res = res_ratio("eps.adam") if branch and optimizer == "adam" else 1.0
        layers.append(Layer(
            kind=kind, fan_in=int(fans[0]), fan_out=int(fans[1]),
            init_std=math.sqrt(ratio("init.var") / base_fans[0]),
            # the output bias has no width dimension: scalar-like, it keeps its base LR (as codegen does)
            mult=ratio("mult"), lr=ratio(lr_field) * lr_res,
            bias_lr=(1.0 if kind == "output" else bias_ratio(lr_field)) * lr_res,
            eps=(ratio("eps.adam") if optimizer == "adam" else 1.0) * eps_res, branch=branch))
    return NetPlan(spec=spec.name, arch=arch, width=width, depth=depth, layers=tuple(layers),
                   branch_mult=res_ratio("mult") if arch == "resmlp" else 1.0)


def init_weights(plan: NetPlan, seed: int) -> list[torch.Tensor]:
    """One seed's weights, (fan_in, fan_out) each, N(0, init_std^2). Biases start at 0."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(l.fan_in, l.fan_out, generator=gen) * l.init_std for l in plan.layers]


def batch_indices(n_train: int, cfg: TrainConfig, seed: int) -> torch.Tensor:
    """(steps, batch) indices into the training set: the seed's mini-batch order."""
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    return torch.randint(n_train, (cfg.steps, cfg.batch), generator=gen)


def plan_from_codegen(spec: ir.Spec, *, arch: str, width: int, depth: int, d_in: int, d_out: int,
                      optimizer: str = "adam", base_width: int = 64, base_depth: int = 4) -> NetPlan:
    """The same plan, read from the module `mupspec codegen` generates for the
    spec (its `parametrize` on nn.Linear stacks at the target and base width):
    the engine's per-layer numbers then come from the code users run. Codegen
    does not handle residual blocks yet: such specs fall back to plan_from_spec."""
    if spec.block("residual") is not None:
        return plan_from_spec(spec, arch=arch, width=width, depth=depth, d_in=d_in, d_out=d_out,
                              optimizer=optimizer, base_width=base_width, base_depth=base_depth)
    from mupspec.codegen import load_module

    generated = _CODEGEN.setdefault(spec.name, load_module(spec, f"{spec.name}.mup"))
    numeric = plan_from_spec(spec, arch=arch, width=width, depth=depth, d_in=d_in, d_out=d_out,
                             optimizer=optimizer, base_width=base_width, base_depth=base_depth)
    stack = lambda n: torch.nn.ModuleList(torch.nn.Linear(a, b, device="meta") for a, b in
                                          [(d_in, n)] + [(n, n)] * (len(numeric.layers) - 2) + [(n, d_out)])
    dims = {"widths": {w: width for w in spec.widths}, "base_widths": {w: base_width for w in spec.widths}}
    if spec.depth:
        dims |= {"depth": depth, "base_depth": base_depth}
    plan = generated.parametrize(stack(width), stack(base_width), optimizer=optimizer, init="none", **dims)
    layers = []
    for i, layer in enumerate(numeric.layers):
        w, b = plan[f"{i}.weight"], plan[f"{i}.bias"]
        layers.append(replace(layer, init_std=math.sqrt(w.init_ratio / w.base_fan_in), mult=w.mult,
                              lr=w.lr_factor, bias_lr=b.lr_factor, eps=w.eps_factor))
    return replace(numeric, layers=tuple(layers))


_CODEGEN: dict = {}

# ---------------------------------------------------------------- forward

def forward(plan: NetPlan, weights, biases, x: torch.Tensor, keep: bool = False):
    """Logits (R, B, classes) for x (R, B, d_in); with keep, also every layer's
    pre-activation (the residual stream for branches) and each layer's input."""
    layers, outs, inputs = plan.layers, [], []
    h = torch.baddbmm(biases[0], x, weights[0], alpha=layers[0].mult)
    if keep:
        outs.append(h), inputs.append(x)
    for i in range(1, len(layers)):
        a = torch.relu(h)
        z = torch.baddbmm(biases[i], a, weights[i], alpha=layers[i].mult)
        h = h + plan.branch_mult * z if layers[i].branch else z
        if keep:
            outs.append(h), inputs.append(a)
    return (h, outs, inputs) if keep else h


def replica_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each replica: (R,)."""
    r, b, c = logits.shape
    return F.cross_entropy(logits.reshape(r * b, c), y.reshape(r * b), reduction="none").view(r, b).mean(1)


# ---------------------------------------------------------------- optimizer

class BatchedOptimizer:
    """Adam or SGD over stacked replicas; step size = lr[r] * factor[param].

    Adam uses torch's fused kernel (one pass over p, g, m, v) on per-replica
    views, one call per distinct (step size, eps): the update is the same
    arithmetic as torch.optim.Adam, at about the memory-bandwidth bound."""

    def __init__(self, params, factors, eps_factors, lrs: list[float], cfg: TrainConfig):
        self.params, self.factors, self.eps_factors, self.cfg = params, factors, eps_factors, cfg
        self.lrs = list(lrs)
        self.m = [torch.zeros_like(p) for p in params] if cfg.optimizer == "adam" else []
        self.v = [torch.zeros_like(p) for p in params] if cfg.optimizer == "adam" else []
        self.t = 0
        self.t_tensor = torch.zeros(())
        self.fused = cfg.optimizer == "adam" and hasattr(torch, "_fused_adam_")
        self._group()

    def _group(self) -> None:
        """(param index, replica) pairs sharing one step size and eps; frozen replicas (LR 0) drop out."""
        groups: dict[tuple[float, float], list[tuple[int, int]]] = {}
        for i, (f, e) in enumerate(zip(self.factors, self.eps_factors)):
            for r, lr in enumerate(self.lrs):
                if lr * f != 0.0:
                    groups.setdefault((lr * f, self.cfg.eps * e), []).append((i, r))
        self.groups = groups
        self.lr_tensor = torch.tensor(self.lrs).view(-1, 1, 1)

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        if self.cfg.optimizer == "sgd":
            for p, g, f in zip(self.params, grads, self.factors):
                p.sub_(g * (self.lr_tensor * f))
        elif self.fused:
            self._fused_adam(grads)
        else:
            self._plain_adam(grads)

    def _fused_adam(self, grads) -> None:
        b1, b2 = self.cfg.betas
        self.t_tensor.fill_(self.t)  # torch.optim increments the step before the fused call too
        for (lr, eps), members in self.groups.items():
            torch._fused_adam_(
                [self.params[i][r] for i, r in members], [grads[i][r] for i, r in members],
                [self.m[i][r] for i, r in members], [self.v[i][r] for i, r in members], [],
                [self.t_tensor] * len(members), lr=lr, beta1=b1, beta2=b2, weight_decay=0.0,
                eps=eps, amsgrad=False, maximize=False)

    def _plain_adam(self, grads) -> None:
        b1, b2 = self.cfg.betas
        bc1, bc2 = 1 - b1 ** self.t, math.sqrt(1 - b2 ** self.t)
        for p, g, m, v, f, e in zip(self.params, grads, self.m, self.v, self.factors, self.eps_factors):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bc2).add_(self.cfg.eps * e)
            p.sub_((m / denom).mul_(self.lr_tensor * (f / bc1)))

    @torch.no_grad()
    def freeze(self, replicas: list[int]) -> None:
        """Stop diverged replicas: zero their weights and state, LR 0."""
        for r in replicas:
            self.lrs[r] = 0.0
            for t in self.params + self.m + self.v:
                t[r] = 0.0
        self._group()


# ---------------------------------------------------------------- measuring

def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.pow(2).mean(dim=(1, 2)).sqrt()


class Recorder:
    """Per-layer scales on a fixed probe batch, at every `log_every` steps:
    act = RMS of the layer's output, dact = RMS of its change since init,
    upd = RMS of (mult * (W_t - W_0)) applied to the layer's current input."""

    def __init__(self, plan: NetPlan, weights, biases, probe: torch.Tensor):
        self.plan, self.probe = plan, probe
        self.w0 = [w.detach().clone() for w in weights]
        self.steps, self.act, self.dact, self.upd = [], [], [], []
        with torch.no_grad():
            _, self.h0, _ = forward(plan, weights, biases, probe, keep=True)

    @torch.no_grad()
    def record(self, step: int, weights, biases) -> None:
        _, outs, ins = forward(self.plan, weights, biases, self.probe, keep=True)
        self.steps.append(step)
        self.act.append(torch.stack([_rms(h) for h in outs], 1))
        self.dact.append(torch.stack([_rms(h - h0) for h, h0 in zip(outs, self.h0)], 1))
        upd = []
        for l, a, w, w0 in zip(self.plan.layers, ins, weights, self.w0):
            scale = l.mult * (self.plan.branch_mult if l.branch else 1.0)
            upd.append(_rms(torch.bmm(a, w - w0)) * scale)
        self.upd.append(torch.stack(upd, 1))


# ---------------------------------------------------------------- training

def _stacked_init(plan: NetPlan, seeds: list[int], replica_seed: list[int]):
    per_seed = {s: init_weights(plan, s) for s in seeds}
    weights = [torch.stack([per_seed[s][i] for s in replica_seed]).requires_grad_()
               for i in range(len(plan.layers))]
    biases = [torch.zeros(len(replica_seed), 1, l.fan_out).requires_grad_() for l in plan.layers]
    return weights, biases


@torch.no_grad()
def _evaluate(plan, weights, biases, x, y, replicas: int):
    logits = forward(plan, weights, biases, x.expand(replicas, *x.shape))
    loss = replica_loss(logits, y.expand(replicas, *y.shape))
    acc = (logits.argmax(-1) == y).float().mean(1)
    return loss, acc


def train_batched(plan: NetPlan, data: SpiralData, lrs: list[float], seeds: list[int],
                  cfg: TrainConfig = TrainConfig(),
                  on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Train every (lr, seed) pair as one batch; one result dict per pair (lr-major order)."""
    pairs = [(lr, s) for lr in lrs for s in seeds]
    replica_seed = [s for _, s in pairs]
    R = len(pairs)
    weights, biases = _stacked_init(plan, seeds, replica_seed)
    idx = {s: batch_indices(len(data.y_train), cfg, s) for s in seeds}
    idx = torch.stack([idx[s] for s in replica_seed], 1)         # (steps, R, B)
    opt = BatchedOptimizer(weights + biases,
                           [l.lr for l in plan.layers] + [l.bias_lr for l in plan.layers],
                           [l.eps for l in plan.layers] * 2,
                           [lr for lr, _ in pairs], cfg)
    probe = data.x_val[: cfg.probe_size].expand(R, -1, -1)
    rec = Recorder(plan, weights, biases, probe)
    rec.record(0, weights, biases)
    losses = torch.empty(cfg.steps, R)
    alive = torch.ones(R, dtype=torch.bool)
    diverged_at = [None] * R
    for t in range(cfg.steps):
        xb, yb = data.x_train[idx[t]], data.y_train[idx[t]]
        loss = replica_loss(forward(plan, weights, biases, xb), yb)
        grads = torch.autograd.grad(loss.sum(), weights + biases)
        opt.step(grads)
        losses[t] = loss.detach()
        bad = alive & ~torch.isfinite(loss.detach())
        if bad.any():
            frozen = bad.nonzero().flatten().tolist()
            for r in frozen:
                diverged_at[r] = t
            alive &= ~bad
            opt.freeze(frozen)
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.steps:
            rec.record(t + 1, weights, biases)
        if on_step:
            on_step(t + 1)
    train = _evaluate(plan, weights, biases, data.x_train, data.y_train, R)
    val = _evaluate(plan, weights, biases, data.x_val, data.y_val, R)
    return [_result(r, pairs[r], diverged_at[r], losses[:, r], rec, train, val, cfg)
            for r in range(R)]


def _finite(x: float):
    return x if math.isfinite(x) else None


def _result(r, pair, diverged_at, losses, rec: Recorder, train, val, cfg) -> dict:
    lr, seed = pair
    diverged = diverged_at is not None
    # mean training loss over each logging window (single mini-batch losses are noisy)
    window = [losses[max(0, s - cfg.log_every):s].mean().item() if s else losses[0].item()
              for s in rec.steps]
    curves = {"step": rec.steps, "train_loss": [_finite(v) for v in window]}
    for name in ("act", "dact", "upd"):
        curves[name] = [[_finite(v) for v in row[r].tolist()] for row in getattr(rec, name)]
    final = {} if diverged else {
        "train_loss": train[0][r].item(), "train_acc": train[1][r].item(),
        "val_loss": val[0][r].item(), "val_acc": val[1][r].item()}
    if any(not math.isfinite(v) for v in final.values()):
        # the training losses stayed finite but the final evaluation overflowed: diverged at the end
        diverged, diverged_at, final = True, cfg.steps, {}
    return {"lr": lr, "seed": seed, "diverged": diverged, "diverged_step": diverged_at,
            "final": final, "curves": curves}


# ---------------------------------------------------------------- reference

class ReferenceNet(torch.nn.Module):
    """The same network as an ordinary nn.Module (one run), for checking."""

    def __init__(self, plan: NetPlan, weights: list[torch.Tensor]):
        super().__init__()
        self.plan = plan
        self.linears = torch.nn.ModuleList()
        for l, w in zip(plan.layers, weights):
            lin = torch.nn.Linear(l.fan_in, l.fan_out)
            with torch.no_grad():
                lin.weight.copy_(w.T)
                lin.bias.zero_()
            self.linears.append(lin)

    def forward(self, x):
        layers = self.plan.layers
        h = self.linears[0].bias + layers[0].mult * (x @ self.linears[0].weight.T)
        for l, lin in zip(layers[1:], self.linears[1:]):
            z = lin.bias + l.mult * (torch.relu(h) @ lin.weight.T)
            h = h + self.plan.branch_mult * z if l.branch else z
        return h

    def param_groups(self, lr: float, cfg: TrainConfig) -> list[dict]:
        groups = []
        for l, lin in zip(self.plan.layers, self.linears):
            groups.append({"params": [lin.weight], "lr": lr * l.lr, "eps": cfg.eps * l.eps})
            groups.append({"params": [lin.bias], "lr": lr * l.bias_lr, "eps": cfg.eps * l.eps})
        return groups


def train_reference(plan: NetPlan, data: SpiralData, lr: float, seed: int,
                    cfg: TrainConfig = TrainConfig()) -> tuple[list[float], ReferenceNet]:
    """One run, step by step, with torch.optim: (per-step train losses, trained net)."""
    net = ReferenceNet(plan, init_weights(plan, seed))
    groups = net.param_groups(lr, cfg)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, betas=cfg.betas, foreach=False)
    else:
        opt = torch.optim.SGD(groups, foreach=False)
    idx = batch_indices(len(data.y_train), cfg, seed)
    losses = []
    for t in range(cfg.steps):
        xb, yb = data.x_train[idx[t]], data.y_train[idx[t]]
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, net

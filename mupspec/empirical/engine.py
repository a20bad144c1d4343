"""Batched training engine: every (LR x seed) replica of one network shape
trains as ONE batched computation.

Takes a `NetPlan` (per-layer init std, forward multiplier, LR and eps factors,
from `netplan.py`), a `SpiralData`, a list of learning rates and a list of
seeds; returns one result dict per (lr, seed).

How it batches: each weight is a stacked tensor of shape (R, fan_in, fan_out)
(R replicas), the forward pass is one batched matmul per layer, and the
backward pass is written out by hand (two more per layer) into buffers
allocated once: autograd would allocate every gradient afresh each step, and
at width 1024 those are hundreds of MB of page faults per step. The matmuls
(`kernels.py`) are one torch.bmm for small layers and one oneDNN call per
replica for large ones, where oneDNN is about twice as fast on this CPU.
The loss is each replica's mean cross-entropy, so every replica gets exactly
its own gradient. Adam/SGD update all replicas with a per-replica LR times the
layer's factor from the plan. Replicas with the same seed share init and
mini-batches, so a seed is a paired comparison across LRs.

Threads: the replicas are split into one shard per torch thread, each shard
trained by its own Python thread with single-threaded kernels (torch releases
the GIL inside kernels). On 2 cores this measured 1.5-9x faster than 2-thread
kernels on one shard: small per-replica matmuls barely parallelize inside a
kernel, and every parallel region pays a thread wake-up.

A replica whose loss becomes NaN/inf is recorded as diverged (with the step)
and frozen (weights and optimizer state zeroed, LR 0), so it cannot poison
the others; the batch trains on.

`train_reference` is the plain sequential version (nn.Module + torch.optim,
one run at a time) used by the equivalence test and the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from mupspec.empirical import kernels
from mupspec.empirical.data import SpiralData
from mupspec.empirical.kernels import batched_matmul, linear
from mupspec.empirical.netplan import NetPlan, init_weights


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 500
    batch: int = 32
    optimizer: str = "adam"      # "adam" or "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8            # base Adam eps, times each layer's eps factor
    log_every: int = 25          # steps between measurements on the probe batch
    probe_size: int = 128        # validation points used for activation measurements


def batch_indices(n_train: int, cfg: TrainConfig, seed: int) -> torch.Tensor:
    """(steps, batch) indices into the training set: the seed's mini-batch order."""
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    return torch.randint(n_train, (cfg.steps, cfg.batch), generator=gen)


def software() -> dict:
    """What computes a run: rounding-level changes (another matmul kernel,
    another torch) move training results measurably (docs/tutorial.md, §3),
    so every saved run records them."""
    from mupspec import __version__

    kernel = (f"oneDNN per replica for layers of >= {kernels.ONEDNN_MIN_WEIGHTS} weights, torch.bmm below"
              if kernels.ONEDNN_LINEAR is not None else "torch.bmm")
    return {"mupspec": __version__, "torch": torch.__version__, "matmul": kernel}


# ---------------------------------------------------------------- forward and backward

def forward(plan: NetPlan, weights, biases, x: torch.Tensor, keep: bool = False):
    """Logits (R, B, classes) for x (R, B, d_in); with keep, also every layer's
    pre-activation (the residual stream for branches) and each layer's input."""
    layers, outs, inputs = plan.layers, [], []
    h = linear(x, weights[0], biases[0], layers[0].mult)
    if keep:
        outs.append(h), inputs.append(x)
    for i in range(1, len(layers)):
        a = torch.relu(h)
        z = linear(a, weights[i], biases[i], layers[i].mult)
        h = torch.add(h, z, alpha=plan.branch_mult) if layers[i].branch else z
        if keep:
            outs.append(h), inputs.append(a)
    return (h, outs, inputs) if keep else h


def replica_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each replica: (R,)."""
    r, b, c = logits.shape
    return F.cross_entropy(logits.reshape(r * b, c), y.reshape(r * b), reduction="none").view(r, b).mean(1)


class Workspace:
    """One training step of R replicas, forward and backward, in buffers
    allocated once. After `backward`, `grads` holds per parameter (weights,
    then biases) one gradient tensor per replica."""

    def __init__(self, plan: NetPlan, replicas: int, batch: int, d_in: int):
        self.plan = plan
        new = lambda *shape: torch.empty(replicas, *shape)
        self.h = [new(batch, l.fan_out) for l in plan.layers]        # outputs (residual stream)
        self.a = [new(batch, l.fan_in) for l in plan.layers[1:]]     # ReLU outputs = next inputs
        self.z = [new(batch, l.fan_out) if l.branch else None for l in plan.layers]
        self.d_in = [new(batch, l.fan_in) for l in plan.layers[1:]]  # gradient wrt a layer's input
        # weight gradients: a stacked buffer where torch.bmm computes them, a fresh
        # tensor per replica and step where oneDNN does (it has no out=)
        self.fresh = [kernels.onednn_sized(l.fan_in, l.fan_out) for l in plan.layers]
        self.grad_w = [None if fresh else new(l.fan_in, l.fan_out) for l, fresh in zip(plan.layers, self.fresh)]
        self.grad_b = [new(1, l.fan_out) for l in plan.layers]
        # per parameter (weights, then biases), one gradient per replica: views built once
        self.grads = [[] if g is None else list(g) for g in self.grad_w] + [list(g) for g in self.grad_b]

    def forward(self, weights, biases, x: torch.Tensor) -> torch.Tensor:
        """`forward` above, same arithmetic up to rounding, into the buffers."""
        layers, bm = self.plan.layers, self.plan.branch_mult
        linear(x, weights[0], biases[0], layers[0].mult, out=self.h[0])
        for i in range(1, len(layers)):
            a = torch.clamp_min(self.h[i - 1], 0, out=self.a[i - 1])
            if layers[i].branch:
                z = linear(a, weights[i], biases[i], layers[i].mult, out=self.z[i])
                torch.add(self.h[i - 1], z, alpha=bm, out=self.h[i])
            else:
                linear(a, weights[i], biases[i], layers[i].mult, out=self.h[i])
        return self.h[-1]

    def backward(self, weights, x: torch.Tensor, grad_logits: torch.Tensor) -> None:
        """Gradients of sum(replica losses) given d(loss)/d(logits)."""
        layers, bm = self.plan.layers, self.plan.branch_mult
        grad_h = grad_logits
        for i in reversed(range(len(layers))):
            layer = layers[i]
            grad_z = grad_h * bm if layer.branch and bm != 1.0 else grad_h
            inp = x if i == 0 else self.a[i - 1]
            self._weight_grad(i, inp, grad_z)
            torch.sum(grad_z, 1, keepdim=True, out=self.grad_b[i])
            if i == 0:
                break
            grad_a = batched_matmul(grad_z, weights[i].transpose(1, 2), out=self.d_in[i - 1])
            if layer.mult != 1.0:
                grad_a.mul_(layer.mult)
            grad_pre = torch.ops.aten.threshold_backward(grad_a, self.a[i - 1], 0)  # ReLU'
            grad_h = grad_pre.add_(grad_h) if layer.branch else grad_pre

    def _weight_grad(self, i: int, inp: torch.Tensor, grad_z: torch.Tensor) -> None:
        """mult * inp^T @ grad_z per replica: layer i's weight gradient."""
        mult = self.plan.layers[i].mult
        if not self.fresh[i]:
            torch.baddbmm(self.grad_w[i], inp.transpose(1, 2), grad_z, beta=0, alpha=mult, out=self.grad_w[i])
            return
        grads = list(kernels.per_replica_matmul(inp.transpose(1, 2), grad_z))
        if mult != 1.0:
            torch._foreach_mul_(grads, mult)
        self.grads[i] = grads


def loss_and_grad(logits: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each replica's mean cross-entropy (R,), its gradient wrt the logits)."""
    logp = torch.log_softmax(logits, -1)
    loss = -(logp * onehot).sum(-1).mean(1)
    return loss, logp.exp_().sub_(onehot).div_(logits.shape[1])


# ---------------------------------------------------------------- optimizer

class BatchedOptimizer:
    """Adam or SGD over stacked replicas; step size = lr[r] * factor[param].

    `step(grads)` takes, per parameter, one gradient tensor per replica. The
    (parameter, replica) pairs that share a step size (and eps) form a group,
    updated by one call on lists of per-replica views: Adam through torch's
    fused kernel (one pass over p, g, m, v), SGD through `_foreach_add_`; the
    arithmetic is torch.optim's, at about the memory-bandwidth bound."""

    def __init__(self, params, factors, eps_factors, lrs: list[float], cfg: TrainConfig):
        self.params, self.factors, self.eps_factors, self.cfg = params, factors, eps_factors, cfg
        self.lrs = list(lrs)
        adam = cfg.optimizer == "adam"
        self.m = [torch.zeros_like(p) for p in params] if adam else []
        self.v = [torch.zeros_like(p) for p in params] if adam else []
        self.t = 0
        self.t_tensor = torch.zeros(())
        self.fused = adam and hasattr(torch, "_fused_adam_")
        self._group()

    def _group(self) -> None:
        """(param index, replica) pairs sharing one step size and eps; frozen replicas (LR 0) drop out."""
        groups: dict[tuple[float, float], list[tuple[int, int]]] = {}
        for i, (f, e) in enumerate(zip(self.factors, self.eps_factors)):
            for r, lr in enumerate(self.lrs):
                if lr * f != 0.0:
                    groups.setdefault((lr * f, self.cfg.eps * e), []).append((i, r))
        views = lambda tensors, members: [tensors[i][r] for i, r in members]
        self.groups = {key: (members, *[views(t, members) for t in (self.params, self.m, self.v) if t])
                       for key, members in groups.items()}

    @torch.no_grad()
    def step(self, grads: list[list[torch.Tensor]]) -> None:
        self.t += 1
        b1, b2 = self.cfg.betas
        self.t_tensor.fill_(self.t)  # torch.optim increments the step before the fused call too
        for (lr, eps), (members, p, *state) in self.groups.items():
            g = [grads[i][r] for i, r in members]
            if self.cfg.optimizer == "sgd":
                torch._foreach_add_(p, g, alpha=-lr)
            elif self.fused:
                torch._fused_adam_(p, g, *state, [], [self.t_tensor] * len(p), lr=lr, beta1=b1, beta2=b2,
                                   weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
            else:
                self._foreach_adam(p, g, *state, lr, eps)

    def _foreach_adam(self, p, g, m, v, lr: float, eps: float) -> None:
        """torch.optim.Adam's foreach arithmetic, for torch builds without the fused CPU kernel."""
        b1, b2 = self.cfg.betas
        bc1, bc2 = 1 - b1 ** self.t, math.sqrt(1 - b2 ** self.t)
        torch._foreach_lerp_(m, g, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, g, g, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bc2)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(p, m, denom, value=-lr / bc1)

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
    return torch.linalg.vector_norm(t, dim=(1, 2)) / math.sqrt(t.shape[1] * t.shape[2])


class Recorder:
    """Per-layer scales on a fixed probe batch, at every `log_every` steps:
    act = RMS of the layer's output, dact = RMS of its change since init,
    upd = RMS of (mult * (W_t - W_0)) applied to the layer's current input."""

    def __init__(self, plan: NetPlan, weights, biases, probe: torch.Tensor):
        self.plan, self.probe = plan, probe
        self.w0 = [w.detach().clone() for w in weights]
        self.dw = [torch.empty_like(w) for w in weights]   # W - W0, reused: a fresh one per record page-faults
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
        for l, a, w, w0, dw in zip(self.plan.layers, ins, weights, self.w0, self.dw):
            scale = l.mult * (self.plan.branch_mult if l.branch else 1.0)
            upd.append(_rms(batched_matmul(a, torch.sub(w, w0, out=dw))) * scale)
        self.upd.append(torch.stack(upd, 1))


# ---------------------------------------------------------------- training

def _stacked_init(plan: NetPlan, seeds: list[int], replica_seed: list[int]):
    per_seed = {s: init_weights(plan, s) for s in seeds}
    weights = [torch.stack([per_seed[s][i] for s in replica_seed]) for i in range(len(plan.layers))]
    biases = [torch.zeros(len(replica_seed), 1, l.fan_out) for l in plan.layers]
    return weights, biases


@torch.no_grad()
def _evaluate(plan, weights, biases, x, y, replicas: int):
    logits = forward(plan, weights, biases, x.expand(replicas, *x.shape))
    loss = replica_loss(logits, y.expand(replicas, *y.shape))
    acc = (logits.argmax(-1) == y).float().mean(1)
    return loss, acc


def train_batched(plan: NetPlan, data: SpiralData, lrs: list[float], seeds: list[int],
                  cfg: TrainConfig = TrainConfig(),
                  on_step: Callable[[int], None] | None = None, shards: int | None = None) -> list[dict]:
    """Train every (lr, seed) pair; one result dict per pair (lr-major order).
    The pairs are split into `shards` (default: torch's thread count) trained
    side by side, each on one thread; a replica's result does not depend on
    which shard it is in."""
    kernels.keep_freed_memory()
    pairs = [(lr, s) for lr in lrs for s in seeds]
    return kernels.in_shards(lambda some, step: _train_pairs(plan, data, some, cfg, step), pairs,
                             shards or torch.get_num_threads(), on_step)


@torch.no_grad()
def _train_pairs(plan: NetPlan, data: SpiralData, pairs: list[tuple[float, int]], cfg: TrainConfig,
                 on_step: Callable[[int], None] | None) -> list[dict]:
    """Train the given (lr, seed) pairs as one batch of replicas."""
    replica_seed = [s for _, s in pairs]
    seeds = sorted(set(replica_seed))
    R = len(pairs)
    weights, biases = _stacked_init(plan, seeds, replica_seed)
    idx = {s: batch_indices(len(data.y_train), cfg, s) for s in seeds}
    idx = torch.stack([idx[s] for s in replica_seed], 1)         # (steps, R, B)
    onehot = F.one_hot(data.y_train, int(data.y_train.max()) + 1).float()
    work = Workspace(plan, R, cfg.batch, data.x_train.shape[1])
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
        xb = data.x_train[idx[t]]
        loss, grad_logits = loss_and_grad(work.forward(weights, biases, xb), onehot[idx[t]])
        work.backward(weights, xb, grad_logits)
        opt.step(work.grads)
        losses[t] = loss
        bad = alive & ~torch.isfinite(loss)
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

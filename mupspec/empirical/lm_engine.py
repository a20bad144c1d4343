"""Batched training of small GPT language models: every (LR x seed) replica
of one shape trains as ONE computation.

Takes a bundled spec name, a model `Shape` and its base shape, `TextData`,
LRs and seeds; returns one result dict per (lr, seed) with train/validation
loss curves and coordinate statistics over training.

Parametrization comes only from the module `mupspec codegen` generates for the
spec: `parametrize(model, base_model, optimizer="adamw", ...)` gives the init
(rescaled per seed), the forward multipliers (its hooks, which run inside
`functional_call` too), the residual-branch multiplier, and per parameter the
LR, weight-decay and eps factors; `attention_scale` gives the logit scale.

How it batches: each parameter is stacked over the R replicas, (R, *shape);
the model's modules take stacked parameters (through
`torch.func.functional_call` on one parametrized template model) and compute
every replica in one batched product per layer; one backward pass of the sum
of the replicas' losses gives every replica its own gradient; then AdamW's
arithmetic on the stacks (torch._foreach_*) with a per-replica LR times the
parameter's factor (the equality test checks it step by step against a plain
model and torch.optim.AdamW). Replicas of one seed share
init and batches: a seed is a paired comparison across LRs.

A replica whose loss becomes non-finite, or exceeds both `DIVERGED_LOSS` and
twice its own loss at the first step, is recorded as diverged (with the step) and
frozen (parameters and moments zeroed, LR 0); the others train on.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from mupspec.empirical import kernels
from mupspec.empirical.text import VOCAB, TextData, even_starts, train_starts, windows

DIVERGED_LOSS = 10 * math.log(VOCAB)   # 10x the loss of a uniform prediction over bytes
RESIDUAL_BRANCHES = ["blocks.*.attn", "blocks.*.mlp"]


@dataclass(frozen=True)
class Shape:
    width: int           # d_model
    depth: int           # Transformer blocks
    heads: int = 4       # fixed: d_head grows with width, so the spec's attention rule matters
    context: int = 64
    tied: bool = False   # the readout is the token embedding (nanoGPT, GPT-2)


@dataclass(frozen=True)
class LMTrainConfig:
    steps: int = 200
    batch: int = 16
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup: int = 20          # linear warmup steps, then cosine decay to 10% of the LR
    log_every: int = 50       # steps between evaluations and coordinate statistics
    eval_windows: int = 32    # windows per split for the train/validation loss
    probe_windows: int = 4    # validation windows for the coordinate statistics


def lr_scale(step: int, cfg: LMTrainConfig) -> float:
    """The schedule's factor on the LR at 0-based `step` (LambdaLR semantics)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------- the model

# Every module below runs two ways: with its own parameters (one model, as
# `parametrize` and the reference loop see it) and, through functional_call, with
# parameters stacked over R replicas, (R, *shape), on inputs that lead with R.
# The stacked way is one batched product per layer for all replicas: no vmap,
# whose per-operation batching rules cost more than the products at these
# widths, and room for the fused causal attention kernel.

class _StackedProduct(torch.autograd.Function):
    """x @ w^T per replica, with the weight's gradient computed in the weight's
    own layout (autograd's bmm hands back a transposed one, which every
    elementwise pass of the optimizer would then read across its strides)."""

    @staticmethod
    def forward(x, w):
        return torch.bmm(x, w.transpose(1, 2))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return torch.bmm(grad, w), torch.bmm(grad.transpose(1, 2), x)


class Linear(nn.Linear):
    """nn.Linear (no bias); a stacked weight (R, out, in) takes inputs (R, ..., in)."""

    def forward(self, x):
        if self.weight.dim() == 2:
            return F.linear(x, self.weight)
        lead = x.shape[:-1]
        return _StackedProduct.apply(x.reshape(lead[0], -1, x.shape[-1]), self.weight).view(*lead, -1)


class Embedding(nn.Embedding):
    """nn.Embedding; a stacked table (R, n, d) takes indices (R, ...): replica r
    reads rows r*n .. r*n+n-1 of the tables laid end to end."""

    def forward(self, idx):
        if self.weight.dim() == 2:
            return F.embedding(idx, self.weight)
        R, n, d = self.weight.shape
        offset = torch.arange(R, device=idx.device).view(-1, *[1] * (idx.dim() - 1)) * n
        return F.embedding(idx + offset, self.weight.reshape(R * n, d))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm; stacked gains and biases (R, d) take inputs (R, ..., d)."""

    def forward(self, x):
        if self.weight.dim() == 1:
            return super().forward(x)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        normed = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        return torch.addcmul(self.bias.view(shape), normed, self.weight.view(shape))


class Attention(nn.Module):
    """Causal self-attention, separate q/k/v (each a hidden matrix for the spec),
    logits times `scale` (the spec's rule), PyTorch's fused kernel."""

    def __init__(self, width: int, heads: int, scale: float):
        super().__init__()
        self.q, self.k, self.v, self.proj = (Linear(width, width, bias=False) for _ in range(4))
        self.heads, self.scale = heads, scale

    def forward(self, x):
        *lead, t, c = x.shape
        split = lambda z: z.reshape(-1, t, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                           is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(*lead, t, c))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc, self.proj = Linear(width, 4 * width, bias=False), Linear(4 * width, width, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, scale: float):
        super().__init__()
        self.ln1, self.attn = LayerNorm(width), Attention(width, heads, scale)
        self.ln2, self.mlp = LayerNorm(width), MLP(width)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Byte-level GPT: token and position embeddings, pre-norm blocks, final
    LayerNorm, a readout of its own or tied to the token embedding. Tokens
    (B, T), or (R, B, T) with stacked parameters."""

    def __init__(self, shape: Shape, attn_scale: float, vocab: int = VOCAB):
        super().__init__()
        if shape.width % shape.heads:
            raise ValueError(f"width {shape.width} is not a multiple of {shape.heads} heads")
        self.wte, self.wpe = Embedding(vocab, shape.width), Embedding(shape.context, shape.width)
        self.blocks = nn.ModuleList(Block(shape.width, shape.heads, attn_scale) for _ in range(shape.depth))
        self.ln_f = LayerNorm(shape.width)
        self.lm_head = Linear(shape.width, vocab, bias=False)
        if shape.tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        t = idx.shape[-1]
        # positions (1, T), or (R, 1, T) with stacked tables: broadcast over the batch
        pos = torch.arange(t, device=idx.device).expand(*idx.shape[:-2], 1, t)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ---------------------------------------------------------------- parametrization

_GENERATED: dict = {}


def spec_module(name: str):
    """The generated module of a bundled spec (generated once per process)."""
    if name not in _GENERATED:
        from mupspec import bundled
        from mupspec.codegen import load_module
        from mupspec.resolve import load_spec

        _GENERATED[name] = load_module(load_spec(bundled.path(name)), f"specs/{name}.mup")
    return _GENERATED[name]


def build(spec: str, shape: Shape, base: Shape, seed: int, dtype=torch.float32, hypers: dict | None = None):
    """A GPT of `shape` initialized for `seed` and parametrized by the spec's
    generated module against the same architecture at the base width (and
    base depth, for specs with depth rules), with the spec's hyperparameters
    `hypers` (None: its defaults). Returns (model, plan)."""
    P = spec_module(spec)
    free = [w for w in P.WIDTH_SYMBOLS if w not in P.DERIVED_WIDTHS]   # d_ff, d_head follow from d_model
    widths, base_widths = {w: shape.width for w in free}, {w: base.width for w in free}
    # the base model's 1/sqrt(d_head) times the spec's logit rule at this width over the base's
    scale = P.attention_scale((base.width // base.heads) ** -0.5, widths=widths, base_widths=base_widths,
                              hypers=hypers)
    dims = {"widths": widths, "base_widths": base_widths, "hypers": hypers}
    if "query" in P.SUBROLES:   # a spec with a rule of its own for the query (gpt_mup: zero init)
        dims["roles"] = {"blocks.*.attn.q.weight": "query"}
    if P.DEPTH_SYMBOL:
        dims |= {"depth": shape.depth, "base_depth": base.depth}
    if "residual" in P.BLOCKS:
        dims["residual"] = RESIDUAL_BRANCHES
    with torch.device("meta"):   # only its shapes are read: which dimensions grow, also at the base width
        delta = GPT(Shape(2 * base.width, shape.depth, base.heads, shape.context, shape.tied), scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(shape, scale).to(dtype)
        # the same architecture at the base width (same depth: the depth rule anchors depth),
        # built for real: the generated module learns the model's own init law from it
        base_model = GPT(Shape(base.width, shape.depth, base.heads, shape.context, shape.tied), scale)
        plan = P.parametrize(model, base_model, optimizer="adamw", init="rescale", delta=delta, **dims)
    return model, plan


# ---------------------------------------------------------------- the optimizer

class BatchedAdamW:
    """AdamW over stacked replicas: parameter n of replica r steps with LR
    lrs[r] * schedule * lr_factor[n], weight decay wd * wd_factor[n] and eps
    eps * eps_factor[n], in torch.optim.AdamW's single-tensor arithmetic.
    Each operation runs on all parameters at once (torch._foreach_*): at small
    widths the step is dozens of tiny tensors, where per-tensor dispatch
    dominates."""

    def __init__(self, params: dict, factors: dict, lrs: list[float], cfg: LMTrainConfig):
        self.names = list(params)
        self.factors, self.lrs, self.cfg = factors, list(lrs), cfg
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.eps = [cfg.eps * factors[n][2] for n in self.names]
        self.decayed = [n for n in self.names if cfg.weight_decay * factors[n][1]]
        self.t = 0
        self._lr_views()

    def _lr_views(self) -> None:
        """Per parameter, the replicas' base LRs times its factor, shaped (R, 1, ...) to broadcast."""
        def view(n):
            like = self.m[n]
            lrs = torch.tensor(self.lrs, dtype=like.dtype, device=like.device) * self.factors[n][0]
            return lrs.view(-1, *[1] * (like.dim() - 1))
        self.lr = {n: view(n) for n in self.names}

    @torch.no_grad()
    def step(self, params: dict, grads: dict, scale: float) -> None:
        self.t += 1
        b1, b2 = self.cfg.betas
        bc1, bc2_sqrt = 1 - b1 ** self.t, (1 - b2 ** self.t) ** 0.5
        p, g = [params[n] for n in self.names], [grads[n] for n in self.names]
        m, v = [self.m[n] for n in self.names], [self.v[n] for n in self.names]
        if self.decayed:   # p *= 1 - lr * wd (decoupled), the group LR torch would hold
            wd = [self.cfg.weight_decay * self.factors[n][1] * scale for n in self.decayed]
            keep = torch._foreach_mul([self.lr[n] for n in self.decayed], wd)
            torch._foreach_neg_(keep)
            torch._foreach_add_(keep, 1.0)
            torch._foreach_mul_([params[n] for n in self.decayed], keep)
        torch._foreach_lerp_(m, g, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, g, g, value=1 - b2)
        # p -= lr/bc1 * m / (sqrt(v)/bc2_sqrt + eps), as p -= m / ((sqrt(v) + eps*bc2_sqrt) / (lr/bc1 * bc2_sqrt)):
        # two passes fewer over the parameters (a frozen replica's lr 0 gives m/inf = 0)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, [e * bc2_sqrt for e in self.eps])
        torch._foreach_div_(denom, torch._foreach_mul([self.lr[n] for n in self.names], scale / bc1 * bc2_sqrt))
        torch._foreach_addcdiv_(p, m, denom, value=-1.0)

    @torch.no_grad()
    def freeze(self, params: dict, r: int) -> None:
        """Replica r diverged: zero its parameters and moments, LR 0."""
        self.lrs[r] = 0.0
        self._lr_views()
        for n in params:
            for t in (params[n], self.m[n], self.v[n]):
                t[r].zero_()


# ---------------------------------------------------------------- measurement

def _rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


def _stored_names(model) -> dict[str, str]:
    """Each parameter name -> the name its tensor is stored under
    (named_parameters() lists a tied tensor once: lm_head.weight -> wte.weight)."""
    first: dict[int, str] = {}
    return {n: first.setdefault(id(p), n) for n, p in model.named_parameters(remove_duplicate=False)}


def coordinate_stats(model, params: dict, init: dict, x: torch.Tensor) -> dict:
    """For one replica on probe inputs x: RMS of the logits, and per Linear /
    Embedding weight: its output (act), the output of its change since init
    on the same input (upd), its entries (w) and their change (dw)."""
    stats, handles, modules = {}, [], dict(model.named_modules())
    stored = _stored_names(model)

    def hook(name):
        def record(module, inputs, output):
            key = stored[name + ".weight"]
            w, w0 = params[key], init[key]
            raw = F.embedding if isinstance(module, nn.Embedding) else F.linear
            delta = w - w0
            # the generated module applies a multiplier on the input (pre-hook) or the
            # output (hook): read the scale off the output, wherever it was applied
            plain = _rms(raw(inputs[0], w))
            scale = _rms(output) / plain if plain > 0 else 0.0
            stats[name] = {"act": _rms(output), "upd": scale * _rms(raw(inputs[0], delta)),
                           "w": _rms(w), "dw": _rms(delta)}
        return record

    for name, module in modules.items():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            logits = functional_call(model, params, (x,))
    finally:
        for h in handles:
            h.remove()
    return {"logits": _rms(logits), "modules": stats}


# ---------------------------------------------------------------- training

def software(device: str, dtype: torch.dtype) -> dict:
    import platform

    from mupspec import __version__

    name = torch.cuda.get_device_name() if str(device).startswith("cuda") else "cpu"
    return {"mupspec": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": name, "dtype": str(dtype)}


def _loss(model):
    def loss(params, x, y):
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss


def _replica_losses(model):
    """Per replica, the mean cross-entropy of its tokens: parameters stacked
    (R, ...), tokens (R, B, T). Replicas share no operation, so the gradient of
    the sum is every replica's own gradient."""
    def losses(params, x, y):
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="none").view(x.shape[0], -1).mean(1)
    return losses


def train_batched(spec: str, shape: Shape, base: Shape, data: TextData, lrs, seeds, cfg: LMTrainConfig,
                  device: str = "cpu", dtype=torch.float32,
                  on_step: Callable[[int], None] | None = None, hypers: dict | None = None) -> list[dict]:
    """Train every (lr, seed) pair of one shape together (the spec's
    hyperparameters set to `hypers`); one result per pair."""
    return train_runs(spec, shape, base, data, [(lr, s) for lr in lrs for s in seeds], cfg, device, dtype,
                      on_step, hypers)


def train_runs(spec: str, shape: Shape, base: Shape, data: TextData, pairs: list[tuple[float, int]],
               cfg: LMTrainConfig, device: str = "cpu", dtype=torch.float32,
               on_step: Callable[[int], None] | None = None, hypers: dict | None = None,
               shards: int | None = None, max_replicas: int | None = None) -> list[dict]:
    """Train the given (lr, seed) runs of one shape; one result per run, in order.
    At most `max_replicas` runs train at once (default: all), in consecutive
    groups. On a CPU the runs of a group are split into `shards` (default:
    torch's thread count) trained side by side, each one computation on one
    thread: on a few cores that beats one computation on all of them, whose
    small operations split badly across threads (docs/lm-study.md, section 8).
    A run's result depends on neither its group nor its shard."""
    if shards is None:
        shards = 1 if str(device).startswith("cuda") else torch.get_num_threads()
    spec_module(spec)   # generated once, before shards share the cache
    train = lambda some, step: _train_shard(spec, shape, base, data, some, cfg, device, dtype,  # noqa: E731
                                            step, hypers)
    return in_groups(lambda group, step: kernels.in_shards(train, group, shards, step), pairs,
                     max_replicas or len(pairs), on_step, cfg.steps)


def in_groups(train: Callable, pairs: list, size: int, on_step: Callable[[int], None] | None, steps: int) -> list:
    """train(group, on_step) over consecutive groups of at most `size` pairs;
    the results in the order of `pairs`. A group that runs out of GPU memory is
    trained again as groups of half its size: the estimate that chose `size`
    (replica_bytes) is rough, the GPU's answer exact. on_step sees the steps of
    all groups as one run of `steps` steps, for a progress bar."""
    results: list = []
    while len(results) < len(pairs):
        group, done = pairs[len(results):len(results) + size], len(results)
        report = None if on_step is None else \
            lambda t, done=done, n=len(group): on_step((done * steps + n * t) // len(pairs))
        try:
            results += train(group, report)
        except torch.cuda.OutOfMemoryError:
            if len(group) == 1:
                raise
            size = (len(group) + 1) // 2
            torch.cuda.empty_cache()
    return results


# ---------------------------------------------------------------- memory

# What one replica holds at its peak, estimated to choose how many of a shape's
# runs train at once. Measured on a CPU as the growth of the peak resident set
# (VmHWM) per replica, widths 64-1024, 2-16 blocks, 512 and 4096 tokens a batch:
# about 30 float32 per unit of width, block and token are kept for the backward
# pass. The constants put the estimate 1.1-1.5x above every measurement.
ACTIVATION_FLOATS = 40    # per unit of width, block and token of the batch
EMBEDDING_FLOATS = 16     # per unit of width and token outside the blocks
LOGIT_FLOATS = 8          # per vocabulary entry and token: logits, log-probabilities, their gradients
PARAMETER_FLOATS = 6      # per parameter: value, gradient, Adam's two moments, the initial copy, an update


def replica_bytes(shape: Shape, batch: int) -> int:
    """Estimated peak memory of one replica training `shape` at `batch` windows a step."""
    params = 12 * shape.depth * shape.width ** 2 + (2 - shape.tied) * VOCAB * shape.width \
        + shape.context * shape.width
    per_token = (ACTIVATION_FLOATS * shape.depth + EMBEDDING_FLOATS) * shape.width + LOGIT_FLOATS * VOCAB
    return 4 * (PARAMETER_FLOATS * params + batch * shape.context * per_token)


def available_bytes(device: str) -> int:
    """Memory free for training now: the GPU's free memory, or the system's
    MemAvailable (free and reclaimable)."""
    if str(device).startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


_BUILDING = threading.Lock()


def _train_shard(spec: str, shape: Shape, base: Shape, data: TextData, pairs: list[tuple[float, int]],
                 cfg: LMTrainConfig, device: str, dtype, on_step: Callable[[int], None] | None,
                 hypers: dict | None) -> list[dict]:
    """Train the given runs as one computation."""
    seeds = list(dict.fromkeys(s for _, s in pairs))
    with _BUILDING:   # build seeds torch's global generator: one shard at a time
        built = {s: build(spec, shape, base, s, dtype, hypers) for s in seeds}
    model, plan = built[seeds[0]]
    # stack on the CPU first: the template is one of the built models, moved only afterwards
    params = {n: torch.stack([dict(built[s][0].named_parameters())[n].detach() for _, s in pairs]).to(device)
              for n, _ in model.named_parameters()}
    model.to(device)   # the template: its hooks run, its own parameters are never used
    init = {n: p.clone() for n, p in params.items()}
    for p in params.values():
        p.requires_grad_()
    factors = {r.name: (r.lr_factor, r.wd_factor, r.eps_factor) for r in plan}
    opt = BatchedAdamW(params, factors, [lr for lr, _ in pairs], cfg)
    stream, val_stream = data.train.to(device), data.val.to(device)
    starts = torch.stack([train_starts(data, cfg.steps, cfg.batch, s) for _, s in pairs]).to(device)
    losses_of = _replica_losses(model)
    R = len(pairs)
    evals = {"train": windows(stream, even_starts(stream, data.context, cfg.eval_windows), data.context),
             "val": windows(val_stream, even_starts(val_stream, data.context, cfg.eval_windows), data.context)}
    evals = {k: tuple(t.expand(R, *t.shape) for t in xy) for k, xy in evals.items()}   # the same windows for all
    probe = windows(val_stream, even_starts(val_stream, data.context, cfg.probe_windows), data.context)[0]
    curves = {"step": [], "train_loss": [], "val_loss": []}
    batch_loss = []   # per step, per replica: the training loss of the step's batch
    coords: list[list[dict]] = [[] for _ in range(R)]
    diverged: list[int | None] = [None] * R

    def measure(step: int) -> None:
        with torch.no_grad():
            losses = {k: losses_of(params, *xy).tolist() for k, xy in evals.items()}
            curves["step"].append(step)
            for k in ("train", "val"):
                curves[f"{k}_loss"].append(losses[k])
            for r in range(R):
                if diverged[r] is None:
                    one = lambda d: {n: t[r] for n, t in d.items()}  # noqa: E731
                    coords[r].append({"step": step} | coordinate_stats(model, one(params), one(init), probe))

    measure(0)
    for t in range(cfg.steps):
        x, y = windows(stream, starts[:, t], data.context)
        loss = losses_of(params, x, y)
        grads = dict(zip(params, torch.autograd.grad(loss.sum(), list(params.values()))))
        loss = loss.detach()
        batch_loss.append(loss.tolist())
        if t == 0:   # a replica that starts above the limit (a tied readout's large logits) may train down;
            # twice its first loss leaves room for the batches' spread near init (a few %)
            ceiling = (2 * torch.nan_to_num(loss, nan=DIVERGED_LOSS, posinf=DIVERGED_LOSS)).clamp(min=DIVERGED_LOSS)
        for r in torch.nonzero(~torch.isfinite(loss) | (loss > ceiling)).flatten().tolist():
            if diverged[r] is None:
                diverged[r] = t
                opt.freeze(params, r)
                grads = {n: g.index_fill(0, torch.tensor([r], device=g.device), 0.0) for n, g in grads.items()}
        opt.step(params, grads, lr_scale(t, cfg))
        if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.steps:
            measure(t + 1)
        if on_step:
            on_step(t + 1)
    return [_result(pairs[r], r, curves, [row[r] for row in batch_loss], coords[r], diverged[r]) for r in range(R)]


def _result(pair, r: int, curves: dict, batch_loss: list[float], coords: list[dict], diverged_at: int | None) -> dict:
    lr, seed = pair
    per = {k: [row[r] for row in v] for k, v in curves.items() if k != "step"}
    ok = diverged_at is None
    final = {k: per[k][-1] if ok else None for k in per}
    per["batch_loss"] = batch_loss
    return {"lr": lr, "seed": seed, "diverged": not ok, "diverged_step": diverged_at, "final": final,
            "curves": {"step": curves["step"], **{k: [x if math.isfinite(x) else None for x in v]
                                                   for k, v in per.items()}},
            "coords": coords}


def train_reference(spec: str, shape: Shape, base: Shape, data: TextData, lr: float, seed: int,
                    cfg: LMTrainConfig, dtype=torch.float32, hypers: dict | None = None):
    """The plain loop the batched engine must equal: one nn.Module, the generated
    module's `make_optimizer` (torch.optim.AdamW), LambdaLR, the same init and
    batches. Returns (per-step losses, final parameters)."""
    P = spec_module(spec)
    model, plan = build(spec, shape, base, seed, dtype, hypers)
    opt = P.make_optimizer(model, plan, lr=lr, weight_decay=cfg.weight_decay, eps=cfg.eps, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_scale(t, cfg))
    starts = train_starts(data, cfg.steps, cfg.batch, seed)
    losses = []
    for t in range(cfg.steps):
        x, y = windows(data.train, starts[t], data.context)
        loss = _loss(model)(dict(model.named_parameters()), x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}


"""Per-layer numbers of one network shape, read from a spec: the input to the
batched engine (`engine.py`).

A `NetPlan` lists, for each linear layer of a plain or residual MLP, its init
std, forward multiplier, LR and Adam-eps factors. Every number is anchored at a
base shape (base_width, base_depth): value(n) = standard value x rule(n)/rule(n0),
so at the base shape every spec is SP with the same LR and the specs differ only
in how they scale away from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from mupspec import ir
from mupspec.numeric import class_fans, layer_value


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


def plan_from_codegen(spec: ir.Spec, *, arch: str, width: int, depth: int, d_in: int, d_out: int,
                      optimizer: str = "adam", base_width: int = 64, base_depth: int = 4) -> NetPlan:
    """The same plan, read from the module `mupspec codegen` generates for the
    spec (its `parametrize` on nn.Linear stacks at the target and base width;
    for a residual MLP every hidden Linear is a residual branch): the engine's
    per-layer numbers then come from the code users run."""
    from mupspec.codegen import load_module

    generated = _CODEGEN.setdefault(spec.name, load_module(spec, f"{spec.name}.mup"))
    numeric = plan_from_spec(spec, arch=arch, width=width, depth=depth, d_in=d_in, d_out=d_out,
                             optimizer=optimizer, base_width=base_width, base_depth=base_depth)
    stack = lambda n: torch.nn.ModuleList(torch.nn.Linear(a, b, device="meta") for a, b in
                                          [(d_in, n)] + [(n, n)] * (len(numeric.layers) - 2) + [(n, d_out)])
    dims = {"widths": {w: width for w in spec.widths}, "base_widths": {w: base_width for w in spec.widths}}
    if spec.depth:
        dims |= {"depth": depth, "base_depth": base_depth}
    if spec.block("residual") is not None:
        dims["residual"] = [str(i) for i, layer in enumerate(numeric.layers) if layer.branch]
    plan = generated.parametrize(stack(width), stack(base_width), optimizer=optimizer, init="none",
                                 delta=stack(2 * base_width), **dims)  # delta: what grows, even at the base width
    layers = []
    for i, layer in enumerate(numeric.layers):
        w, b = plan[f"{i}.weight"], plan[f"{i}.bias"]
        layers.append(replace(layer, init_std=math.sqrt(w.init_ratio / w.base_fan_in), mult=w.mult,
                              lr=w.lr_factor, bias_lr=b.lr_factor, eps=w.eps_factor))
    return replace(numeric, layers=tuple(layers), branch_mult=plan.branch_mult if arch == "resmlp" else 1.0)


_CODEGEN: dict = {}

"""Stage 4a: real networks built from a spec.

Takes a resolved `ir.Spec` and sizes (width, depth, input/output dims) and
returns a small torch module whose every parameter is initialized, multiplied
and given a learning rate by its layer class, as the spec says at that width:
- `mlp`: input -> (depth - 1) hidden layers -> output, ReLU between
  (depth = number of hidden layers of `width` units, so depth + 1 weights);
- `residual` / `residual-prenorm`: input -> depth residual blocks
  x + branch * mult * W relu(norm(x)) -> output, `norm` the identity (no-norm)
  or an RMS norm with a gain of the spec's `norm` class (pre-norm); the branch
  multiplier and branch LR factor come from the spec's `residual` block.

The per-class numbers come from `mupspec.numeric.layer_value`, i.e. absolute
values at this width (not anchored at a base width): a scaling experiment
compares widths, so only the ratio between widths matters. The network keeps
a list of `Layer` records (class, weight, bias, multipliers) so that the
measurement stage can read every layer's input and output without hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mupspec import ir
from mupspec.numeric import class_fans, layer_value

ARCHS = ("mlp", "residual", "residual-prenorm")


@dataclass(frozen=True)
class ClassScale:
    """One parameter's rules evaluated at concrete sizes."""

    std: float
    mult: float
    lr: dict[str, float]
    eps: float


def class_scale(spec: ir.Spec, kind: str, fan_in: float, fan_out: float, width: float,
                depth: float | None) -> ClassScale:
    def value(field_name: str) -> float:
        return layer_value(spec, kind, field_name, fan_in=fan_in, fan_out=fan_out, width=width, depth=depth)

    var = 1.0 if kind == "norm" else value("init.var")
    return ClassScale(std=math.sqrt(max(var, 0.0)), mult=value("mult"),
                      lr={opt: value(f"lr.{opt}") for opt in ir.OPTIMIZERS}, eps=value("eps.adam"))


def residual_scale(spec: ir.Spec, width: float, depth: float) -> ClassScale:
    """Branch multiplier and branch LR factor; 1 when the spec has no residual block."""
    if spec.block("residual") is None:
        return ClassScale(std=0.0, mult=1.0, lr={opt: 1.0 for opt in ir.OPTIMIZERS}, eps=1.0)
    return class_scale(spec, "residual", 1.0, width, width, depth)


@dataclass
class Layer:
    """A linear map `mult * W x + bias_mult * b` of one class."""

    name: str
    kind: str  # input | hidden | output
    weight: torch.nn.Parameter
    scale: ClassScale
    bias: torch.nn.Parameter | None = None
    bias_scale: ClassScale | None = None
    branch: float = 1.0  # residual branch multiplier (hidden layers of residual nets)
    branch_lr: dict[str, float] = field(default_factory=dict)
    norm_gain: torch.nn.Parameter | None = None
    norm_scale: ClassScale | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = (x @ self.weight.T) * self.scale.mult
        if self.bias is not None:
            out = out + self.bias * self.bias_scale.mult
        return out


@dataclass(frozen=True)
class Arch:
    kind: str = "mlp"
    d_in: int = 16
    d_out: int = 4
    bias: bool = True


class SpecNet(torch.nn.Module):
    """A network whose parameters follow `spec` at `width` and `depth`."""

    def __init__(self, spec: ir.Spec, arch: Arch, width: int, depth: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if arch.kind not in ARCHS:
            raise ValueError(f"unknown architecture {arch.kind!r}; expected one of {ARCHS}")
        self.arch, self.width, self.depth = arch, width, depth
        self.layers: list[Layer] = []
        sym_depth = float(depth) if spec.depth else None
        residual = arch.kind != "mlp"
        n_hidden = depth if residual else depth - 1
        branch = residual_scale(spec, width, depth) if residual else None
        shapes = [("input", arch.d_in, width)] + [("hidden", width, width)] * n_hidden + [("output", width, arch.d_out)]
        for index, (kind, fan_in, fan_out) in enumerate(shapes):
            scale = class_scale(spec, kind, fan_in, fan_out, width, sym_depth)
            weight = self._param(f"w{index}", scale.std * torch.randn(fan_out, fan_in, generator=generator, dtype=dtype))
            layer = Layer(f"{kind}{index}" if kind == "hidden" else kind, kind, weight, scale)
            if arch.bias and kind != "output":
                bscale = class_scale(spec, "bias", *class_fans("bias", fan_out, 1, 1), width, sym_depth)
                layer.bias = self._param(f"b{index}", bscale.std * torch.randn(fan_out, generator=generator, dtype=dtype))
                layer.bias_scale = bscale
            if kind == "hidden" and residual:
                layer.branch, layer.branch_lr = branch.mult, branch.lr
                if arch.kind == "residual-prenorm":
                    layer.norm_scale = class_scale(spec, "norm", 1.0, width, width, sym_depth) \
                        if spec.block("norm") else ClassScale(1.0, 1.0, {o: 1.0 for o in ir.OPTIMIZERS}, 1.0)
                    layer.norm_gain = self._param(f"g{index}", torch.ones(width, dtype=dtype))
            self.layers.append(layer)

    def _param(self, name: str, value: torch.Tensor) -> torch.nn.Parameter:
        param = torch.nn.Parameter(value)
        self.register_parameter(name, param)
        return param

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """`record`, when given, receives (layer, layer input, layer output)
        for every layer; for residual blocks the input is the branch's
        post-norm, post-ReLU vector and the output the new residual stream."""
        residual = self.arch.kind != "mlp"
        h = x
        for layer in self.layers:
            if layer.kind == "hidden" and residual:
                z = h
                if layer.norm_gain is not None:
                    z = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-12) * (layer.norm_gain * layer.norm_scale.mult)
                inp = torch.relu(z)
                out = h + layer.branch * layer.apply(inp)
            else:
                inp = h if layer.kind == "input" or residual else torch.relu(h)
                out = layer.apply(inp)
            if record is not None:
                record.append((layer, inp, out))
            h = out
        return h

    def param_groups(self, optimizer: str, base_lr: float, base_eps: float = 1e-12) -> list[dict]:
        """One group per parameter: LR = base_lr x the spec's LR for its class
        (x the residual branch's LR factor inside a branch); Adam eps scaled by
        the class's `eps.adam`."""
        groups: dict[tuple[float, float], list] = {}  # parameters sharing LR and eps share a group
        for layer in self.layers:
            factor = layer.branch_lr.get(optimizer, 1.0)
            members = [(layer.weight, layer.scale), (layer.bias, layer.bias_scale), (layer.norm_gain, layer.norm_scale)]
            for param, scale in members:
                if param is not None:
                    key = (base_lr * scale.lr[optimizer] * factor, base_eps * scale.eps)
                    groups.setdefault(key, []).append(param)
        return [{"params": params, "lr": lr, "eps": eps} for (lr, eps), params in groups.items()]


def build(spec: ir.Spec, width: int, depth: int, *, arch: Arch = Arch(), seed: int = 0,
          dtype: torch.dtype = torch.float32) -> SpecNet:
    generator = torch.Generator().manual_seed(seed)
    return SpecNet(spec, arch, width, depth, generator, dtype)


# ---------------------------------------------------------------- through codegen


def codegen_supports(spec: ir.Spec, arch: Arch) -> bool:
    """The generated module places plain and residual MLPs (a spec with a
    residual block needs residual branches to put it on). It cannot hook a
    width-dependent multiplier onto a norm gain (only Linear/Conv/Embedding):
    pre-norm networks of such specs are built by `SpecNet` instead."""
    if arch.kind == "mlp":
        return spec.block("residual") is None
    if arch.kind == "residual-prenorm":
        block = "norm" if spec.block("norm") else "bias"
        mults = {layer_value(spec, block, "mult", fan_in=1, fan_out=w, width=w, depth=2.0) for w in (64, 1024)}
        return len(mults) == 1
    return True


class _Branch(torch.nn.Module):
    """One residual branch: linear(relu(norm(x))); codegen scales its output."""

    def __init__(self, width: int, bias: bool, prenorm: bool, dtype: torch.dtype):
        super().__init__()
        self.norm = torch.nn.RMSNorm(width, eps=1e-12, dtype=dtype) if prenorm else None
        self.linear = torch.nn.Linear(width, width, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.norm(x) if self.norm is not None else x))


class _ResidualMLP(torch.nn.Module):
    """inp -> depth x (h + branch(h)) -> out: the plain torch residual MLP."""

    def __init__(self, arch: Arch, width: int, depth: int, dtype: torch.dtype):
        super().__init__()
        self.inp = torch.nn.Linear(arch.d_in, width, bias=arch.bias, dtype=dtype)
        self.blocks = torch.nn.ModuleList(_Branch(width, arch.bias, arch.kind == "residual-prenorm", dtype)
                                          for _ in range(depth))
        self.out = torch.nn.Linear(width, arch.d_out, bias=False, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def plain_mlp(arch: Arch, width: int, depth: int, dtype: torch.dtype) -> torch.nn.Sequential:
    """The standard torch MLP (Linear/ReLU) that codegen parametrizes."""
    dims = [arch.d_in] + [width] * depth + [arch.d_out]
    mods: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        mods.append(torch.nn.Linear(a, b, bias=arch.bias and i < len(dims) - 2, dtype=dtype))
        if i < len(dims) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def mlp_factory(depth: int = 3, arch: Arch = Arch(), dtype: torch.dtype = torch.float64):
    """The built-in MLP as a model factory, `make_model(width) -> nn.Module`,
    for mupspec.coord_check (and `assert_coord_check`) like any user model."""
    def make_model(width: int) -> torch.nn.Module:
        return (_ResidualMLP if arch.kind != "mlp" else plain_mlp)(arch, width, depth, dtype)
    make_model.__name__ = f"{arch.kind}(depth={depth})"
    return make_model


class CodegenNet(SpecNet):
    """A plain torch MLP or residual MLP parametrized by the module `mupspec
    codegen` emits for the spec (`parametrize(init="normal",
    multipliers="hooks", residual=["blocks.*"])`, anchored at `base_width` and
    depth 1); init, multipliers, branch multiplier and LR/eps factors are the
    generated module's. `forward` reads the plan's multipliers so that each layer's
    input and output can be recorded; `self.model(x)` is the generated code's
    own forward (hooks) and gives the same output (tests/test_verify.py)."""

    def __init__(self, spec: ir.Spec, arch: Arch, width: int, depth: int, optimizer: str,
                 generator: torch.Generator, dtype: torch.dtype, base_width: int = 64, module=None):
        torch.nn.Module.__init__(self)
        from mupspec.codegen import load_module

        self.arch, self.width, self.depth = arch, width, depth
        P = self.generated = module or load_module(spec, f"{spec.name}.mup")
        residual = arch.kind != "mlp"
        build_model = _ResidualMLP if residual else plain_mlp
        self.model = build_model(arch, width, depth, dtype)
        names = self._linear_names(residual, depth)
        roles = {names[0][0]: "input", names[-1][0]: "output", "*norm.weight": "norm", "*.bias": "bias",
                 "*.weight": "hidden"}
        present = {"*norm.weight": any(norm for _, norm in names), "*.bias": arch.bias}
        roles = {k: v for k, v in roles.items() if present.get(k, True)}  # a pattern must match a parameter
        dims = {w: width for w in spec.widths}
        base_dims = {w: base_width for w in spec.widths}
        depths = {"depth": depth, "base_depth": 1} if spec.depth else {}  # anchored at depth 1
        branches = ["blocks.*"] if residual and spec.block("residual") is not None else None
        self.plan = P.parametrize(
            self.model, P.base_shapes(build_model(arch, base_width, depth, dtype)), optimizer=optimizer,
            roles=roles, widths=dims, base_widths=base_dims, init="normal", multipliers="hooks",
            generator=generator, residual=branches, **depths)
        params = dict(self.model.named_parameters())
        self.layers = []
        for index, (wname, norm) in enumerate(names):
            kind = "input" if index == 0 else "output" if index == len(names) - 1 else "hidden"
            layer = Layer(f"{kind}{index}" if kind == "hidden" else kind, kind, params[wname],
                          self._scale(wname, optimizer))
            bname = wname.rsplit(".", 1)[0] + ".bias"
            if kind != "output" and arch.bias:
                layer.bias, layer.bias_scale = params[bname], self._scale(bname, optimizer)
            if kind == "hidden" and residual:
                layer.branch = self.plan.branch_mult  # what the generated module's hook applies
            if norm is not None:
                layer.norm_gain, layer.norm_scale = params[norm], self._scale(norm, optimizer)
            self.layers.append(layer)

    def _linear_names(self, residual: bool, depth: int) -> list[tuple[str, str | None]]:
        """(weight name, norm gain name or None) of every linear, in order."""
        if not residual:
            count = sum(isinstance(m, torch.nn.Linear) for m in self.model)
            return [(f"{2 * i}.weight", None) for i in range(count)]
        prenorm = self.arch.kind == "residual-prenorm"
        return ([("inp.weight", None)] +
                [(f"blocks.{i}.linear.weight", f"blocks.{i}.norm.weight" if prenorm else None) for i in range(depth)] +
                [("out.weight", None)])

    def _scale(self, name: str, optimizer: str) -> ClassScale:
        record = self.plan[name]
        return ClassScale(std=record.init_std or 0.0, mult=record.mult, lr={optimizer: record.lr_factor},
                          eps=record.eps_factor)

    def param_groups(self, optimizer: str, base_lr: float, base_eps: float = 1e-12) -> list[dict]:
        return self.generated.param_groups(self.model, self.plan, lr=base_lr, eps=base_eps)


def build_codegen(spec: ir.Spec, width: int, depth: int, optimizer: str, *, arch: Arch = Arch(), seed: int = 0,
                  dtype: torch.dtype = torch.float32, module=None) -> CodegenNet:
    generator = torch.Generator().manual_seed(seed)
    return CodegenNet(spec, arch, width, depth, optimizer, generator, dtype, module=module)

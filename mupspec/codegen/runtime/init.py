"""Runtime part `init`: rescale the model's own tensors, or draw them, as the spec says.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.roles import _owner

# ---- RUNTIME (everything below is copied into each generated module) ----

def _default_var_ratio(module, pname, shape, base_shapes_, prefix):
    """How PyTorch's default init variance changes from base to target: Linear
    and Conv weights and their biases draw with variance ~ 1/fan_in of the
    weight (kaiming_uniform, a=sqrt(5)); nn.Embedding draws N(0, 1)."""
    if isinstance(module, torch.nn.Embedding):
        return 1.0
    if len(shape) >= 2:
        return math.prod(base_shapes_.get(prefix + pname, shape)[1:]) / math.prod(shape[1:])
    weight = getattr(module, "weight", None)
    if len(shape) == 1 and isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        base_weight = base_shapes_.get(prefix + "weight")
        if base_weight is not None:
            return math.prod(base_weight[1:]) / math.prod(weight.shape[1:])
    return 1.0


@torch.no_grad()
def _initialize(model, base, records, init, init_scale, generator):
    """init="normal": N(0, init_scale^2/base_fan_in * init_ratio), i.e. the
    standard 1/fan_in init at the base model; init="rescale": multiply the
    tensor already there (PyTorch's default init) so that its variance
    follows the spec instead of PyTorch's 1/fan_in -- microsoft/mup's way."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for record in records:
        if record.init_ratio is None:
            continue  # scalars and norm gains keep the init they have
        p = params[record.name]
        module, pname = _owner(modules, record.name)
        prefix = record.name[: len(record.name) - len(pname)]
        fold = record.mult if record.folded else 1.0
        if init == "normal":
            std = init_scale * math.sqrt(record.init_ratio / record.base_fan_in) * fold
            if std > 0.0:
                p.normal_(0.0, std, generator=generator)
            else:
                p.zero_()
            record.init_std = std
        else:
            default = _default_var_ratio(module, pname, record.shape, base, prefix)
            p.mul_(math.sqrt(record.init_ratio / default) * fold)
            record.init_std = float(p.float().std()) if p.numel() > 1 else abs(float(p.float().sum()))

"""Runtime part `multipliers`: forward multipliers as module hooks, instances of module-level
classes so that a hooked model pickles (torch.save(model)).

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.roles import _is_hf_conv1d, _owner
# ---- RUNTIME (everything below is copied into each generated module) ----


class _ScaleInput:
    """Forward pre-hook: the module sees mult * x (y = W (mult x) + b)."""

    def __init__(self, mult):
        self.mult = mult

    def __call__(self, module, args):
        return (args[0] * self.mult,) + tuple(args[1:])


class _ScaleOutput:
    """Forward hook: the module's output times mult (an embedding, a residual branch)."""

    def __init__(self, mult):
        self.mult = mult

    def __call__(self, module, args, output):
        return output * self.mult


class _AddBias:
    """Forward hook adding (mult-1)*bias, so that the bias enters as mult*bias."""

    def __init__(self, extra):
        self.extra = extra

    def __call__(self, module, args, output):
        shape = (-1,) + (1,) * (output.dim() - 2) if isinstance(module, torch.nn.modules.conv._ConvNd) else (-1,)
        return output + self.extra * module.bias.view(shape)


def _multiplier_hook(module, pname, mult):
    """(register method, hook) applying mult to the parameter `pname` of
    `module` in its forward, or None where no hook can."""
    linear = isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) or _is_hf_conv1d(module)
    if linear and pname == "weight":
        return module.register_forward_pre_hook, _ScaleInput(mult)
    if linear and pname == "bias":
        return module.register_forward_hook, _AddBias(mult - 1.0)
    if isinstance(module, torch.nn.Embedding) and pname == "weight":
        return module.register_forward_hook, _ScaleOutput(mult)
    return None


def _attach_multipliers(model, records):
    """Forward multipliers as module hooks: nothing is attached to a
    parameter, the state_dict is the plain model's, and torch.compile traces
    the hooks like any Python code. Linear/Conv (and HF Conv1D): y = W(m_W x)
    + m_b b; Embedding: m_W * E[x]. A tied tensor's multiplier is applied by
    each module that uses it, with that name's own role (MuSharedReadout)."""
    modules = dict(model.named_modules())
    handles = []
    for record in records:
        if record.mult == 1.0 or record.folded:
            continue
        module, pname = _owner(modules, record.name)
        hook = _multiplier_hook(module, pname, record.mult)
        if hook is None:
            raise ValueError(f"{record.name}: multiplier {record.mult:g} on a {type(module).__name__} cannot be "
                             "applied by a hook (only Linear, Conv, HF Conv1D and Embedding); use multipliers='fold'")
        register, fn = hook
        handles.append(register(fn))
    return handles

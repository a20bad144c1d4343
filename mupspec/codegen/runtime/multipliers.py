"""Runtime part `multipliers`: forward multipliers as module hooks.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

# ---- RUNTIME (everything below is copied into each generated module) ----

def _scale_input(mult):
    def hook(module, args):
        return (args[0] * mult,) + tuple(args[1:])
    return hook


def _scale_output(mult):
    def hook(module, args, output):
        return output * mult
    return hook


def _add_bias(extra):
    """Post-hook adding (mult-1)*bias, so that the bias enters as mult*bias."""
    def hook(module, args, output):
        shape = (-1,) + (1,) * (output.dim() - 2) if isinstance(module, torch.nn.modules.conv._ConvNd) else (-1,)
        return output + extra * module.bias.view(shape)
    return hook


def _attach_multipliers(model, records):
    """Forward multipliers as module hooks: nothing is attached to a
    parameter, the state_dict is the plain model's, and torch.compile traces
    the hooks like any Python code. Linear/Conv: y = W(m_W x) + m_b b;
    Embedding: m_W * E[x]."""
    modules = dict(model.named_modules())
    handles = []
    for record in records:
        if record.mult == 1.0 or record.folded:
            continue
        module, pname = _owner(modules, record.name)
        linear = isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
        if linear and pname == "weight":
            handles.append(module.register_forward_pre_hook(_scale_input(record.mult)))
        elif linear and pname == "bias":
            handles.append(module.register_forward_hook(_add_bias(record.mult - 1.0)))
        elif isinstance(module, torch.nn.Embedding) and pname == "weight":
            handles.append(module.register_forward_hook(_scale_output(record.mult)))
        else:
            raise ValueError(f"{record.name}: multiplier {record.mult:g} on a {type(module).__name__} cannot be "
                             "applied by a hook (only Linear, Conv and Embedding); use multipliers='fold'")
    return handles

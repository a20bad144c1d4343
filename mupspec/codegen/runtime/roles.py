"""Runtime part `roles`: which block of the spec governs each parameter, and its fans.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.spec_stub import BLOCKS

# ---- RUNTIME (everything below is copied into each generated module) ----

def base_shapes(model):
    """{name: shape} of a model's parameters: what parametrize needs of the
    base model (save it beside a checkpoint instead of building the base)."""
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _glob(pattern, text):
    """fnmatch-style match with `*` only (any run of characters)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]):
        return False
    pos, end = len(parts[0]), len(text) - len(parts[-1])
    for part in parts[1:-1]:
        found = text.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return pos <= end


def _owner(modules, name):
    prefix, _, pname = name.rpartition(".")
    return modules.get(prefix), pname


def _fans(module, pname, shape):
    """(fan_in, fan_out) in the spec's sense: a weight maps fan_in -> fan_out
    (nn.Embedding stores it transposed); a vector has fan_in 1."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    if isinstance(module, torch.nn.Embedding) and pname == "weight":
        return shape[0], shape[1]
    return math.prod(shape[1:]), shape[0]


def _is_norm(module):
    return module is not None and "Norm" in type(module).__name__


def _role_by_shape(name, shape, base, module, pname):
    """microsoft/mup's rule: the dimensions that differ from the base model
    grow with width; which ones grow decides the role."""
    if len(base) != len(shape):
        return None, f"{name}: shape {tuple(shape)} has a different rank from the base model's {tuple(base)}"
    grows = [a != b for a, b in zip(shape, base)]
    if _is_norm(module):
        return "norm", None
    if not any(grows):
        return "scalar", None
    if len(shape) == 1:
        return "bias", None
    if isinstance(module, torch.nn.Embedding) and pname == "weight":
        grows = [grows[1], grows[0]]  # (fan_out, fan_in) order, as for a Linear weight
    if any(grows[2:]):
        return None, (f"{name}: dimensions {[i for i, g in enumerate(grows) if g]} differ from the base "
                      f"model {tuple(base)}; only fan_in and fan_out may grow with width")
    out_grows, in_grows = grows[0], grows[1]
    return {(True, True): "hidden", (True, False): "input", (False, True): "output"}[(out_grows, in_grows)], None


def _role(name, shape, base, module, pname, patterns):
    if base is None:  # even with a pattern: without base sizes nothing can be anchored
        return None, f"{name}: not in the base model"
    for pattern, role in patterns:
        if _glob(pattern, name):
            return role, None
    return _role_by_shape(name, shape, base, module, pname)


def _block(role):
    if role == "scalar":
        return None
    if role == "norm" and "norm" not in BLOCKS:
        return "bias"  # vector-like parameters share the bias rules when a spec has no norm block
    return role

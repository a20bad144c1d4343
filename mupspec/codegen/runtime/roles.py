"""Runtime part `roles`: which rules govern each parameter: its class or sub-role, its
fan axes, and the names a tied tensor is used under.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.spec_stub import BLOCKS, RULES, SUBROLE_CLASSES, SUBROLES

# ---- RUNTIME (everything below is copied into each generated module) ----

AXIS_LABELS = ("out", "in", "stack")

# Default sub-roles by name, for specs that declare sub-roles: nanoGPT and HF GPT-2
# (wte, wpe, c_attn, c_proj, c_fc, lm_head), Llama-style (embed_tokens, q_proj, k_proj,
# v_proj, o_proj, gate_proj, up_proj, down_proj) and BERT-style (query, key, value).
# A default applies only where the sub-role's class is the one the shapes give.
NAME_SUBROLES = (
    ("*wte.weight", "token_embedding"), ("*embed_tokens.weight", "token_embedding"),
    ("*wpe.weight", "position_embedding"), ("*wpe", "position_embedding"),
    ("*q_proj.weight", "query"), ("*query.weight", "query"),
    ("*k_proj.weight", "key"), ("*key.weight", "key"),
    ("*v_proj.weight", "value"), ("*value.weight", "value"),
    ("*attn.c_proj.weight", "attn_out"), ("*o_proj.weight", "attn_out"),
    ("*mlp.c_fc.weight", "mlp_in"), ("*gate_proj.weight", "mlp_in"), ("*up_proj.weight", "mlp_in"),
    ("*mlp.c_proj.weight", "mlp_out"), ("*down_proj.weight", "mlp_out"),
    ("*lm_head.weight", "readout"),
    ("*router.weight", "router"), ("*experts*", "experts"),
)
# Fused parameters split along their fan_out axis into equal parts, one per sub-role.
NAME_FUSED = (("*c_attn.weight", ("query", "key", "value")),)


def base_shapes(model):
    """{name: shape} of a model's parameters, tied names included: what
    parametrize needs of the base model (save it beside a checkpoint)."""
    return {name: tuple(p.shape) for name, p in model.named_parameters(remove_duplicate=False)}


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


def _first_match(pairs, name):
    return next((value for pattern, value in pairs if _glob(pattern, name)), None)


def _owner(modules, name):
    prefix, _, pname = name.rpartition(".")
    return modules.get(prefix), pname


def _tensors(model):
    """[(parameter, [names])] in named_parameters() order: a tied tensor once,
    with every name it is registered under (remove_duplicate=False)."""
    out, index = [], {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in index:
            index[id(p)] = len(out)
            out.append((p, []))
        out[index[id(p)]][1].append(name)
    return out


def _role_class(role):
    return SUBROLES.get(role) or SUBROLE_CLASSES.get(role, role)


def _is_norm(module):
    return module is not None and "Norm" in type(module).__name__


def _is_hf_conv1d(module):
    """Hugging Face transformers' Conv1D (GPT-2): y = x @ W + b, W stored (fan_in, fan_out)."""
    return type(module).__name__ == "Conv1D" and not isinstance(module, torch.nn.Conv1d)


def _known_axes(module, pname, rank):
    """Axis labels fixed by the module type ("kernel": part of fan_in that may
    not grow), or None for a raw parameter."""
    if rank <= 1:
        return ("out",) * rank
    if pname != "weight":
        return None
    if isinstance(module, torch.nn.Embedding):
        return ("in", "out")
    if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
        return ("out", "in") + ("kernel",) * (rank - 2)
    if _is_hf_conv1d(module) and rank == 2:
        return ("in", "out")
    return None


def _axis_candidates(name, grows, declared):
    """Possible axis labels of a raw parameter from which dimensions grow, as
    microsoft/mup reads them: one growing dimension is vector-like (it is
    fan_out, the rest fan_in, like an embedding table); two are matrix-like,
    in either order (the caller keeps them only if both orders give the same
    plan). Returns (candidates, problem)."""
    if declared is not None:
        if len(declared) != len(grows) or any(a not in AXIS_LABELS for a in declared):
            return None, (f"{name}: fan_axes {tuple(declared)} must label each of its {len(grows)} dimensions "
                          f"with one of {AXIS_LABELS}")
        return [tuple(declared)], None
    growing = [i for i, g in enumerate(grows) if g]
    if len(growing) <= 1:
        return [tuple("out" if g else "in" for g in grows)], None
    if len(growing) == 2:
        first, second = growing
        orders = []
        for out_axis, in_axis in ((first, second), (second, first)):
            orders.append(tuple("out" if i == out_axis else "in" if i == in_axis else "stack"
                                for i in range(len(grows))))
        return orders, None
    return None, (f"{name}: {len(growing)} dimensions grow with width; declare which are fan_in, fan_out "
                  f"and stacked copies: fan_axes={{'{name}': (...)}} with labels from {AXIS_LABELS}")


def _fans(shape, axes):
    """(fan_in, fan_out) in the spec's sense: a weight maps fan_in -> fan_out;
    a vector has fan_in 1; stacked copies (experts) count in neither."""
    fan_in = math.prod(n for n, a in zip(shape, axes) if a in ("in", "kernel"))
    fan_out = math.prod(n for n, a in zip(shape, axes) if a == "out")
    return fan_in, fan_out


def _class_by_growth(name, shape, axes, grows, module):
    """microsoft/mup's rule: the dimensions that differ from the base model
    grow with width; whether fan_in and/or fan_out grow decides the class."""
    if _is_norm(module):
        return "norm", None
    if not any(grows):
        return "scalar", None
    if len(shape) == 1:
        return "bias", None
    bad = [i for i, (a, g) in enumerate(zip(axes, grows)) if g and a in ("kernel", "stack")]
    if bad:
        return None, (f"{name}: dimensions {bad} grow with width but are not fan_in or fan_out "
                      f"(axes {axes}); only fan_in and fan_out may grow with width")
    in_grows = any(g for a, g in zip(axes, grows) if a == "in")
    out_grows = any(g for a, g in zip(axes, grows) if a == "out")
    return {(True, True): "hidden", (True, False): "input", (False, True): "output"}[(out_grows, in_grows)], None


def _default_subrole(name, role, module, pname):
    """A sub-role the spec declares, by name, where its class agrees with the shapes."""
    if role == "norm" and _is_norm(module):
        sub = {"weight": "norm_gain", "bias": "norm_bias"}.get(pname)
    else:
        sub = _first_match(NAME_SUBROLES, name)
    return sub if sub in SUBROLES and SUBROLES[sub] == role else role


def _fused(name, role, shape, axes, declared):
    """[(sub-role, start, stop)] along the fan_out axis for a fused parameter
    (e.g. nanoGPT's c_attn: query | key | value), or None."""
    parts = declared if declared is not None else _first_match(NAME_FUSED, name)
    if parts is None or (declared is None and (not all(_role_class(p) == role for p in parts)
                                               or not any(p in SUBROLES for p in parts))):
        return None, None
    out_axes = [i for i, a in enumerate(axes) if a == "out"]
    if len(out_axes) != 1 or shape[out_axes[0]] % len(parts):
        return None, f"{name}: cannot split fan_out of shape {shape} (axes {axes}) into {len(parts)} equal parts"
    size = shape[out_axes[0]] // len(parts)
    return (out_axes[0], [(p, i * size, (i + 1) * size) for i, p in enumerate(parts)]), None


def _rules_key(role):
    """The RULES key a role reads (None for scalar): a sub-role has its own
    entries; a norm falls back to the bias rules when the spec has no norm block."""
    if role == "scalar":
        return None
    if role in SUBROLES:
        return role
    if role in SUBROLE_CLASSES:  # a sub-role the spec has no block for follows its class
        return _rules_key(SUBROLE_CLASSES[role])
    if role == "norm" and "norm" not in BLOCKS:
        return "bias"  # vector-like parameters share the bias rules when a spec has no norm block
    return role


def _has_rules(key):
    return key in BLOCKS or (key, "init.var") in RULES or (key in SUBROLES and SUBROLES[key] in BLOCKS)

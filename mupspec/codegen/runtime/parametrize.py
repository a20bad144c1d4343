"""Runtime part `parametrize`: parametrize(): roles, rule factors, residual branches, init and hooks, in that order.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.init import _initialize
from mupspec.codegen.runtime.multipliers import _attach_multipliers, _scale_output
from mupspec.codegen.runtime.plan import OPTIMIZERS, ROLES, ParamPlan, Plan
from mupspec.codegen.runtime.roles import _block, _fans, _glob, _owner, _role, base_shapes
from mupspec.codegen.runtime.rules import _dims, _family, _hypers, _optimizer_factors, _ratio
from mupspec.codegen.runtime.spec_stub import BLOCKS, FAMILIES, SPEC_NAME

# ---- RUNTIME (everything below is copied into each generated module) ----

def parametrize(model, base_model, *, optimizer="adam", roles=None, widths=None, base_widths=None,
                depth=None, base_depth=None, hypers=None, init="rescale", init_scale=1.0,
                multipliers="hooks", generator=None, residual=None):
    """Assign a role to every parameter of `model`, initialize it, attach the
    forward multipliers, and return the Plan that param_groups() turns into
    optimizer groups. See docs/codegen.md."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if _family(optimizer) not in FAMILIES:
        raise ValueError(f"{SPEC_NAME} has no {optimizer} LR rules (it covers {', '.join(FAMILIES)})")
    if init not in ("rescale", "normal", "none"):
        raise ValueError(f"init must be 'rescale', 'normal' or 'none', not {init!r}")
    if multipliers not in ("hooks", "fold"):
        raise ValueError(f"multipliers must be 'hooks' or 'fold', not {multipliers!r}")
    patterns = list((roles or {}).items())
    bad = [r for _, r in patterns if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {bad}; roles are {ROLES}")
    env = (_dims(widths, depth, "widths"), _dims(base_widths, base_depth, "base_widths"), _hypers(hypers))
    base = base_model if isinstance(base_model, dict) else base_shapes(base_model)
    branches = _branches(model, residual)
    records = _plan_records(model, base, patterns, optimizer, multipliers, env)
    branch_mult = _apply_residual(records, branches, optimizer, multipliers, env)
    if init != "none":
        _initialize(model, base, records, init, init_scale, generator)
    hooks = _attach_multipliers(model, records) if multipliers == "hooks" else []
    if branch_mult != 1.0:
        modules = dict(model.named_modules())
        hooks += [modules[b].register_forward_hook(_scale_output(branch_mult)) for b in branches]
    return Plan(records, optimizer, multipliers, init, hooks, branch_mult)


def _branches(model, residual):
    """Names of the residual-branch modules: the outermost modules matching
    a pattern of `residual` (every pattern must match at least one)."""
    if "residual" in BLOCKS and residual is None:
        raise ValueError(f"{SPEC_NAME} has a residual block: pass residual=['pattern', ...] naming the modules "
                         "whose output is a residual branch (e.g. residual=['blocks.*.mlp'])")
    if "residual" not in BLOCKS and residual:
        raise ValueError(f"residual= given but {SPEC_NAME} has no residual block")
    names = [name for name, _ in model.named_modules() if name]
    out = []
    for pattern in residual or ():
        matched = [n for n in names if _glob(pattern, n)]
        if not matched:
            raise ValueError(f"residual pattern {pattern!r} matches no module of the model")
        out += [n for n in matched if n not in out]
    # `*` also matches dots: keep only the outermost of nested matches
    return [n for n in out if not any(n.startswith(o + ".") for o in out)]


def _apply_residual(records, branches, optimizer, multipliers, env):
    """Residual-block rules (functions of the depth): the branch output
    multiplier (returned) and LR / weight decay / eps factors for every
    parameter inside a branch."""
    if not branches:
        return 1.0
    target_dims, base_dims, hypers = env
    ratio = lambda field: _ratio("residual", field, (1, 1, target_dims), (1, 1, base_dims), hypers)  # noqa: E731
    mult = ratio("mult")
    lr, wd, eps = _optimizer_factors(ratio, optimizer)
    if multipliers == "fold" and mult != 1.0:
        raise ValueError("a residual-branch multiplier cannot be folded into a whole branch; use multipliers='hooks'")
    for record in records:
        branch = next((b for b in branches if record.name.startswith(b + ".")), None)
        if branch is not None:
            record.branch = branch
            record.lr_factor *= lr
            record.wd_factor *= wd
            record.eps_factor *= eps
    return mult


def _plan_records(model, base, patterns, optimizer, multipliers, env):
    modules = dict(model.named_modules())
    records, problems = [], []
    for name, p in model.named_parameters():
        module, pname = _owner(modules, name)
        shape = tuple(p.shape)
        role, problem = _role(name, shape, base.get(name), module, pname, patterns)
        if problem is None and _block(role) is not None and _block(role) not in BLOCKS:
            problem = f"{name}: role {role!r} but {SPEC_NAME} has no `{_block(role)}` block"
        if problem is not None:
            problems.append(problem)
            continue
        records.append(_record(name, shape, base[name], role, module, pname, optimizer, multipliers, env))
    if problems:
        raise ValueError("cannot place these parameters:\n  " + "\n  ".join(problems) +
                         "\nhint: give the base model the same parameter names, or pass roles={'pattern': 'role'}"
                         f" with a role from {ROLES}")
    return records


def _record(name, shape, base_shape, role, module, pname, optimizer, multipliers, env):
    target_dims, base_dims, hypers = env
    fan_in, fan_out = _fans(module, pname, shape)
    base_fan_in, base_fan_out = _fans(module, pname, base_shape)
    record = ParamPlan(name=name, shape=shape, role=role, block=_block(role), fan_in=fan_in, fan_out=fan_out,
                       base_fan_in=base_fan_in, base_fan_out=base_fan_out, init_ratio=None, init_std=None, mult=1.0,
                       lr_factor=1.0, wd_factor=1.0, eps_factor=1.0, folded=False)
    if record.block is None:
        # nothing grows: keep the base model's init variance (undo PyTorch's fan_in dependence)
        record.init_ratio = 1.0 if len(shape) >= 1 else None
        return record
    target, base = (fan_in, fan_out, target_dims), (base_fan_in, base_fan_out, base_dims)
    ratio = lambda field: _ratio(record.block, field, target, base, hypers)  # noqa: E731
    record.mult = ratio("mult")
    if role != "norm":  # norm gains start at 1 by convention: no init rule
        record.init_ratio = ratio("init.var")
    record.lr_factor, record.wd_factor, record.eps_factor = _optimizer_factors(ratio, optimizer)
    if multipliers == "fold" and record.mult != 1.0:
        _fold(record, optimizer)
    return record


def _fold(record, optimizer):
    """Lemma J.1 with theta = 1/mult: store mult*W and train it with multiplier
    1; LR, eps and weight decay move so that training is unchanged."""
    m = record.mult
    if m <= 0.0:
        raise ValueError(f"{record.name}: cannot fold the multiplier {m} (must be > 0); use multipliers='hooks'")
    record.lr_factor *= m * m if optimizer == "sgd" else m
    record.eps_factor /= m if optimizer != "sgd" else 1.0
    record.wd_factor /= m if optimizer == "adamw" else m * m
    record.folded = True

"""Runtime part `parametrize`: the entry point: check the arguments, plan every
parameter, apply residual-branch rules, initialize, attach the multipliers.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import torch

from mupspec.codegen.runtime.init import _initialize
from mupspec.codegen.runtime.multipliers import _attach_multipliers, _ScaleOutput
from mupspec.codegen.runtime.plan import OPTIMIZERS, ROLES, Plan
from mupspec.codegen.runtime.records import _Options, _plan_records
from mupspec.codegen.runtime.roles import _glob, base_shapes
from mupspec.codegen.runtime.rules import _dims, _family, _hypers, _optimizer_factors, _ratio
from mupspec.codegen.runtime.spec_stub import BLOCKS, FAMILIES, SPEC_NAME, SUBROLE_CLASSES

# ---- RUNTIME (everything below is copied into each generated module) ----


def parametrize(model, base_model, *, optimizer="adam", roles=None, delta=None, fan_axes=None, fused=None,
                widths=None, base_widths=None, depth=None, base_depth=None, hypers=None, init="rescale",
                init_scale=1.0, multipliers="hooks", generator=None, residual=None, anchor="base"):
    """Assign a role to every parameter of `model`, initialize it, attach the
    forward multipliers, and return the Plan that param_groups() turns into
    optimizer groups. anchor="base": every factor is the rule's value at the
    target over its value at the base model (the base model is the standard
    one); anchor="absolute": the rule's value itself (u-muP as unit-scaling
    sets it up: with init="normal" a weight whose init.var is 1 starts N(0, 1)).
    See docs/codegen.md."""
    _check_arguments(optimizer, init, multipliers, roles, fused)
    _check_anchor(anchor, init)
    env = (_dims(widths, depth, "widths"), _dims(base_widths, base_depth, "base_widths"), _hypers(hypers))
    _check_not_parametrized(model, init)
    base = base_model if isinstance(base_model, dict) else base_shapes(base_model)
    grow = None if delta is None else delta if isinstance(delta, dict) else base_shapes(delta)
    opts = _Options(base, grow, list((roles or {}).items()), list((fan_axes or {}).items()),
                    list((fused or {}).items()), optimizer, multipliers, env, anchor)
    _check_growth_is_known(model, opts)
    branches = _branches(model, residual)
    records = _plan_records(model, opts)
    _check_patterns_matched(opts)
    branch_mult = _apply_residual(records, branches, optimizer, multipliers, env, anchor)
    if init != "none":
        base_tensors = None if isinstance(base_model, dict) else dict(base_model.named_parameters(remove_duplicate=False))
        _initialize(model, base, base_tensors, records, init, init_scale, generator, anchor)
    hooks = _attach_multipliers(model, records) if multipliers == "hooks" else []
    if branch_mult != 1.0:
        modules = dict(model.named_modules())
        hooks += [modules[b].register_forward_hook(_ScaleOutput(branch_mult)) for b in branches]
    marker = {"spec": SPEC_NAME, "hooks": bool(hooks)}
    model.__dict__["_mupspec_parametrized"] = marker  # a plain attribute: not in the state_dict
    return Plan(records, optimizer, multipliers, init, hooks, branch_mult, marker, anchor)


def _check_arguments(optimizer, init, multipliers, roles, fused):
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if _family(optimizer) not in FAMILIES:
        raise ValueError(f"{SPEC_NAME} has no {optimizer} LR rules (it covers {', '.join(FAMILIES)})")
    if init not in ("rescale", "normal", "none"):
        raise ValueError(f"init must be 'rescale', 'normal' or 'none', not {init!r}")
    if multipliers not in ("hooks", "fold"):
        raise ValueError(f"multipliers must be 'hooks' or 'fold', not {multipliers!r}")
    known = ROLES + tuple(SUBROLE_CLASSES)
    bad = [r for r in (roles or {}).values() if r not in known]
    bad += [r for parts in (fused or {}).values() for r in parts if r not in known]
    if bad:
        raise ValueError(f"unknown role(s) {bad}; roles are {known}")


def _check_anchor(anchor, init):
    if anchor not in ("base", "absolute"):
        raise ValueError(f"anchor must be 'base' or 'absolute', not {anchor!r}")
    if anchor == "absolute" and init == "rescale":
        raise ValueError("anchor='absolute' gives every weight the spec's own init variance, which rescaling the "
                         "model's init cannot (it only knows ratios to the base model): pass init='normal' (draw "
                         "N(0, init.var)) or init='none' (keep your tensors)")


def _check_not_parametrized(model, init):
    """Refuse a second parametrize on the same model (it would rescale the
    init again and stack a second multiplier; microsoft/mup refuses too);
    allowed again with init="none" once the first plan's hooks are removed
    (e.g. to re-plan the same tensors for another optimizer)."""
    marker = model.__dict__.get("_mupspec_parametrized")
    if marker is not None and (marker["hooks"] or init != "none"):
        raise ValueError(f"this model was already parametrized (by {marker['spec']}): build a fresh model, or call "
                         "plan.remove_hooks() and parametrize again with init='none' to re-plan the same tensors")


def _check_growth_is_known(model, opts):
    """At the base sizes no dimension differs from the base model, so shapes
    cannot tell input, hidden and output apart: the growing dimensions must
    come from a delta model (microsoft/mup's set_base_shapes(delta=)) or every
    parameter needs a role by name."""
    if opts.grow is not None:
        return
    names = [(n, tuple(p.shape)) for n, p in model.named_parameters(remove_duplicate=False)]
    if any(opts.base.get(n, shape) != shape for n, shape in names):
        return
    unnamed = [n for n, _ in names if not any(_glob(pattern, n) for pattern, _ in opts.roles)]
    if unnamed:
        raise ValueError(f"every parameter has the base model's shape, so shapes cannot tell which dimensions grow "
                         f"with width (e.g. {unnamed[0]}): pass delta= (the same model at another width, as "
                         "microsoft/mup's set_base_shapes(delta=)) so that the rules apply at the base width as at "
                         "every other, or roles= for every parameter")


def _check_patterns_matched(opts):
    for argument in ("roles", "fan_axes", "fused"):
        for pattern, _ in getattr(opts, argument):
            if (argument, pattern) not in opts.matched:
                raise ValueError(f"{argument} pattern {pattern!r} matches no parameter of the model "
                                 "(names as in model.named_parameters(remove_duplicate=False))")


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


def _apply_residual(records, branches, optimizer, multipliers, env, anchor):
    """Residual-block rules (functions of the depth): the branch output
    multiplier (returned) and LR / weight decay / eps factors for every
    parameter inside a branch."""
    if not branches:
        return 1.0
    target_dims, base_dims, hypers = env
    base = None if anchor == "absolute" else (1, 1, base_dims)
    ratio = lambda field: _ratio("residual", field, (1, 1, target_dims), base, hypers)  # noqa: E731
    mult = ratio("mult")
    if multipliers == "fold" and mult != 1.0:
        raise ValueError("a residual-branch multiplier cannot be folded into a whole branch; use multipliers='hooks'")
    for record in records:
        branch = next((b for b in branches if record.name.startswith(b + ".")), None)
        if branch is not None:
            lr, wd, eps = _optimizer_factors(ratio, optimizer, record.block)
            record.branch = branch
            record.lr_factor *= lr
            record.wd_factor *= wd
            record.eps_factor *= eps
    return mult

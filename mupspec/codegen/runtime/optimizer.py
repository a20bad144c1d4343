"""Runtime part `optimizer`: optimizer parameter groups from a plan, and the per-group LRs
that schedulers taking one max_lr (OneCycleLR, CyclicLR) must be given.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

# ---- RUNTIME (everything below is copied into each generated module) ----


def param_groups(model, plan, *, lr, weight_decay=0.0, eps=1e-8):
    """torch.optim parameter groups: one per distinct (lr, weight decay, eps)
    value, in parameter order (few groups: each costs the optimizer a pass);
    `roles` lists the roles in a group. Each group's lr is an ordinary
    number, so schedulers that multiply it (LambdaLR, CosineAnnealingLR, ...)
    keep the ratios; those that set it (OneCycleLR, CyclicLR) need group_lrs.
    A tied tensor is in the group of its owning name."""
    params = dict(model.named_parameters(remove_duplicate=False))
    groups = {}
    for record in plan:
        if record.tied_to is not None:
            continue
        values = {"lr": lr * record.lr_factor, "weight_decay": weight_decay * record.wd_factor}
        if plan.optimizer != "sgd":
            values["eps"] = eps * record.eps_factor
        key = tuple(values.values())  # e.g. with weight_decay=0 the wd factors do not split groups
        if key not in groups:
            groups[key] = {"params": [], "roles": [], **values}
        groups[key]["params"].append(params[record.name])
        if record.role not in groups[key]["roles"]:
            groups[key]["roles"].append(record.role)
    return list(groups.values())


def make_optimizer(model, plan, *, lr, weight_decay=0.0, eps=1e-8, **kwargs):
    """torch.optim.SGD, Adam or AdamW (the plan's optimizer) over param_groups."""
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[plan.optimizer]
    groups = param_groups(model, plan, lr=lr, weight_decay=weight_decay, eps=eps)
    return cls(groups, lr=lr, **kwargs)


def group_lrs(optimizer, scale=1.0):
    """[each param group's lr * scale]: pass it where a scheduler sets the LR
    itself rather than multiplying it, e.g. OneCycleLR(opt, max_lr=group_lrs(opt),
    ...) or CyclicLR(opt, base_lr=group_lrs(opt, 0.1), max_lr=group_lrs(opt)).
    A single number there sets every group to the same LR and silently undoes
    the per-role ratios. Call it before creating the scheduler (OneCycleLR
    overwrites each group's lr at construction)."""
    return [group["lr"] * scale for group in optimizer.param_groups]

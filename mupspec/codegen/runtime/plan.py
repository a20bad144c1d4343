"""Runtime part `plan`: the plan parametrize() returns: one ParamPlan per parameter, and the Plan.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

# ---- RUNTIME (everything below is copied into each generated module) ----

ROLES = ("input", "hidden", "output", "bias", "norm", "scalar")
OPTIMIZERS = ("sgd", "adam", "adamw")
_FIELDS = ("init.var", "mult", "lr", "wd", "eps")


class ParamPlan:
    """What the spec prescribes for one parameter, anchored at the base model.

    lr_factor, wd_factor and eps_factor multiply the optimizer's lr,
    weight_decay and eps for this parameter (with multipliers="fold" the
    folded multiplier is already included, and so are the residual block's
    factors when the parameter lies in the residual branch `branch`); mult is the spec's forward
    multiplier (1 = none); init_ratio is the spec's init variance at the
    target over that at the base (None: init left alone); init_std is the std the spec prescribes
    (init="normal") or the tensor's std after rescaling (init="rescale").
    """

    __slots__ = ("name", "shape", "role", "block", "fan_in", "fan_out", "base_fan_in", "base_fan_out",
                 "init_ratio", "init_std", "mult", "lr_factor", "wd_factor", "eps_factor", "folded", "branch")

    def __init__(self, **fields):
        for key in self.__slots__:
            setattr(self, key, fields.get(key))

    def as_dict(self):
        return {key: getattr(self, key) for key in self.__slots__}

    def __repr__(self):
        return "ParamPlan(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class Plan:
    """The result of parametrize(): one ParamPlan per parameter, in
    model.named_parameters() order, plus the choices that produced them
    (branch_mult: what each residual branch's output is multiplied by)."""

    def __init__(self, records, optimizer, multipliers, init, hooks, branch_mult=1.0):
        self.records = list(records)
        self.optimizer = optimizer
        self.multipliers = multipliers
        self.init = init
        self.hooks = list(hooks)
        self.branch_mult = branch_mult
        self._by_name = {r.name: r for r in self.records}

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, name):
        return self._by_name[name]

    def remove_hooks(self):
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def table(self, lr=None):
        return format_table(self, lr)

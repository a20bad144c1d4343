"""Runtime part `plan`: the plan parametrize() returns: one ParamPlan per parameter, and the Plan.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.report import format_table

# ---- RUNTIME (everything below is copied into each generated module) ----

ROLES = ("input", "hidden", "output", "bias", "norm", "scalar")
OPTIMIZERS = ("sgd", "adam", "adamw", "adafactor", "lion", "muon")


class ParamPlan:
    """What the spec prescribes for one parameter, anchored at the base model.

    lr_factor, wd_factor and eps_factor multiply the optimizer's lr,
    weight_decay and eps for this parameter (with multipliers="fold" the
    folded multiplier is already included, and so are the residual block's
    factors when the parameter lies in the residual branch `branch`); mult is the spec's forward
    multiplier (1 = none); init_ratio is the spec's init variance at the
    target over that at the base (with anchor="absolute", like every factor,
    the rule's value itself: the variance; None: init left alone); init_std is the std the spec prescribes
    (init="normal") or the tensor's std after rescaling (init="rescale");
    init_law is the model's own init law learned for init="rescale". role is
    a class or a sub-role, block the RULES key it reads; axes labels each
    dimension "out", "in", "kernel" or "stack". tied_to names the record that
    owns a tied tensor (init, LR group): this name only applies its own
    multiplier in its module's forward. slices splits a fused parameter
    (query | key | value): [{"role", "axis", "start", "stop", "init_ratio", "init_std"}].
    """

    __slots__ = ("name", "shape", "role", "block", "axes", "fan_in", "fan_out", "base_fan_in", "base_fan_out",
                 "init_ratio", "init_std", "init_law", "mult", "lr_factor", "wd_factor", "eps_factor", "folded",
                 "branch", "tied_to", "slices")

    def __init__(self, **fields):
        for key in self.__slots__:
            setattr(self, key, fields.get(key))

    def as_dict(self):
        return {key: getattr(self, key) for key in self.__slots__}

    def __repr__(self):
        return "ParamPlan(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class Plan:
    """The result of parametrize(): one ParamPlan per parameter name, in
    model.named_parameters(remove_duplicate=False) order (a tied tensor has
    one record per name), plus the choices that produced them (branch_mult:
    what each residual branch's output is multiplied by)."""

    def __init__(self, records, optimizer, multipliers, init, hooks, branch_mult=1.0, marker=None, anchor="base"):
        self.records = list(records)
        self.optimizer = optimizer
        self.multipliers = multipliers
        self.init = init
        self.anchor = anchor
        self.hooks = list(hooks)
        self.branch_mult = branch_mult
        self._by_name = {r.name: r for r in self.records}
        self._marker = marker if marker is not None else {}  # shared with the model: see _mark_parametrized

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, name):
        return self._by_name[name]

    def remove_hooks(self):
        """Remove the forward multipliers; the model may then be planned again with init="none"."""
        for handle in self.hooks:
            handle.remove()
        self.hooks = []
        self._marker["hooks"] = False

    def table(self, lr=None):
        return format_table(self, lr)

"""mupspec.audit: the live audit of a model + optimizer against a spec.

A thin wrapper around the `audit()` of the spec's generated module (which
runs without mupspec; see mupspec/codegen/runtime/audit.py): loads the
module for `spec` and, when no plan is given, plans the model again (roles,
multipliers, LR / weight decay / eps factors; init is then not checked).
"""

from __future__ import annotations

import copy


def audit(model, optimizer, spec, *, plan=None, base_model=None, delta=None, widths=None, base_widths=None,
          roles=None, residual=None, example=None, check_init: bool = True, generated=None):
    """Raise the generated module's AuditError (a ValueError) listing every
    way `model` and `optimizer` differ from `spec` (an ir.Spec or a path);
    returns the plan's records otherwise."""
    from mupspec.codegen import load_module
    from mupspec.resolve import load_spec

    spec = load_spec(spec) if not hasattr(spec, "blocks") else spec
    P = generated or load_module(spec, f"{spec.name}.mup")
    if plan is None:
        if base_model is None:
            raise ValueError("mupspec.audit: pass plan= (what parametrize returned) or base_model= (and widths= / "
                             "base_widths=) to plan the model again")
        family = _family(optimizer)
        twin = copy.deepcopy(model)
        twin.__dict__.pop("_mupspec_parametrized", None)  # planning a copy again changes nothing of the model
        plan = P.parametrize(twin, base_model, optimizer=family, roles=roles, delta=delta, widths=widths,
                             base_widths=base_widths, residual=residual, init="none")
        check_init = False  # a re-plan prescribes no init
    return P.audit(model, optimizer, plan, example=example, check_init=check_init)


def _family(optimizer) -> str:
    first = optimizer[0] if isinstance(optimizer, (list, tuple)) else optimizer
    name = type(first).__name__.lower()
    return "sgd" if "sgd" in name else "adamw" if name == "adamw" else "adam"

"""Runtime part `records`: one ParamPlan per parameter name: its role, fans and the
spec's factors anchored at the base model; tied names and fused parts.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.plan import ROLES, ParamPlan
from mupspec.codegen.runtime.roles import (
    NAME_SUBROLES, _axis_candidates, _class_by_growth, _default_subrole, _fans, _first_match, _fused, _glob,
    _has_rules, _known_axes, _owner, _role_class, _rules_key, _tensors)
from mupspec.codegen.runtime.rules import _family, _optimizer_factors, _ratio
from mupspec.codegen.runtime.spec_stub import SHAREABLE_TIES, SPEC_NAME, SUBROLE_OWN_FIELDS, SUBROLES, TIES

# ---- RUNTIME (everything below is copied into each generated module) ----


class _Options:
    """What parametrize() was asked, as the record builders need it."""

    def __init__(self, base, grow, roles, fan_axes, fused, optimizer, multipliers, env, anchor="base"):
        self.base, self.grow = base, grow  # {name: shape} of the base and of the growth reference (delta)
        self.roles, self.fan_axes, self.fused = roles, fan_axes, fused  # [(pattern, value)] each
        self.optimizer, self.multipliers, self.env = optimizer, multipliers, env
        self.anchor = anchor  # "base": factors are rule ratios target/base; "absolute": the rules' values
        self.matched = set()  # (argument, pattern) pairs that matched a name

    def lookup(self, argument, name):
        for pattern, value in getattr(self, argument):
            if _glob(pattern, name):
                self.matched.add((argument, pattern))
                return value
        return None


def _plan_records(model, opts):
    """One ParamPlan per name in named_parameters(remove_duplicate=False)
    order; a tied tensor's names share it as microsoft/mup's MuSharedReadout
    does: the name with an input role (the embedding) owns init and LR group,
    every other name only applies its own role's multiplier in its module."""
    modules = dict(model.named_modules())
    order = {name: i for i, (name, _) in enumerate(model.named_parameters(remove_duplicate=False))}
    records, problems, tie_problems = [], [], []
    for p, names in _tensors(model):
        group = []
        for name in names:
            record, problem = _record(name, tuple(p.shape), *_owner(modules, name), opts)
            if problem is not None:
                problems.append(problem)
            else:
                group.append(record)
        if len(group) == len(names) > 1:
            tie_problems += _tie(group, opts)
        records += group
    if problems:
        raise ValueError("cannot place these parameters:\n  " + "\n  ".join(problems + tie_problems) +
                         "\nhint: give the base model the same parameter names, or pass roles={'pattern': 'role'}"
                         f" with a role from {ROLES + tuple(SUBROLES)}")
    if tie_problems:  # each says its own fix
        raise ValueError("cannot share these tensors:\n  " + "\n  ".join(tie_problems))
    _check_declared_tie(records)
    return sorted(records, key=lambda r: order[r.name])


def _tie(group, opts):
    owner = next((r for r in group if _role_class(r.role) == "input"), group[0])
    problems = []
    for record in group:
        if record is owner:
            continue
        problem = _tie_problem(owner, record)
        if problem is not None:
            problems.append(problem)
            continue
        record.tied_to = owner.name
        record.init_ratio = None
        record.lr_factor, record.wd_factor, record.eps_factor = owner.lr_factor, owner.wd_factor, owner.eps_factor
        if record.folded:
            problems.append(f"{record.name}: tied to {owner.name}, so its multiplier {record.mult:g} cannot be "
                            "folded into the shared tensor; use multipliers='hooks'")
    return problems


def _declared_tie():
    """The RULES keys of the spec's `tie EMBEDDING, READOUT`, or None."""
    return tuple(_rules_key(role) for role in TIES[0]) if TIES else None


def _tie_problem(owner, record):
    """Why `record`'s name may not share `owner`'s tensor, or None. An
    embedding may share with a readout when the spec declares exactly that
    tie, or (no tie declared) when their rules can share one tensor as
    written (SHAREABLE_TIES: tying changes nothing); other names must read
    the same rules (one tensor used twice the same way)."""
    pair = (owner.block, record.block)
    both = f"{record.name} ({record.role}) is the same tensor as {owner.name} ({owner.role})"
    if (_role_class(owner.role), _role_class(record.role)) == ("input", "output"):
        declared = _declared_tie()
        if declared is not None and pair != declared:
            return (f"{both}, but {SPEC_NAME} declares `tie {TIES[0][0]}, {TIES[0][1]}` (the `{declared[0]}` and "
                    f"`{declared[1]}` rules) and these names read `{pair[0]}` and `{pair[1]}`: give them the "
                    f"declared roles, roles={{'{owner.name}': '{TIES[0][0]}', '{record.name}': '{TIES[0][1]}'}}")
        if declared is None and pair not in SHAREABLE_TIES:
            embedding = owner.block if owner.block in ("input", "token_embedding") else "input"
            readout = record.block if record.block in ("output", "readout") else "output"
            return (f"{both}, but {SPEC_NAME}'s `{pair[0]}` and `{pair[1]}` rules cannot share one tensor (their "
                    f"init, LR, weight decay or eps scale differently with width; `mupspec check` says which): "
                    f"declare the tie in the spec, `tie {embedding}, {readout}` (the readout then takes the "
                    f"embedding's init and LR group, and `mupspec check` checks the tied network), or untie the "
                    f"model (e.g. GPT-2's tie_word_embeddings=False)")
        return None
    if owner.block != record.block:
        return (f"{both}: a spec can tie only an embedding to a readout; untie them, or give both names one "
                f"role with roles=")
    return None


def _likely(records, role, key):
    """Names that read rules `key`; of those, the ones named like `role`
    (wte for token_embedding, lm_head for readout) where there are any."""
    names = [r.name for r in records if r.block == key]
    named = [n for n in names if _first_match(NAME_SUBROLES, n) == role]
    return named or names


def _check_declared_tie(records):
    """A spec that declares a tie describes a tied model: an untied one
    (separate embedding and readout tensors) is refused rather than planned
    with rules the spec's check never saw for it."""
    declared = _declared_tie()
    by_name = {r.name: r for r in records}
    if declared is None or any(r.tied_to and (by_name[r.tied_to].block, r.block) == declared for r in records):
        return
    embeddings, readouts = (_likely(records, role, key) for role, key in zip(TIES[0], declared))
    if embeddings and readouts:
        raise ValueError(f"{SPEC_NAME} declares `tie {TIES[0][0]}, {TIES[0][1]}` (one tensor for the embedding and "
                         f"the readout), but the model's {', '.join(embeddings[:3])} and {', '.join(readouts[:3])} "
                         f"are separate tensors: tie them (e.g. model.lm_head.weight = model.transformer.wte.weight, "
                         f"or GPT-2's tie_word_embeddings=True) before parametrize, or use a spec without the `tie`")


def _record(name, shape, module, pname, opts):
    """(ParamPlan, None) or (None, why it cannot be placed)."""
    base_shape = opts.base.get(name)
    grow_shape = opts.grow.get(name) if opts.grow is not None else shape
    if base_shape is None or grow_shape is None:
        return None, f"{name}: not in the {'base' if base_shape is None else 'delta'} model"
    if not len(base_shape) == len(shape) == len(grow_shape):
        return None, f"{name}: shape {shape} has a different rank from the base model's {tuple(base_shape)}"
    grows = [a != b for a, b in zip(grow_shape, base_shape)]
    declared = opts.lookup("fan_axes", name)
    known = _known_axes(module, pname, len(shape))
    candidates, problem = ([known], None) if known is not None and declared is None else \
        _axis_candidates(name, grows, declared)
    if problem is not None:
        return None, problem
    pattern_role = opts.lookup("roles", name)
    plans = []
    for axes in candidates:
        record, problem = _record_for_axes(name, shape, base_shape, axes, grows, module, pname, pattern_role, opts)
        if problem is not None:
            return None, problem
        plans.append(record)
    if any(_factors_of(r) != _factors_of(plans[0]) for r in plans[1:]):
        return None, (f"{name}: shape {shape} (base {tuple(base_shape)}) does not tell which growing dimension is "
                      f"fan_in: the plans differ; declare fan_axes={{'{name}': {candidates[0]}}} if it is used as "
                      f"W @ x (Linear's layout) or {candidates[1]} if as x @ W")
    return plans[0], None


def _factors_of(record):
    return (record.role, record.init_ratio, record.mult, record.lr_factor, record.wd_factor, record.eps_factor,
            record.folded)


def _record_for_axes(name, shape, base_shape, axes, grows, module, pname, pattern_role, opts):
    role = pattern_role
    if role is None:
        role, problem = _class_by_growth(name, shape, axes, grows, module)
        if problem is not None:
            return None, problem
        role = _default_subrole(name, role, module, pname)
    key = _rules_key(role)
    if key is not None and not _has_rules(key):
        return None, f"{name}: role {role!r} but {SPEC_NAME} has no `{key}` block"
    fan_in, fan_out = _fans(shape, axes)
    base_fan_in, base_fan_out = _fans(base_shape, axes)
    record = ParamPlan(name=name, shape=shape, role=role, block=key, axes=axes, fan_in=fan_in, fan_out=fan_out,
                       base_fan_in=base_fan_in, base_fan_out=base_fan_out, init_ratio=None, init_std=None,
                       init_law=None, mult=1.0, lr_factor=1.0, wd_factor=1.0, eps_factor=1.0, folded=False)
    if key is None:
        # nothing grows: keep the base model's init variance (undo the model's own fan dependence)
        record.init_ratio = 1.0 if len(shape) >= 1 else None
        return record, None
    record.init_ratio, record.mult, record.lr_factor, record.wd_factor, record.eps_factor = \
        _rule_factors(key, record, opts)
    problem = _split_fused(record, opts)
    if problem is not None:
        return None, problem
    if opts.multipliers == "fold" and record.mult != 1.0:
        _fold(record, opts.optimizer)
    return record, None


def _rule_factors(key, record, opts):
    """(init ratio, mult, lr, wd, eps) of rules `key` at the record's fans,
    anchored at the base model or absolute (then the init "ratio" is the
    variance itself); init ratio None for norms (gains start at 1 by
    convention: no init rule)."""
    target_dims, base_dims, hypers = opts.env
    target = (record.fan_in, record.fan_out, target_dims)
    base = None if opts.anchor == "absolute" else (record.base_fan_in, record.base_fan_out, base_dims)
    ratio = lambda field: _ratio(key, field, target, base, hypers)  # noqa: E731
    init = None if _role_class(record.role) == "norm" else ratio("init.var")
    lr, wd, eps = _optimizer_factors(ratio, opts.optimizer, key)
    if _family(opts.optimizer, key) == "adafactor" and init:
        eps = math.sqrt(init)  # Adafactor's eps2 floors the parameter's RMS: it moves with the init std
    return init, ratio("mult"), lr, wd, eps


def _split_fused(record, opts):
    """A fused parameter (nanoGPT's c_attn: query | key | value along fan_out):
    each part gets its sub-role's init; multipliers and LRs must agree, as one
    tensor has one LR group and one forward."""
    fused, problem = _fused(record.name, record.role, record.shape, record.axes, opts.lookup("fused", record.name))
    if fused is None:
        return problem
    axis, parts = fused
    record.slices = []
    for role, start, stop in parts:
        own = [f for f in SUBROLE_OWN_FIELDS.get(role, ()) if f != "init.var"]
        if own:  # refused by the rules as written, whatever they give at this width (equal at the base)
            return (f"{record.name}: fused {' | '.join(p for p, _, _ in parts)}, but {SPEC_NAME}'s `{role}` block "
                    f"states its own {', '.join(own)}: one tensor has one forward multiplier and one optimizer "
                    f"group, so a part of a fused parameter may differ only in init.var; split the tensor into "
                    f"separate parameters (e.g. q_proj, k_proj, v_proj), or drop those rules from `{role}`")
        factors = _rule_factors(_rules_key(role), record, opts)
        if factors[1:] != (record.mult, record.lr_factor, record.wd_factor, record.eps_factor):
            return (f"{record.name}: its fused part {role} needs the multiplier / LR / weight decay / eps factors "
                    f"{factors[1:]}, the whole tensor {(record.mult, record.lr_factor, record.wd_factor, record.eps_factor)}"
                    f": one tensor has one forward and one LR group; split it into separate parameters")
        record.slices.append({"role": role, "axis": axis, "start": start, "stop": stop, "init_ratio": factors[0],
                              "init_std": None})
    return None


def _fold(record, optimizer):
    """Lemma J.1 with theta = 1/mult: store mult*W and train it with multiplier
    1; LR, eps and weight decay move so that training is unchanged
    (Adafactor's step and decay are relative to W: only its eps2 floor moves)."""
    m = record.mult
    if m <= 0.0:
        raise ValueError(f"{record.name}: cannot fold the multiplier {m} (must be > 0); use multipliers='hooks'")
    family = _family(optimizer, record.block)
    if family == "adafactor":
        record.eps_factor *= m
    else:
        record.lr_factor *= m * m if family == "sgd" else m
        record.eps_factor /= m if family == "adam" else 1.0
        record.wd_factor /= m if optimizer in ("adamw", "lion", "muon") else m * m
    record.folded = True

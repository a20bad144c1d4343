"""Runtime part `audit`: compare a live model and optimizer with the plan.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others. So the guard runs in training
code where mupspec is not installed; `mupspec.audit` wraps it.
"""

import math

import torch

from mupspec.codegen.runtime.roles import _role_class
from mupspec.codegen.runtime.spec_stub import SPEC_NAME

# ---- RUNTIME (everything below is copied into each generated module) ----


class AuditError(ValueError):
    """The live model or optimizer differs from the spec; `problems` lists how."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(f"{SPEC_NAME}: the model/optimizer differs from the spec:\n  " + "\n  ".join(self.problems))


def audit(model, optimizer, plan, *, example=None, check_init=True, rtol=1e-5):
    """Raise AuditError if `model` + `optimizer` (one or a list) do not do
    what `plan` (from parametrize) prescribes:
    - every parameter is covered by the plan and sits in an optimizer group;
    - the groups' lr, weight_decay and eps stand in the plan's ratios (read
      now: call it again after scheduler.step(), a scheduler may flatten them);
    - init scale (check_init, while the weights are near init): each
      tensor's std within its sampling error of the plan's;
    - forward multipliers (when `example`, the model's input, is given):
      each Linear/Conv/Embedding's effective multiplier, read from one
      forward (its output against F.linear(its input, W)), and the model
      output against the readout's (a multiplier applied outside it).
    Returns the plan's records checked (for a report)."""
    problems = _coverage(model, plan)
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    problems += _group_ratios(model, plan, optimizers, rtol)
    if check_init:
        problems += _init_scales(model, plan)
    if example is not None:
        problems += _multipliers(model, plan, example, rtol)
    if problems:
        raise AuditError(problems)
    return list(plan)


def _named(model):
    try:
        return dict(model.named_parameters(remove_duplicate=False))
    except TypeError:  # torch < 2.0
        return dict(model.named_parameters())


def _owner_record(plan, record):
    tied = getattr(record, "tied_to", None)
    return plan[tied] if tied else record


def _coverage(model, plan):
    params = _named(model)
    known = {id(params[r.name]): r.name for r in plan if r.name in params}
    problems = []
    owners = {}
    for r in plan:  # two untied records, one tensor: tied after parametrize planned them apart
        if r.name in params and not getattr(r, "tied_to", None):
            other = owners.setdefault(id(params[r.name]), r.name)
            if other != r.name:
                problems.append(f"{r.name}: the same tensor as {other}, but the plan gives them separate init and "
                                f"LR (tied after parametrize?): tie first, then parametrize")
    problems += _untied(params, plan)
    for name, p in params.items():
        if any(r.name == name for r in plan):
            continue
        if id(p) in known:  # a second name of a covered tensor: a tie the plan does not know
            problems.append(f"{name}: tied to {known[id(p)]}, but the plan has no rule for this use of it, so "
                            f"its multiplier (a tied readout's 1/width) is not applied")
        else:
            problems.append(f"{name}: a parameter the spec's plan does not cover (added after parametrize, "
                            f"or on a module parametrize never saw)")
    return problems


def _untied(params, plan):
    """A record tied to another name whose tensor is no longer that name's:
    the tie was broken after parametrize (e.g. `model.lm_head.weight =
    nn.Parameter(...)`), so the new tensor has no init and no LR group."""
    problems = []
    for r in plan:
        tied = getattr(r, "tied_to", None)
        if tied and r.name in params and tied in params and params[r.name] is not params[tied]:
            problems.append(f"{r.name}: the plan ties it to {tied}, but the model now holds a separate tensor "
                            f"there (untied after parametrize?): it has no init or optimizer group of its own; "
                            f"tie it again, or parametrize the untied model with a spec for it")
    return problems


def _group_values(optimizers):
    """id(parameter) -> (group dict, optimizer class name)."""
    found = {}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                found.setdefault(id(p), (group, type(opt).__name__))
    return found


def _group_ratios(model, plan, optimizers, rtol):
    params = _named(model)
    groups = _group_values(optimizers)
    problems, rows = [], []
    for record in plan:
        if record.name not in params or getattr(record, "tied_to", None):
            continue
        entry = groups.get(id(params[record.name]))
        if entry is None:
            problems.append(f"{record.name}: in no optimizer group (it will never train)")
            continue
        rows.append((record, entry[0]))
    for key, factor in (("lr", "lr_factor"), ("weight_decay", "wd_factor"), ("eps", "eps_factor")):
        problems += _ratio_problems(rows, key, factor, rtol)
    return problems


def _ratio_problems(rows, key, factor, rtol):
    """The groups' `key` against base x the record's factor, base read off
    the first parameter with a nonzero factor (a global LR or a scheduler's
    common scale changes nothing)."""
    rows = [(r, float(g[key])) for r, g in rows if key in g and getattr(r, factor) is not None]
    ref = next(((r, v) for r, v in rows if getattr(r, factor) != 0.0 and v != 0.0), None)
    if ref is None:
        return []  # e.g. weight_decay 0 everywhere: nothing to compare
    base = ref[1] / getattr(ref[0], factor)
    wrong = [(r, v) for r, v in rows if abs(v - base * getattr(r, factor)) > rtol * abs(base * getattr(r, factor))]
    if not wrong:
        return []
    values = {v for _, v in rows}
    factors = {getattr(r, factor) for r, _ in rows}
    head = f"{key}: {len(wrong)} of {len(rows)} parameters are not in the spec's ratios"
    if len(values) == 1 and len(factors) > 1:
        head += (f" -- every parameter has {key}={values.pop():g}, one group (e.g. an optimizer over "
                 f"model.parameters(), or a scheduler that sets one {key} for every group such as "
                 f"OneCycleLR(max_lr=<one number>)); build it from param_groups(model, plan, ...)")
    lines = [head]
    for r, v in wrong[:6]:
        lines.append(f"    {r.name} ({r.role}): {key} {v:.4g}, spec {base * getattr(r, factor):.4g} "
                     f"(x{v / (base * getattr(r, factor)) if getattr(r, factor) else math.inf:.4g})")
    if len(wrong) > 6:
        lines.append(f"    ... and {len(wrong) - 6} more")
    return ["\n".join(lines)]


@torch.no_grad()
def _init_scales(model, plan):
    """Each tensor's std against the plan's: an N(0, s^2) sample of n entries
    has a std within s (1 +- 6/sqrt(2n)) but for one chance in ~10^9."""
    params = _named(model)
    problems = []
    for record in plan:
        if record.init_std is None or getattr(record, "tied_to", None) or record.name not in params:
            continue
        p = params[record.name].detach().float()
        if p.numel() < 64 or record.init_std == 0.0:
            continue
        std = float(p.std())
        tol = 6.0 / math.sqrt(2.0 * p.numel())
        if abs(std / record.init_std - 1.0) > max(tol, 0.02):
            problems.append(f"{record.name}: init std {std:.4g}, the spec's {record.init_std:.4g} "
                            f"(x{std / record.init_std:.3g}; re-initialized after parametrize?)")
    return problems


_MULTIPLIED = (torch.nn.Linear, torch.nn.Embedding, torch.nn.modules.conv._ConvNd)


def _base_output(module, x):
    """The module's output from its weight alone, no multiplier, no bias."""
    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(x, module.weight)
    if isinstance(module, torch.nn.Embedding):
        return torch.nn.functional.embedding(x, module.weight, module.padding_idx)
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return module._conv_forward(x, module.weight, None)
    return None


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    logits = getattr(value, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(value, (tuple, list)):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    return None


def _fit_scale(y, base):
    """c minimizing |y - c base| and the relative residual."""
    y, base = y.double().reshape(-1), base.double().reshape(-1)
    denom = float(base @ base)
    if denom == 0.0:
        return None, None
    c = float(y @ base) / denom
    return c, float((y - c * base).norm()) / max(float(y.norm()), 1e-300)


@torch.no_grad()
def _multipliers(model, plan, example, rtol):
    """One forward with hooks: every Linear/Conv/Embedding's output minus its
    bias part, fitted as c * (its weight applied to its raw input)."""
    modules = dict(model.named_modules())
    seen, handles = {}, []
    for record in plan:
        prefix, _, pname = record.name.rpartition(".")
        module = modules.get(prefix)
        if pname != "weight" or not isinstance(module, _MULTIPLIED):
            continue
        expected = 1.0 if record.folded else record.mult

        def pre(mod, args, name=record.name):
            seen.setdefault(name, {})["x"] = args[0]

        def post(mod, args, output, name=record.name):
            seen[name]["y"] = output

        handles.append(module.register_forward_pre_hook(pre, prepend=True))
        handles.append(module.register_forward_hook(post))
        seen[record.name] = {"expected": expected, "module": module, "role": record.role, "mult": record.mult,
                             "folded": record.folded}
    try:
        out = model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for h in handles:
            h.remove()
    problems, readouts = [], []
    for name, item in seen.items():
        if "y" not in item:
            continue
        module, y = item["module"], _first_tensor(item["y"])
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):  # the bias part: the output with the weight zeroed
            y = y - _bias_part(module, item["x"])
        c, residual = _fit_scale(y, _base_output(module, item["x"]))
        if c is None:
            continue
        if residual > 1e-3 or abs(c - item["expected"]) > 1e-3 * abs(item["expected"]) + 1e-12:
            why = " (applied twice?)" if item["expected"] not in (0.0, 1.0) and \
                abs(c - item["expected"] ** 2) <= 1e-3 * item["expected"] ** 2 else ""
            if item["folded"] and item["mult"] != 1.0 and abs(c - item["mult"]) <= 1e-3 * abs(item["mult"]):
                why = f" (its multiplier {item['mult']:.4g} is folded into the weight and applied in the forward too?)"
            if residual > 1e-3:
                why = f" (not a pure multiple of W x: relative residual {residual:.2g})"
            problems.append(f"{name} ({item['role']}): effective forward multiplier {c:.4g}, the spec's "
                            f"{item['expected']:.4g} (x{c / item['expected'] if item['expected'] else math.inf:.4g})"
                            + why)
        if _role_class(item["role"]) == "output":  # `output` or its sub-role `readout`
            readouts.append((name, item))
    problems += _outside_multiplier(_first_tensor(out), readouts)
    return problems


def _bias_part(module, x):
    with torch.no_grad():
        saved = module.weight.detach().clone()
        module.weight.zero_()
        try:
            return _first_tensor(module(x))
        finally:
            module.weight.copy_(saved)


def _outside_multiplier(out, readouts):
    """The model output should be the readout's output: a constant factor
    between them is a multiplier applied in the model's forward, on top of
    the spec's (e.g. a hand-written `logits / width_mult`)."""
    problems = []
    for name, item in readouts:
        y = _first_tensor(item["y"])
        if out is None or y is None or out.shape != y.shape or out is y:
            continue
        c, residual = _fit_scale(out, y)
        if c is not None and residual < 1e-6 and abs(c - 1.0) > 1e-6:
            how = " (folded into its weight)" if item["folded"] else ""
            problems.append(f"{name} ({item['role']}): the model multiplies the readout's output by {c:.4g} on top "
                            f"of the spec's multiplier {item['mult']:.4g}{how} (a hand-written multiplier: applied "
                            f"twice?)")
    return problems

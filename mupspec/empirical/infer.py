"""Stage 4f: infer the spec a model's code implements.

Takes a model factory (and optimizer factory) and widths; builds the model
and its optimizer at every width and reads what the code really does:
- each parameter's init variance (mean square of the tensor: the code's
  init, whatever it was);
- each Linear/Conv/Embedding's forward multiplier: one forward with hooks,
  its output fitted as c * (its weight applied to its raw input); for the
  readout also the scale of its input (a `x / width_mult` written before the
  readout, nanoGPT-mup's way) and of the model output against its output (a
  multiplier written after it);
- each parameter's LR, weight decay and eps, from the optimizer's groups;
- the attention-logit scale passed to F.scaled_dot_product_attention.
Each quantity's width exponent is fitted on log-log axes and rounded to a
rational with denominator <= 4 when within 0.05 of it (`Exponent.clean`);
parameters are grouped into the spec's classes by shape (the generated
module's role rules), each class taking the exponents most of its
parameters share; a Transformer part whose parameters all share other
exponents (a zero-init query beside the key, say) gets a sub-role block
stating what differs (parts known by name, as the generated module's
default sub-roles: q_proj, k_proj, c_fc, wte, lm_head, norm gains, ...);
`to_spec_text` writes the .mup, one comment per block naming its parameters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import torch
import torch.nn.functional as F

from mupspec.empirical.coord import (Width, _first_tensor, _roles_and_sites, as_widths, build_model,
                                     default_input, prepare_inputs, shape_model)
from mupspec.empirical.fit import slope
from mupspec.errors import Diagnostic, MupError

FIELDS = ("init.var", "mult", "lr", "wd", "eps")
CLEAN = 0.05  # a fit further than this from its rational is unclean
PARAM_BLOCKS = ("input", "hidden", "output", "bias", "norm")


@dataclass(frozen=True)
class Exponent:
    """A fitted width exponent: `value` (the slope), `rational` (the nearest
    p/q, q <= 4), `residual` (largest log-deviation from the fitted line);
    zero: the quantity is 0 at every width (zero init, no decay)."""

    value: float
    rational: Fraction | None
    residual: float
    zero: bool = False

    @property
    def clean(self) -> bool:
        return self.zero or (self.rational is not None and abs(self.value - float(self.rational)) <= CLEAN
                             and self.residual <= 2 * CLEAN)

    def text(self) -> str:
        if self.zero:
            return "zero"
        return _fraction_text(self.rational) if self.clean else f"{self.value:+.3f} (unclean)"


def _fraction_text(k: Fraction) -> str:
    return str(k) if k.denominator != 1 else f"{k.numerator}"


def nearest_rational(x: float, max_denominator: int = 4) -> Fraction:
    candidates = [Fraction(round(x * q), q) for q in range(1, max_denominator + 1)]
    return min(candidates, key=lambda f: (abs(float(f) - x), f.denominator))


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> Exponent:
    if all(y == 0 for y in ys):
        return Exponent(0.0, None, 0.0, zero=True)
    if any(not (y > 0) or not math.isfinite(y) for y in ys):
        return Exponent(math.nan, None, math.inf)
    k = slope(xs, ys)
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    c = sum(ly) / len(ly) - k * sum(lx) / len(lx)
    residual = max(abs(b - (c + k * a)) for a, b in zip(lx, ly))
    return Exponent(k, nearest_rational(k), residual)


# ---------------------------------------------------------------- reading the code


def _named(model):
    return dict(model.named_parameters(remove_duplicate=False))


def _plain_output(P, module, x):
    """The module's output from its weight alone (no multiplier, no bias);
    transformers' Conv1D stores its weight (in, out)."""
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return x @ module.weight
    return P._base_output(module, x)


@torch.no_grad()
def read_code(P, model, optimizers, inputs, kwargs, roles: dict[str, str]) -> tuple[dict, dict]:
    """({parameter name: {field: value}}, {"logit": scale}) at one width; each
    part of a fused parameter (_fused_slices) as well, under its slice name,
    with its own init variance and the whole's other fields."""
    params = _named(model)
    values: dict[str, dict[str, float]] = {n: {"init.var": float(p.detach().double().pow(2).mean())}
                                           for n, p in params.items()}
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                for name in (n for n, q in params.items() if q is p):
                    values[name].update(lr=float(group["lr"]), wd=float(group.get("weight_decay", 0.0)))
                    if "eps" in group and group["eps"] is not None:
                        values[name]["eps"] = float(group["eps"])
    seen: dict[str, dict] = {}
    handles = []
    for mname, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or weight.dim() < 2:
            continue
        key = f"{mname}.weight" if mname else "weight"
        if key not in params or not (isinstance(module, P._MULTIPLIED) or type(module).__name__ == "Conv1D"):
            continue
        seen[key] = {"module": module}
        handles.append(module.register_forward_pre_hook(
            lambda m, args, key=key: seen[key].__setitem__("x", args[0]), prepend=True))
        handles.append(module.register_forward_hook(lambda m, args, out, key=key: seen[key].__setitem__("y", out)))
    scales: list[float] = []
    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, *args, scale=None, **kw):
        scales.append(scale if scale is not None else q.shape[-1] ** -0.5)
        return original(q, k, v, *args, scale=scale, **kw)

    F.scaled_dot_product_attention = sdpa
    try:
        out = _first_tensor(model(*inputs, **kwargs))
    finally:
        F.scaled_dot_product_attention = original
        for h in handles:
            h.remove()
    for key, item in seen.items():
        if "y" not in item:
            continue  # not used by this forward
        module, y = item["module"], _first_tensor(item["y"])
        if isinstance(getattr(module, "bias", None), torch.Tensor):
            y = y - P._bias_part(module, item["x"])
        c, residual = P._fit_scale(y, _plain_output(P, module, item["x"]))
        if c is None or residual > 1e-3:
            continue
        mult = abs(c)
        if roles.get(key) == "output":  # scaling written around the readout, outside its module
            values[key]["input"] = float(item["x"].double().pow(2).mean().sqrt())
            if out is not None and out.shape == y.shape and out is not item["y"]:
                after, res = P._fit_scale(out, _first_tensor(item["y"]))
                if after is not None and res < 1e-6:
                    mult *= abs(after)
        values[key]["mult"] = mult
    for pname, (axis, parts) in _fused_slices(P, model, roles).items():
        whole = params[pname].detach().double()   # split at this width
        for part, start, stop in parts:
            values[_slice_name(pname, part)] = values[pname] | {
                "init.var": float(whole.narrow(axis, start, stop - start).pow(2).mean())}
    extra = {"logit": scales[0]} if scales else {}
    return values, extra


# ---------------------------------------------------------------- inference


@dataclass
class Inferred:
    factory: str
    optimizer: str
    widths: list[int]
    family: str | None
    roles: dict[str, str]
    tied: dict[str, str]                             # second name -> owner name
    exponents: dict[str, dict[str, Exponent]]        # parameter -> field -> exponent
    logit: Exponent | None
    subroles: dict[str, str] = field(default_factory=dict)  # parameter -> its Transformer part (by name)
    classes: dict[str, dict[str, Exponent]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    parts: dict[str, dict[str, Exponent]] = field(default_factory=dict)  # sub-role -> the fields it differs in
    dissent: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def unclean(self) -> list[str]:
        out = [f"{name} {f}: {e.value:+.3f} (nearest {e.rational}, residual {e.residual:.3f})"
               for name, fields in self.exponents.items() for f, e in fields.items() if not e.clean]
        if self.logit is not None and not self.logit.clean:
            out.append(f"attention logit: {self.logit.value:+.3f}")
        return out


def _family(optimizers) -> str | None:
    names = {type(o).__name__.lower() for o in optimizers}
    if names and all("adam" in n for n in names):
        return "adam"
    if names and all(n.endswith("sgd") for n in names):
        return "sgd"
    return None


def infer(make_model, widths, *, optimizer="adam", make_input=None, lr: float = 1e-3, seeds: int = 3,
          factory_name: str | None = None, generated=None) -> Inferred:
    """Read the code at every width (`seeds` builds each: the init variance
    and the readout's input size are averages) and fit each exponent."""
    from mupspec.codegen import load_module
    from mupspec.resolve import load_spec
    from pathlib import Path

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    name = factory_name or getattr(make_model, "__name__", "make_model")
    points = as_widths(widths)
    # the role rules live in every generated module; any bundled spec with the parameter blocks will do
    P = generated or load_module(load_spec(Path(__file__).resolve().parents[2] / "specs" / "mup_table8.mup"),
                                 "mup_table8.mup")
    base_shapes = P.base_shapes(shape_model(make_model, points[0], name))
    largest = shape_model(make_model, points[-1], name)
    plan_kwargs = dict(optimizer="adam", widths=points[-1].symbols(P.WIDTH_SYMBOLS),
                       base_widths=points[0].symbols(P.WIDTH_SYMBOLS), roles=None, residual=None)
    tied = _ties(largest)
    roles, _ = _roles_and_sites(P, largest, base_shapes, plan_kwargs, name, points[-1])
    subroles = _subroles(P, largest, roles)
    for pname, (_, parts) in _fused_slices(P, largest, roles).items():   # each part read as a parameter of its own: "c_attn.weight[query]"
        for part, _, _ in parts:
            roles[_slice_name(pname, part)], subroles[_slice_name(pname, part)] = roles[pname], part
    readings, logits, family = [], [], None
    for width in points:
        runs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = build_model(make_model, width, name).double()
            optimizers = _optimizers(optimizer, model, lr, width)
            family = _family(optimizers)
            try:
                example = make_input() if make_input is not None else default_input(model)
                inputs, kwargs = prepare_inputs(example, torch.float64)
                runs.append(read_code(P, model, optimizers, inputs, kwargs, roles))
            except MupError:
                raise
            except Exception as err:
                raise MupError(Diagnostic(f"{name}({width}): the forward pass failed: {type(err).__name__}: {err}",
                                          hint="check the model and its example input (--input)")) from None
        readings.append(_mean_readings([values for values, _ in runs]))
        logits.append(runs[0][1].get("logit"))
    xs = [w.x for w in points]
    exponents = {}
    for pname in readings[-1]:
        fields = {}
        for f in FIELDS + ("input",):
            ys = [r.get(pname, {}).get(f) for r in readings]
            if all(y is not None for y in ys):
                fields[f] = fit_exponent(xs, ys)
        _readout_input(fields)
        exponents[pname] = fields
    logit = fit_exponent(xs, logits) if all(v is not None for v in logits) else None
    opt_name = optimizer if isinstance(optimizer, str) else getattr(optimizer, "__mupspec_ref__",
                                                                      getattr(optimizer, "__name__", "optimizer"))
    result = Inferred(name, opt_name, xs, family, roles, tied, exponents, logit, subroles)
    _classes(result)
    return result


def _readout_input(fields: dict[str, Exponent]) -> None:
    """A readout whose input the code scales with width (nanoGPT-mup's
    `x / width_mult` before lm_head) has that scale in its multiplier. Only a
    clean, nonzero power counts: features of an unnormalized network drift
    a little at small widths (a bias's 1/n share), which is no multiplier."""
    size = fields.pop("input", None)
    mult = fields.get("mult")
    if size is None or mult is None or not size.clean or size.zero or size.rational == 0:
        return
    value = mult.value + size.value
    fields["mult"] = Exponent(value, nearest_rational(value), max(mult.residual, size.residual))


def _mean_readings(runs: list[dict]) -> dict:
    out = {}
    for pname, fields in runs[0].items():
        out[pname] = {f: sum(r[pname][f] for r in runs) / len(runs) for f in fields
                      if all(f in r.get(pname, {}) for r in runs)}
    return out


def _ties(model) -> dict[str, str]:
    owners: dict[int, str] = {}
    tied = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in owners:
            tied[n] = owners[id(p)]
        else:
            owners[id(p)] = n
    return tied


def _optimizers(optimizer, model, lr, width: Width) -> list:
    if isinstance(optimizer, str):  # what plain code does: one group over model.parameters()
        cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        return [cls(model.parameters(), lr=lr)]
    try:
        made = optimizer(model)
    except Exception as err:
        raise MupError(Diagnostic(f"optimizer factory failed at {width}: {type(err).__name__}: {err}")) from None
    made = list(made) if isinstance(made, (list, tuple)) else [made]
    if not made or not all(isinstance(o, torch.optim.Optimizer) for o in made):
        raise MupError(Diagnostic(f"the optimizer factory returned {made!r} at {width}, not a torch.optim.Optimizer "
                                  "or a list of them"))
    return made


def _subroles(P, model, roles: dict[str, str]) -> dict[str, str]:
    """{parameter: sub-role} for the parameters whose name says which
    Transformer part they are (the generated module's name defaults: q_proj
    is a query, c_fc an mlp_in, ...) or which are a norm's gain or bias,
    where that part's class is the one the shapes gave."""
    from mupspec.ir import SUBROLES

    modules = dict(model.named_modules())
    out = {}
    for pname, role in roles.items():
        prefix, _, local = pname.rpartition(".")
        if P._is_norm(modules.get(prefix)):
            sub = {"weight": "norm_gain", "bias": "norm_bias"}.get(local)
        else:
            sub = P._first_match(P.NAME_SUBROLES, pname)
        if sub is not None and SUBROLES.get(sub) == role:
            out[pname] = sub
    return out


def _slice_name(pname: str, part: str) -> str:
    return f"{pname}[{part}]"


def _fused_slices(P, model, roles: dict[str, str]) -> dict[str, tuple[int, list]]:
    """{parameter: (axis, [(part, start, stop)])} for the fused parameters the
    generated module splits into parts (nanoGPT's c_attn: query | key |
    value), read as the generated module reads them: a part may have an init
    of its own (a zero-init query), nothing else (one module, one LR group)."""
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    out = {}
    for pname, role in roles.items():
        prefix, _, local = pname.rpartition(".")
        p = params.get(pname)
        axes = P._known_axes(modules.get(prefix), local, p.dim()) if p is not None else None
        parts = P._first_match(P.NAME_FUSED, pname)
        if axes is None or parts is None or any(P.SUBROLE_CLASSES.get(q) != role for q in parts):
            continue
        found, _ = P._fused(pname, role, tuple(p.shape), axes, parts)   # the split, whatever this spec declares
        if found is not None:
            out[pname] = found
    return out


def _key(fields: dict[str, Exponent], role: str) -> tuple:
    return tuple((f, e.text()) for f, e in sorted(fields.items()) if not (role == "norm" and f == "init.var"))


def _classes(result: Inferred) -> None:
    """Each class takes the exponents most of its parameters share; the
    others are listed as dissent (the language has one rule per class)."""
    by_role: dict[str, list[str]] = {}
    for pname, role in result.roles.items():
        if role in PARAM_BLOCKS and pname in result.exponents:
            by_role.setdefault(role, []).append(pname)
    for role, names in by_role.items():
        counts: dict[tuple, list[str]] = {}
        for n in names:
            counts.setdefault(_key(result.exponents[n], role), []).append(n)
        majority = max(counts.values(), key=len)
        result.classes[role] = result.exponents[majority[0]]
        result.members[role] = names
        result.dissent[role] = [n for n in names if n not in majority]
        _parts(result, role, _key(result.exponents[majority[0]], role))
    _describe(result)


def _parts(result: Inferred, role: str, rule: tuple) -> None:
    """A part of class `role` whose parameters all share exponents other
    than the class's gets a sub-role block (the fields that differ) and
    leaves the dissent; a part whose members disagree among themselves stays
    there (the language has one rule per part)."""
    by_part: dict[str, list[str]] = {}
    for n in result.members[role]:
        if n in result.subroles:
            by_part.setdefault(result.subroles[n], []).append(n)
    cls = result.classes[role]
    for part, names in by_part.items():
        keys = {_key(result.exponents[n], role) for n in names}
        if len(keys) != 1 or keys == {rule}:
            continue
        own = result.exponents[names[0]]
        differs = {f: e for f, e in own.items() if f not in cls or e.text() != cls[f].text()}
        if role == "norm":
            differs.pop("init.var", None)  # a gain's init is not a rule
        if differs:
            result.parts[part] = differs
            result.members[part] = names
            result.dissent[role] = [n for n in result.dissent[role] if n not in names]


def _describe(result: Inferred) -> None:
    """Plain-language notes: what kind of code this is."""
    weights = [r for r in ("input", "hidden", "output") if r in result.classes]
    var = {r: result.classes[r].get("init.var") for r in weights}
    if weights and all(v is not None and v.clean and not v.zero and v.rational == 0 for v in var.values()):
        result.notes.append("constant-std init: every weight's init variance is width-independent "
                            "(e.g. N(0, 0.02^2) everywhere)")
    for alias, owner in result.tied.items():
        if result.roles.get(alias) == "output":
            mult = result.exponents.get(alias, {}).get("mult")
            if mult is not None and mult.clean and mult.rational == 0:
                result.notes.append(f"{alias} is tied to {owner} and read without a width-dependent multiplier")
            else:
                result.notes.append(f"{alias} is tied to {owner} (readout multiplier exponent "
                                    f"{mult.text() if mult else 'not measured'})")
    lrs = {e["lr"].text() for e in result.exponents.values() if "lr" in e}
    if len(lrs) == 1 and lrs == {"0"}:
        result.notes.append("one global LR: every parameter's learning rate is the same at every width")


# ---------------------------------------------------------------- the .mup


def _power(e: Exponent) -> str:
    """n^k as spec text: a clean rational, or the fitted decimal (unclean)."""
    if e.zero:
        return "0"
    k = e.rational if e.clean else Fraction(f"{e.value:.3f}")
    if k == 0:
        return "1"
    mag = abs(k)
    body = "n" if mag == 1 else (f"n^{mag.numerator}" if mag.denominator == 1 else
                                 f"n^({mag.numerator}/{mag.denominator})" if e.clean else f"n^({float(mag):g})")
    return body if k > 0 else f"1/{body}"


def _members_comment(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit]) + (f", +{len(names) - limit} more" if len(names) > limit else "")
    return f"  # from: {shown}"


def to_spec_text(result: Inferred, name: str = "inferred") -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "inferred"
    if not re.match(r"[A-Za-z_]", name):
        name = "m_" + name
    name = name[:64]
    family = result.family or "adam"
    lines = [f"# Inferred by `mupspec infer` from {result.factory} with optimizer {result.optimizer},",
             f"# widths {result.widths}: what the code does, as width exponents (constant factors",
             "# dropped: a spec's rules are anchored at a base width).",
             f'parametrization {name} "inferred from {_quoted(result.factory)}"', "", "width n", ""]
    lines += [f"# {n}" for n in result.notes]
    if result.notes:
        lines.append("")
    # a class without weight decay says so (factor 0) when another class has some
    decays = any("wd" in f and not f["wd"].zero for f in result.classes.values())
    for role in PARAM_BLOCKS:
        if role not in result.classes:
            continue
        fields = result.classes[role]
        lines.append(f"{role} {{" + _members_comment(result.members[role]))
        if role != "norm":  # norm blocks have no init rule (gains start at 1)
            lines.append(f"  init.var = {_power(fields['init.var'])}" + _unclean(fields["init.var"]))
        if "mult" in fields and role in ("input", "hidden", "output") and not fields["mult"].zero:
            lines.append(f"  mult = {_power(fields['mult'])}" + _unclean(fields["mult"]))
        if "lr" in fields and not fields["lr"].zero:
            lines.append(f"  lr.{family} = {_power(fields['lr'])}" + _unclean(fields["lr"]))
        if "wd" in fields and (decays if fields["wd"].zero else not (fields["wd"].clean and fields["wd"].rational == 0)):
            lines.append(f"  wd.{family} = {_power(fields['wd'])}" + _unclean(fields["wd"]))
        if family == "adam" and "eps" in fields and not fields["eps"].zero \
                and not (fields["eps"].clean and fields["eps"].rational == 0):
            lines.append(f"  eps.adam = {_power(fields['eps'])}" + _unclean(fields["eps"]))
        for n in result.dissent.get(role, []):
            lines.append(f"  # differs: {n}: " + ", ".join(_field_text(f, e) for f, e in result.exponents[n].items()))
        lines += ["}", ""]
    lines += _part_blocks(result, family)
    if result.logit is not None:
        lines += ["attention {  # the scale passed to F.scaled_dot_product_attention",
                  f"  logit = {_power(result.logit)}" + _unclean(result.logit), "}", ""]
    return "\n".join(lines).rstrip() + "\n"


def _part_blocks(result: Inferred, family: str) -> list[str]:
    """One sub-role block per part that differs from its class, stating only
    the fields it differs in (the rest follow the class), in the language's
    order of sub-roles."""
    from mupspec.ir import SUBROLES

    spelled = {"init.var": "init.var", "mult": "mult", "lr": f"lr.{family}", "wd": f"wd.{family}", "eps": "eps.adam"}
    lines = []
    for part in (p for p in SUBROLES if p in result.parts):
        fields = [(f, e) for f, e in result.parts[part].items()
                  if f in spelled and (f != "eps" or family == "adam")
                  and (f != "mult" or SUBROLES[part] in ("input", "hidden", "output"))]
        if not fields:
            continue
        lines.append(f"{part} {{" + _members_comment(result.members[part]))
        lines += [f"  {spelled[f]} = {_power(e)}" + _unclean(e) for f, e in fields]
        lines += ["}", ""]
    return lines


def _field_text(f: str, e: Exponent) -> str:
    return f"{f} zero" if e.zero else f"{f} n^{e.text()}"


def _unclean(e: Exponent) -> str:
    return "" if e.clean else f"  # UNCLEAN fit: slope {e.value:+.3f}, residual {e.residual:.3f}: not rounded"


def _quoted(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')


def render(result: Inferred) -> str:
    head = f"{'parameter':34} {'role':7} " + " ".join(f"{f:>9}" for f in FIELDS)
    lines = [f"infer {result.factory} (optimizer {result.optimizer}, widths {result.widths}): width exponents "
             "of what the code does", head, "-" * len(head)]
    for pname, fields in result.exponents.items():
        role = result.roles.get(pname, "?") + ("*" if pname in result.tied else "")
        lines.append(f"{pname[:34]:34} {role:7} " + " ".join(f"{fields[f].text() if f in fields else '-':>9}"
                                                            for f in FIELDS))
    if result.logit is not None:
        lines.append(f"{'attention logit scale':34} {'':7} {result.logit.text():>9}")
    if result.tied:
        lines.append("* a second name of a tied tensor")
    lines += [f"note: {n}" for n in result.notes]
    for part, fields in result.parts.items():
        lines.append(f"note: {part} ({len(result.members[part])} parameter(s)) differs from its class in "
                     + ", ".join(_field_text(f, e) for f, e in fields.items()) + ": a sub-role block")
    for role, names in result.dissent.items():
        if names:
            lines.append(f"note: {role}: {len(names)} parameter(s) differ from the class's rule: {', '.join(names)}")
    if result.unclean:
        lines.append("UNCLEAN (not a clean power of width, written unrounded): " + "; ".join(result.unclean))
    return "\n".join(lines)

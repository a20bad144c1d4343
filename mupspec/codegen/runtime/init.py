"""Runtime part `init`: rescale the model's own tensors (after learning how the model's
own init scales from the base model to this one), or draw them, as the spec says.

Copied below its RUNTIME marker into every generated module (see
mupspec/codegen/runtime/__init__.py); the imports above the marker only
name what this part uses from the others.
"""

import math

import torch

from mupspec.codegen.runtime.roles import _known_axes, _owner

# ---- RUNTIME (everything below is copied into each generated module) ----


def _torch_default_law(module, pname, rank, base_weight_fan_in, weight_fan_in, record):
    """How PyTorch's default init variance changes from base to target, for the
    module types whose default init it documents: Linear and Conv weights and
    their biases ~ 1/fan_in of the weight (kaiming_uniform, a=sqrt(5));
    nn.Embedding N(0, 1). None for anything else (a raw parameter, HF Conv1D)."""
    if isinstance(module, torch.nn.Embedding) and pname == "weight":
        return "constant", 1.0
    if not isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
        return None
    if pname == "weight" and rank >= 2:
        return "1/fan_in", record.base_fan_in / record.fan_in
    if pname == "bias" and weight_fan_in is not None:
        return "1/fan_in of the weight", base_weight_fan_in / weight_fan_in
    return None


def _weight_fan_in(module, base_shapes_, prefix):
    """(base fan_in, fan_in) of the weight beside a bias, or (None, None)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or (prefix + "weight") not in base_shapes_:
        return None, None
    axes = _known_axes(module, "weight", weight.dim())
    if axes is None:
        return None, None
    fan_in = lambda shape: math.prod(n for n, a in zip(shape, axes) if a != "out")  # noqa: E731
    return fan_in(base_shapes_[prefix + "weight"]), fan_in(tuple(weight.shape))


def _law_candidates(record, weight_fans):
    """The init laws a model's own code plausibly follows, as (name, variance
    ratio target/base): constant (HF's std 0.02, N(0, 1) embeddings), 1/fan_in
    (PyTorch's Linear), 1/fan_out, 2/(fan_in + fan_out) (Xavier), and for a
    vector beside a weight the weight's 1/fan_in."""
    out = [("constant", 1.0), ("1/fan_in", record.base_fan_in / record.fan_in),
           ("1/fan_out", record.base_fan_out / record.fan_out),
           ("2/(fan_in+fan_out)", (record.base_fan_in + record.base_fan_out) / (record.fan_in + record.fan_out))]
    if weight_fans[0] is not None:
        out.append(("1/fan_in of the weight", weight_fans[0] / weight_fans[1]))
    return out


def _mean_square(tensor):
    """(mean square, its relative sampling variance per element) of a tensor."""
    x2 = tensor.detach().double().flatten() ** 2
    ms = float(x2.mean())
    return ms, (float(x2.var(unbiased=False)) / (ms * ms) if ms > 0.0 else 0.0)


def _init_law(record, module, pname, tensor, base_tensor, base_shapes_):
    """(law, variance ratio target/base) of the model's own init: learned from
    the tensors the user's code built at the base and at this size, snapped to
    the nearest plausible law (PyTorch's default for its own modules when it
    fits the measurement); a clear error when none fits."""
    prefix = record.name[: len(record.name) - len(pname)]
    weight_fans = _weight_fan_in(module, base_shapes_, prefix)
    candidates = _law_candidates(record, weight_fans)
    if len({round(v, 12) for _, v in candidates}) == 1:
        return candidates[0]  # nothing grows that any law depends on (e.g. the base model itself)
    default = _torch_default_law(module, pname, len(record.shape), *weight_fans, record)
    if base_tensor is None:
        if default is not None:
            return default
        raise ValueError(f"{record.name}: init='rescale' needs the base model itself (not its shapes) to learn how "
                         f"this {type(module).__name__} parameter's own init scales; pass the base model, or "
                         "init='normal' (draw from the spec) or init='none'")
    ms_base, k_base = _mean_square(base_tensor)
    ms, k = _mean_square(tensor)
    if ms == 0.0 and ms_base == 0.0:
        return "zero", 1.0  # zero-initialized at both sizes (HF biases): stays zero
    if ms == 0.0 or ms_base == 0.0:
        raise ValueError(f"{record.name}: zero in {'this' if ms == 0.0 else 'the base'} model only: init='rescale' "
                         "cannot learn its init law; use init='normal' or init='none'")
    z = math.log(ms / ms_base)
    tolerance = 5.0 * math.sqrt(k_base / base_tensor.numel() + k / tensor.numel()) + 1e-6
    if default is not None and abs(z - math.log(default[1])) <= tolerance:
        return default
    close = [(n, v) for n, v in candidates if abs(z - math.log(v)) <= tolerance]
    if close and len({round(v, 12) for _, v in close}) == 1:
        return close[0]
    seen = ", ".join(f"{n} ({v:.4g})" for n, v in candidates)
    raise ValueError(f"{record.name}: its own init changes the mean square by {math.exp(z):.4g} from the base model "
                     f"to this one, which {'fits several' if close else 'fits none'} of the laws {seen}: "
                     "init='rescale' cannot tell how to rescale it; use init='normal' (draw from the spec) or "
                     "init='none' (keep your init)")


@torch.no_grad()
def _initialize(model, base, base_tensors, records, init, init_scale, generator, anchor="base"):
    """init="normal": N(0, init_scale^2/base_fan_in * init_ratio), i.e. the
    standard 1/fan_in init at the base model, or with anchor="absolute"
    N(0, init_scale^2 * init.var) (unit-scaling's N(0, 1) where init.var = 1);
    init="rescale": multiply the
    tensor already there so that its variance follows the spec instead of
    the model's own law (learned by _init_law) -- microsoft/mup's way,
    without assuming PyTorch's default init. A fused parameter's parts
    (query | key | value) each follow their own sub-role."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters(remove_duplicate=False))
    base_variance = (lambda record: 1.0) if anchor == "absolute" else (lambda record: 1.0 / record.base_fan_in)
    for record in records:
        if record.init_ratio is None or record.tied_to is not None:
            continue  # norm gains and a tied tensor's second name keep the init they have
        if anchor == "absolute" and record.block is None:
            continue  # a scalar (nothing grows): no rule gives it an absolute variance; it keeps its own
        p = params[record.name]
        module, pname = _owner(modules, record.name)
        fold = record.mult if record.folded else 1.0
        parts = record.slices or [{"axis": 0, "start": 0, "stop": p.shape[0] if p.dim() else 1,
                                   "init_ratio": record.init_ratio}]
        if init == "rescale" and any(part["init_ratio"] for part in parts):  # zeroing needs no law
            law, own = _init_law(record, module, pname, p, (base_tensors or {}).get(record.name), base)
            record.init_law = law
        elif init == "rescale":
            own = 1.0
        for part in parts:
            view = p.narrow(part["axis"], part["start"], part["stop"] - part["start"]) if p.dim() else p
            if init == "normal":
                std = init_scale * math.sqrt(part["init_ratio"] * base_variance(record)) * fold
                if std > 0.0:
                    view.normal_(0.0, std, generator=generator)
                else:
                    view.zero_()
            else:
                view.mul_(math.sqrt(part["init_ratio"] / own) * fold)
                std = float(view.float().std()) if view.numel() > 1 else abs(float(view.float().sum()))
            part["init_std"] = std
        record.init_std = parts[0]["init_std"] if record.slices is None else None

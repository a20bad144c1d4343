"""Stage 6b: the spec-independent half of every generated module.

`mupspec.codegen.generate` emits the spec's rules as Python functions (a
`RULES` table and a few constants) and then copies the text below the
RUNTIME marker verbatim. So this file is never imported by mupspec itself:
its code runs only inside a generated module, where `RULES`, `BLOCKS`, `FAMILIES`,
`WIDTH_SYMBOLS`, `DEPTH_SYMBOL`, `HYPER_DEFAULTS` and `SPEC_NAME` are defined
above it. It may use only `math` and `torch` (the generated module's only
imports). The API is documented in docs/codegen.md.
"""

import math

import torch

RULES: dict = {}
BLOCKS: tuple = ()
FAMILIES: tuple = ()
WIDTH_SYMBOLS: tuple = ()
DEPTH_SYMBOL = None
HYPER_DEFAULTS: dict = {}
SPEC_NAME = ""

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


# ------------------------------------------------------------- roles and fans


def base_shapes(model):
    """{name: shape} of a model's parameters: what parametrize needs of the
    base model (save it beside a checkpoint instead of building the base)."""
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _glob(pattern, text):
    """fnmatch-style match with `*` only (any run of characters)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == text
    if not text.startswith(parts[0]) or not text.endswith(parts[-1]):
        return False
    pos, end = len(parts[0]), len(text) - len(parts[-1])
    for part in parts[1:-1]:
        found = text.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return pos <= end


def _owner(modules, name):
    prefix, _, pname = name.rpartition(".")
    return modules.get(prefix), pname


def _fans(module, pname, shape):
    """(fan_in, fan_out) in the spec's sense: a weight maps fan_in -> fan_out
    (nn.Embedding stores it transposed); a vector has fan_in 1."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    if isinstance(module, torch.nn.Embedding) and pname == "weight":
        return shape[0], shape[1]
    return math.prod(shape[1:]), shape[0]


def _is_norm(module):
    return module is not None and "Norm" in type(module).__name__


def _role_by_shape(name, shape, base, module, pname):
    """microsoft/mup's rule: the dimensions that differ from the base model
    grow with width; which ones grow decides the role."""
    if len(base) != len(shape):
        return None, f"{name}: shape {tuple(shape)} has a different rank from the base model's {tuple(base)}"
    grows = [a != b for a, b in zip(shape, base)]
    if _is_norm(module):
        return "norm", None
    if not any(grows):
        return "scalar", None
    if len(shape) == 1:
        return "bias", None
    if isinstance(module, torch.nn.Embedding) and pname == "weight":
        grows = [grows[1], grows[0]]  # (fan_out, fan_in) order, as for a Linear weight
    if any(grows[2:]):
        return None, (f"{name}: dimensions {[i for i, g in enumerate(grows) if g]} differ from the base "
                      f"model {tuple(base)}; only fan_in and fan_out may grow with width")
    out_grows, in_grows = grows[0], grows[1]
    return {(True, True): "hidden", (True, False): "input", (False, True): "output"}[(out_grows, in_grows)], None


def _role(name, shape, base, module, pname, patterns):
    if base is None:  # even with a pattern: without base sizes nothing can be anchored
        return None, f"{name}: not in the base model"
    for pattern, role in patterns:
        if _glob(pattern, name):
            return role, None
    return _role_by_shape(name, shape, base, module, pname)


def _block(role):
    if role == "scalar":
        return None
    if role == "norm" and "norm" not in BLOCKS:
        return "bias"  # vector-like parameters share the bias rules when a spec has no norm block
    return role


# ------------------------------------------------------------- rule values


def _dims(widths, depth, which):
    dims = dict(widths or {})
    unknown = sorted(set(dims) - set(WIDTH_SYMBOLS))
    if unknown:
        raise ValueError(f"{which}: unknown width symbol(s) {unknown}; {SPEC_NAME} declares {list(WIDTH_SYMBOLS)}")
    if DEPTH_SYMBOL is not None and depth is not None:
        dims[DEPTH_SYMBOL] = depth
    return dims


def _dim(dims, symbol, rule):
    if symbol not in dims:
        which = "depth=/base_depth=" if symbol == DEPTH_SYMBOL else "widths=/base_widths="
        raise ValueError(f"{SPEC_NAME}: rule {rule} uses `{symbol}`: pass {which} with a value for it")
    return dims[symbol]


def _hypers(overrides):
    unknown = sorted(set(overrides or {}) - set(HYPER_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; {SPEC_NAME} declares {sorted(HYPER_DEFAULTS)}")
    return {**HYPER_DEFAULTS, **(overrides or {})}


def _value(block, field, fan_in, fan_out, dims, hypers):
    try:
        value = RULES[(block, field)](fan_in, fan_out, dims, hypers)
    except ZeroDivisionError:
        raise ValueError(f"{SPEC_NAME}: {block}.{field} divides by zero at "
                         f"fan_in={fan_in}, fan_out={fan_out}") from None
    except (OverflowError, ValueError, TypeError) as err:  # huge powers, sqrt(<0), complex
        raise ValueError(f"{SPEC_NAME}: {block}.{field} has no finite real value at "
                         f"fan_in={fan_in}, fan_out={fan_out} ({err})") from None
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError(f"{SPEC_NAME}: {block}.{field} = {value} at fan_in={fan_in}, fan_out={fan_out}")
    return float(value)


def _family(optimizer):
    """The spec's LR-rule family of a torch optimizer (adam covers AdamW)."""
    return "sgd" if optimizer == "sgd" else "adam"


def _optimizer_factors(ratio, optimizer):
    """(lr, weight decay, eps) factors of a block for this optimizer, given the
    block's ratio(field); eps is Adam's only."""
    family = _family(optimizer)
    return ratio("lr." + family), ratio("wd." + family), (ratio("eps.adam") if family == "adam" else 1.0)


def _ratio(block, field, target, base, hypers):
    """rule(target sizes, hypers) / rule(base sizes, default hypers): the
    anchoring that makes the base model the standard one."""
    top = _value(block, field, *target, hypers)
    bottom = _value(block, field, *base, HYPER_DEFAULTS)
    if bottom == 0.0:
        if top == 0.0:
            return 0.0
        raise ValueError(f"{SPEC_NAME}: {block}.{field} is 0 at the base model but {top} at the target")
    return top / bottom


def _default_var_ratio(module, pname, shape, base_shapes_, prefix):
    """How PyTorch's default init variance changes from base to target: Linear
    and Conv weights and their biases draw with variance ~ 1/fan_in of the
    weight (kaiming_uniform, a=sqrt(5)); nn.Embedding draws N(0, 1)."""
    if isinstance(module, torch.nn.Embedding):
        return 1.0
    if len(shape) >= 2:
        return math.prod(base_shapes_.get(prefix + pname, shape)[1:]) / math.prod(shape[1:])
    weight = getattr(module, "weight", None)
    if len(shape) == 1 and isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        base_weight = base_shapes_.get(prefix + "weight")
        if base_weight is not None:
            return math.prod(base_weight[1:]) / math.prod(weight.shape[1:])
    return 1.0


# ------------------------------------------------------------- parametrize


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


@torch.no_grad()
def _initialize(model, base, records, init, init_scale, generator):
    """init="normal": N(0, init_scale^2/base_fan_in * init_ratio), i.e. the
    standard 1/fan_in init at the base model; init="rescale": multiply the
    tensor already there (PyTorch's default init) so that its variance
    follows the spec instead of PyTorch's 1/fan_in -- microsoft/mup's way."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for record in records:
        if record.init_ratio is None:
            continue  # scalars and norm gains keep the init they have
        p = params[record.name]
        module, pname = _owner(modules, record.name)
        prefix = record.name[: len(record.name) - len(pname)]
        fold = record.mult if record.folded else 1.0
        if init == "normal":
            std = init_scale * math.sqrt(record.init_ratio / record.base_fan_in) * fold
            if std > 0.0:
                p.normal_(0.0, std, generator=generator)
            else:
                p.zero_()
            record.init_std = std
        else:
            default = _default_var_ratio(module, pname, record.shape, base, prefix)
            p.mul_(math.sqrt(record.init_ratio / default) * fold)
            record.init_std = float(p.float().std()) if p.numel() > 1 else abs(float(p.float().sum()))


# ------------------------------------------------------------- multipliers


def _scale_input(mult):
    def hook(module, args):
        return (args[0] * mult,) + tuple(args[1:])
    return hook


def _scale_output(mult):
    def hook(module, args, output):
        return output * mult
    return hook


def _add_bias(extra):
    """Post-hook adding (mult-1)*bias, so that the bias enters as mult*bias."""
    def hook(module, args, output):
        shape = (-1,) + (1,) * (output.dim() - 2) if isinstance(module, torch.nn.modules.conv._ConvNd) else (-1,)
        return output + extra * module.bias.view(shape)
    return hook


def _attach_multipliers(model, records):
    """Forward multipliers as module hooks: nothing is attached to a
    parameter, the state_dict is the plain model's, and torch.compile traces
    the hooks like any Python code. Linear/Conv: y = W(m_W x) + m_b b;
    Embedding: m_W * E[x]."""
    modules = dict(model.named_modules())
    handles = []
    for record in records:
        if record.mult == 1.0 or record.folded:
            continue
        module, pname = _owner(modules, record.name)
        linear = isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
        if linear and pname == "weight":
            handles.append(module.register_forward_pre_hook(_scale_input(record.mult)))
        elif linear and pname == "bias":
            handles.append(module.register_forward_hook(_add_bias(record.mult - 1.0)))
        elif isinstance(module, torch.nn.Embedding) and pname == "weight":
            handles.append(module.register_forward_hook(_scale_output(record.mult)))
        else:
            raise ValueError(f"{record.name}: multiplier {record.mult:g} on a {type(module).__name__} cannot be "
                             "applied by a hook (only Linear, Conv and Embedding); use multipliers='fold'")
    return handles


# ------------------------------------------------------------- optimizer


def param_groups(model, plan, *, lr, weight_decay=0.0, eps=1e-8):
    """torch.optim parameter groups: one per distinct (lr, weight decay, eps)
    value, in parameter order (few groups: each costs the optimizer a pass);
    `roles` lists the roles in a group. Each group's lr is an ordinary
    number, so LR schedulers scale every group alike."""
    params = dict(model.named_parameters())
    groups = {}
    for record in plan:
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


def attention_scale(base_scale, widths, base_widths, hypers=None):
    """The attention-logit factor for q.k: base_scale (e.g. 1/sqrt(d_head) of
    the base model) times the spec's logit rule at `widths` over its value at
    `base_widths`."""
    if "attention" not in BLOCKS:
        return base_scale
    target = (1, 1, _dims(widths, None, "widths"))
    base = (1, 1, _dims(base_widths, None, "base_widths"))
    return base_scale * _ratio("attention", "logit", target, base, _hypers(hypers))


# ------------------------------------------------------------- report


def format_table(plan, lr=None):
    """One line per parameter: name, shape, role, init std, multiplier, LR
    factor (or effective LR when `lr` is given), weight decay and eps factors."""
    lr_head = "lr" if lr is not None else "lr factor"
    head = ("name", "shape", "role", "init std", "mult", lr_head, "wd factor", "eps factor")
    rows = [head]
    for r in plan:
        std = "keep" if r.init_std is None else f"{r.init_std:.4g}"
        mult = f"{r.mult:.4g}" + (" (folded)" if r.folded else "")
        lr_text = f"{r.lr_factor * lr:.4g}" if lr is not None else f"{r.lr_factor:.4g}"
        role = r.role + (" (res)" if r.branch else "")  # inside a residual branch
        rows.append((r.name, "x".join(map(str, r.shape)) or "()", role, std, mult, lr_text,
                     f"{r.wd_factor:.4g}", f"{r.eps_factor:.4g}" if plan.optimizer != "sgd" else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    title = f"{SPEC_NAME}: optimizer={plan.optimizer}, init={plan.init}, multipliers={plan.multipliers}"
    return "\n".join([title, lines[0], "  ".join("-" * w for w in widths)] + lines[1:])

"""Stage 4e: the coordinate check of any nn.Module.

Takes a model factory (`make_model(width) -> nn.Module`, the user's own
code), widths, and a spec; builds the model at every width and seed,
parametrizes it with the spec's generated module (unless `as_is`), trains it
a few steps on a fixed input with a fixed linear loss, and records, through
hooks (nothing in the model is changed):

- every *site*: each module that owns parameters (Linear, Embedding, norms,
  convolutions, ...), the input of the readout (the features the output
  reads, `features`), every attention-logit matrix (`logits`: the q, k of
  F.scaled_dot_product_attention or of the generated `attention` helper,
  or, for attention written by hand, the square (..., T, T) input of a
  softmax over its last axis), and the model output;
- per site and step, the per-coordinate RMS of its output at init (`act`),
  its change since init (`delta`), and, for modules, the own-update term
  f(x_t; θ_t - θ_0) (`own`: the module re-run on its current input with the
  parameters' change, multipliers included -- exact for modules linear in
  their parameters, which every parametrized layer is);
- per parameter, the LR-scaled relative update ||θ_t - θ_0|| / ||θ_0|| (`upd`).

`fit.fit_exponents` turns the samples into width exponents with a 95%
interval over seeds; `compare` sets every site's exponent against check's
prediction for its role (`role_predictions`). The default loss is
sum(output * c) with a fixed N(0, 1) tensor c, so its gradient in the
output is Θ(1) whatever the output's size (measure.py's choice); the LR is
small, so that t steps are a perturbation and exponents, not instabilities,
are what is measured.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import PurePath
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from mupspec.empirical.fit import Fit, fit_table
from mupspec.empirical.measure import Sample
from mupspec.empirical.runner import Task, run_tasks
from mupspec.errors import Diagnostic, MupError

QUANTITIES = ("act", "delta", "own", "upd")
DESCRIBE = {"act": "size at init", "delta": "change after t steps", "own": "own-update term",
            "upd": "relative update |Δθ|/|θ|"}
TIED_OUTPUT = "tied-out"  # the role of a readout that reads the token embedding's tensor
ROLE_ORDER = ("input", "hidden", "output", TIED_OUTPUT, "bias", "norm", "features", "logits", "scalar")
DEFAULT_LR = {"sgd": 1e-4, "adam": 1e-5}
OUTPUT_SITE = "[output]"


def rms(t: torch.Tensor, count: int | None = None) -> float:
    """Per-coordinate RMS in one fused reduction (no squared copy); `count`:
    how many coordinates there are when the others are zeroed out (masked)."""
    return float(torch.linalg.vector_norm(t.detach())) / math.sqrt(max(t.numel() if count is None else count, 1))


# ---------------------------------------------------------------- predictions


def role_predictions(spec, family: str, first_steps: bool = True) -> dict[tuple[str, str], float]:
    """check's width exponent for every (role, quantity) it predicts (floats;
    +-inf for a zero init). `first_steps`: the output weights held at their
    init scale (what a few small steps see; see commands/verify.py). Roles of
    parameters (input, hidden, output, bias, norm) and of the other sites
    (features: the readout's input; logits; tied-out: a tied readout);
    ("output", "prop") is the output's change through W_out·Δx alone."""
    from mupspec import check, ir, symbolic
    from mupspec.symbolic import OO

    ex = symbolic.spec_exponents(spec, exact=True)
    logit = symbolic.logit_exponent(spec, exact=True)
    init = {(t.role, t.kind): t.k for t in check.init_terms(ex)}
    terms = {(t.role, t.kind): t.k for t in check.step_terms(ex, family, logit)[2]}
    # W_out still at init: what the first steps see (a zero readout has no init scale to hold)
    if first_steps and "output" in ex and ex["output"].e_init != OO:
        frozen = dict(ex, output=replace(ex["output"], **{f"c_{o}": OO for o in ir.OPTIMIZERS}))
        early = {(t.role, t.kind): t.k for t in check.step_terms(frozen, family, logit)[2]}
        terms = {**early, ("own_update", "output"): terms[("own_update", "output")]}
    out: dict[tuple[str, str], object] = {}
    for kind in ("input", "hidden", "norm"):
        if ("init", kind) in init:
            out[(kind, "act")] = init[("init", kind)]
    if ("output_init", "output") in init:
        out[("output", "act")] = init[("output_init", "output")]
    for kind in ("input", "hidden", "output", "bias", "norm"):
        if ("own_update", kind) in terms:
            out[(kind, "own")] = terms[("own_update", kind)]
    r = -terms[("features", "hidden")]
    out[("hidden", "delta")] = out[("features", "delta")] = -r
    if ("hidden", "act") in out:
        out[("features", "act")] = out[("hidden", "act")]
    if ("input", "own") in out:
        out[("input", "delta")] = out[("input", "own")]  # its input never changes
    if ("norm", "own") in out:
        out[("norm", "delta")] = max(out[("norm", "own")], -r)
    if ("output_change", "output") in terms:
        out[("output", "prop")] = terms[("output_change", "output")]
        out[("output", "delta")] = max(out[("output", "own")], terms[("output_change", "output")])
    if logit is not None:
        out[("logits", "act")] = logit + Fraction(1, 2)  # CLT over d_head terms
        out[("logits", "delta")] = terms[("attention", "attention")]
    # a readout tied to the token embedding: the residual stream still carries the token's own
    # embedding, so W_out·x has a coherent part (the self-logit): n aligned terms, not a CLT sum
    for quantity in ("act", "delta", "own"):
        if ("output", quantity) in out:
            out[(TIED_OUTPUT, quantity)] = out[("output", quantity)] + (Fraction(1, 2) if quantity == "act" else 0)
    if family != "sgd":  # Adam's first steps move every entry by ~lr: |Δθ|/|θ| ~ lr / init std
        for kind, e in ex.items():
            if math.isfinite(float(e.b)) and math.isfinite(float(e.c_adam)) and kind != "norm":
                out[(kind, "upd")] = e.b - e.c_adam
    return {key: float(v) for key, v in out.items()}


# ---------------------------------------------------------------- sites


@dataclass(frozen=True)
class Site:
    name: str
    role: str
    params: tuple[str, ...] = ()  # the module's own parameters (their names in the model)
    module: str = ""              # its name in model.named_modules()


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "logits") and isinstance(value.logits, torch.Tensor):
        return value.logits  # Hugging Face ModelOutput
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def module_sites(model: torch.nn.Module, roles: dict[str, str]) -> list[Site]:
    """One site per module that owns parameters directly (the model itself
    only when it is a single layer), its role that of its weight (or first
    parameter) under the module's own name: a readout tied to the token
    embedding is `output` under its name, as the generated plan says."""
    names = {id(p): n for n, p in model.named_parameters()}
    sites = []
    for mname, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own or (mname == "" and any(True for _ in module.children())):
            continue
        local = dict(own)
        key = "weight" if "weight" in local else own[0][0]
        full = f"{mname}.{key}" if mname else key
        role = roles.get(full, "scalar")
        if role == "output" and names[id(local[key])] != full:  # its tensor is named elsewhere first: tied
            role = TIED_OUTPUT
        sites.append(Site(mname or "(model)", role, tuple(names[id(p)] for _, p in own), mname))
    return sites


class Recorder:
    """Forward hooks recording every site's quantities at the current step
    (`values`: {(site, quantity): value}); `step` is set by the caller."""

    def __init__(self, model: torch.nn.Module, sites: list[Site], quantities: Sequence[str]):
        self.model, self.sites, self.quantities = model, sites, set(quantities)
        self.step, self.active = 0, True
        self.values: dict[tuple[str, str], float] = {}
        self.initial_out: dict[str, torch.Tensor] = {}
        self.params = dict(model.named_parameters())
        # θ_0, only when a quantity needs it (the own-update term, the relative update)
        self.initial = ({n: p.detach().clone() for n, p in self.params.items()}
                        if self.quantities & {"own", "upd"} else {})
        names = {id(p): n for n, p in self.params.items()}
        modules = dict(model.named_modules())
        self.handles, self._local = [], {}
        for site in sites:
            module = modules[site.module]
            self._local[site.name] = [(k, p, names[id(p)]) for k, p in module.named_parameters(recurse=False)]
            self.handles.append(module.register_forward_pre_hook(self._pre(site), prepend=True, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post(site, module)))
        self._raw: dict[str, tuple] = {}
        self._logit_index = 0
        self._busy = False  # inside an instrumented attention function
        self.moved: dict[str, torch.Tensor] = {}  # θ_t - θ_0 at the current step

    def remove(self):
        for h in self.handles:
            h.remove()

    # -- recording
    def _record(self, name: str, out: torch.Tensor, count: int | None = None) -> None:
        """`count`: the coordinates of `out` that count, the others being
        zero at every step (masked logits)."""
        out = out.detach()
        self.values[(name, "act")] = rms(out, count)
        if self.step == 0 and "delta" in self.quantities:
            self.initial_out[name] = out.clone()  # clone: a later in-place op may overwrite it
        elif "delta" in self.quantities and name in self.initial_out:
            self.values[(name, "delta")] = rms(out - self.initial_out[name], count)

    def _pre(self, site: Site):
        def hook(module, args, kwargs):
            if self.active:
                if "own" in self.quantities:
                    self._raw[site.name] = (args, kwargs)
                if site.role in ("output", TIED_OUTPUT) and args and isinstance(args[0], torch.Tensor):
                    self._record(f"{site.name}:input", args[0])
        return hook

    def _post(self, site: Site, module):
        def hook(module_, args, output):
            if not self.active:
                return None
            out = _first_tensor(output)
            if out is None:
                return None
            self._record(site.name, out)
            if self.step > 0 and "own" in self.quantities:
                self.values[(site.name, "own")] = self._own(site, module)
            return None
        return hook

    @torch.no_grad()
    def _own(self, site: Site, module) -> float:
        """The module re-run on its raw input with θ_t - θ_0 in place of its
        parameters (every hook of the parametrization fires again, so its
        multipliers are included; ours are off). The tensors are swapped in
        the module's parameter table directly: torch.func.functional_call
        does the same with several times the Python overhead."""
        args, kwargs = self._raw.pop(site.name)
        table = module._parameters
        self.active = False
        try:
            for k, p, full in self._local[site.name]:
                table[k] = self.moved[full]  # θ_t - θ_0, from record_updates
            out = _first_tensor(module(*args, **kwargs))
        finally:
            for k, p, _ in self._local[site.name]:
                table[k] = p
            self.active = True
        return rms(out) if out is not None else math.nan

    def record_output(self, out: torch.Tensor) -> None:
        self._record(OUTPUT_SITE, out)

    def record_updates(self) -> None:
        """At the start of step t: θ_t - θ_0 for every parameter, in one fused
        pass (foreach), shared by the own-update re-runs of this step's
        forward and the relative update ||θ_t - θ_0|| / ||θ_0|| (`upd`)."""
        self.moved = {}
        if self.step == 0 or not self.quantities & {"own", "upd"}:
            return
        names = list(self.params)
        with torch.no_grad():
            moved = torch._foreach_sub([self.params[n].detach() for n in names], [self.initial[n] for n in names])
            self.moved = dict(zip(names, moved))
            if "upd" not in self.quantities:
                return
            if not hasattr(self, "_initial_norms"):  # ||θ_0||, computed once
                self._initial_norms = [float(n) for n in torch._foreach_norm([self.initial[n] for n in names])]
            for name, top, base in zip(names, torch._foreach_norm(moved), self._initial_norms):
                if base > 0:
                    self.values[(name, "upd")] = float(top) / base

    # -- attention logits
    @torch.no_grad()
    def logits(self, q, k, scale, causal) -> None:
        if not self.active:
            return
        logits = (q @ k.transpose(-2, -1)) * (scale if scale is not None else q.shape[-1] ** -0.5)
        count = None
        if causal:  # only the entries attention uses: the others zeroed (tril: ~5x faster than masked_select)
            t, u = logits.shape[-2:]
            logits = logits.tril(u - t)
            count = logits[..., 0, 0].numel() * sum(min(u, max(i + u - t + 1, 0)) for i in range(t))
        self._record_logits(logits, count)

    def _record_logits(self, logits: torch.Tensor, count: int | None = None) -> None:
        self._record(f"attention[{self._logit_index}]", logits, count)
        self._logit_index += 1

    @torch.no_grad()
    def softmax_input(self, x, dim) -> None:
        """Attention written by hand: softmax over the last axis of a square
        (..., T, T) tensor is taken to be attention over logits. Masked
        entries (-inf, or a large negative fill such as -1e4 or finfo.min)
        are not logits: only the entries attention uses are recorded."""
        if not (self.active and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 3
                and x.shape[-1] == x.shape[-2] and dim in (-1, x.dim() - 1)):
            return
        x = x.detach()
        used = x > MASKED  # False for -inf, a mask fill, NaN
        self._record_logits(torch.where(used, x, 0.0), int(used.sum()))

    def _inside(self, original, record):
        """`original` with `record(*args, **kwargs)` first; while it runs,
        the softmax it may call is not recorded a second time (the generated
        helper calls torch.softmax, F.softmax calls Tensor.softmax)."""
        def call(*args, **kwargs):
            if self._busy:
                return original(*args, **kwargs)
            record(*args, **kwargs)
            self._busy = True
            try:
                return original(*args, **kwargs)
            finally:
                self._busy = False
        return call

    def sdpa(self, original):
        def record(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
            self.logits(q, k, scale, is_causal)
        return self._inside(original, record)

    def helper(self, original):
        """The generated module's attention(q, k, v, scale, causal=, mask=)."""
        def record(q, k, v, scale, *, causal=False, mask=None):
            self.logits(q, k, scale, causal)
        return self._inside(original, record)

    def softmax(self, original):
        """torch.softmax(x, dim), F.softmax(x, dim), x.softmax(dim)."""
        def record(x, *args, **kwargs):
            self.softmax_input(x, args[0] if args else kwargs.get("dim"))
        return self._inside(original, record)


MASKED = -1e3  # a softmax input at or below this is a mask fill, not a logit (logits are O(1) to O(n))


def _attention_functions(recorder) -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) for every attention entry point a
    model may call: F.scaled_dot_product_attention, the `attention` helper
    of every generated module imported, and softmax in its three spellings
    (attention written by hand). They are looked up at call time, so
    replacing the attribute instruments the user's code."""
    targets = [(F, "scaled_dot_product_attention", recorder.sdpa(F.scaled_dot_product_attention))]
    for module in _generated_modules():
        if callable(getattr(module, "attention", None)):
            targets.append((module, "attention", recorder.helper(module.attention)))
    targets += [(owner, "softmax", recorder.softmax(owner.softmax)) for owner in (torch, F, torch.Tensor)]
    return targets


_GENERATED_NAMES: list = [-1, []]  # [len(sys.modules) when scanned, names of generated modules]


def _generated_modules() -> list:
    """The generated modules imported (named mupspec_generated_*). The scan of
    sys.modules (thousands of names: a few ms, per trained network) is redone
    only when a module was added or removed; a module replaced under its
    name is found by name."""
    if _GENERATED_NAMES[0] != len(sys.modules):
        _GENERATED_NAMES[:] = [len(sys.modules), [n for n in list(sys.modules) if n.startswith("mupspec_generated_")]]
    return [sys.modules[n] for n in _GENERATED_NAMES[1] if n in sys.modules]


def _patch(targets) -> list[tuple[object, str, object, bool]]:
    """Install the replacements; (owner, attribute, original, owned) to undo
    them (`owned`: the attribute was the owner's own, not inherited)."""
    undo = []
    for owner, attr, new in targets:
        undo.append((owner, attr, getattr(owner, attr), attr in vars(owner)))
        setattr(owner, attr, new)
    return undo


def _unpatch(undo) -> None:
    for owner, attr, old, owned in reversed(undo):
        if owned:
            setattr(owner, attr, old)
        else:
            delattr(owner, attr)  # inherited (Tensor.softmax lives on torch._C.TensorBase): uncover it


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    """What one (optimizer, width, seed) run needs, prepared by `coord_check`."""

    model: torch.nn.Module
    optimizer: object            # an Optimizer or a list of them
    inputs: tuple
    kwargs: dict
    loss: Callable | None
    roles: dict[str, str]        # parameter name -> role
    sites: list[Site]


def train_and_record(run: Run, steps: int, quantities: Sequence[str], seed: int) -> dict[int, dict]:
    """{step: {(site, quantity): value}} over steps 0..steps (step t is read
    in the forward after t optimizer steps)."""
    recorder = Recorder(run.model, run.sites, quantities)
    optimizers = run.optimizer if isinstance(run.optimizer, (list, tuple)) else [run.optimizer]
    patched = _patch(_attention_functions(recorder))
    cotangent = None
    by_step: dict[int, dict] = {}
    try:
        for step in range(steps + 1):
            recorder.step, recorder.values, recorder._logit_index = step, {}, 0
            recorder.record_updates()
            out = _first_tensor(run.model(*run.inputs, **run.kwargs))
            if out is None:
                raise TypeError("the model's forward returned no tensor")
            recorder.record_output(out)
            by_step[step] = recorder.values
            if step == steps:
                break
            if run.loss is not None:
                loss = run.loss(out)
            else:
                if cotangent is None:  # fixed per seed, the same at every width (output dims do not grow)
                    gen = torch.Generator().manual_seed(20_000 + seed)
                    cotangent = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
                loss = (out * cotangent).sum()
            loss.backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
    finally:
        _unpatch(patched)
        recorder.remove()
    return by_step


# ---------------------------------------------------------------- setup


@dataclass(frozen=True)
class Width:
    """One point of the width axis: `x` (the fitted size) and how the
    factory is called (one int, or keyword sizes)."""

    x: int
    sizes: tuple[tuple[str, int], ...] | None = None

    def build(self, make_model):
        return make_model(**dict(self.sizes)) if self.sizes else make_model(self.x)

    def symbols(self, symbols: Sequence[str]) -> dict[str, int]:
        given = dict(self.sizes or ())
        return {s: given.get(s, self.x) for s in symbols}

    def __str__(self):
        return ", ".join(f"{k}={v}" for k, v in self.sizes) if self.sizes else f"width={self.x}"


def as_widths(widths) -> list[Width]:
    out = []
    for w in widths:
        if isinstance(w, dict):
            if not w:
                raise MupError(Diagnostic("an empty size mapping in widths"))
            out.append(Width(int(next(iter(w.values()))), tuple((k, int(v)) for k, v in w.items())))
        else:
            out.append(Width(int(w)))
    xs = [w.x for w in out]
    if len(xs) < 3:
        raise MupError(Diagnostic(f"widths {xs}: at least 3 widths are needed to fit an exponent",
                                  hint="e.g. --widths 64,128,256,512"))
    if any(b <= a for a, b in zip(xs, xs[1:])) or xs[0] < 1:
        raise MupError(Diagnostic(f"widths {xs} must be positive and strictly increasing",
                                  hint="e.g. --widths 64,128,256,512"))
    return out


def build_model(make_model, width: Width, factory_name: str) -> torch.nn.Module:
    try:
        model = width.build(make_model)
    except Exception as err:  # the user's code: any failure is reported, never a traceback
        raise MupError(Diagnostic(f"{factory_name}({width}) failed: {type(err).__name__}: {err}",
                                  hint="the model factory must build the model at every width given")) from None
    if not isinstance(model, torch.nn.Module):
        raise MupError(Diagnostic(f"{factory_name}({width}) returned {type(model).__name__}, not a torch.nn.Module",
                                  hint="FACTORY(width) must return the model (an nn.Module)"))
    return model


def shape_model(make_model, width: Width, factory_name: str) -> torch.nn.Module:
    """The model for its shapes only (base shapes, roles): built on the meta
    device, where no tensor is allocated or initialized; a factory that
    cannot build there (it reads a value) is built for real."""
    try:
        with torch.device("meta"):
            return build_model(make_model, width, factory_name)
    except MupError:
        return build_model(make_model, width, factory_name)


def default_input(model: torch.nn.Module, batch: int = 32, seq: int = 8):
    """A float batch for a model whose first parametrized layer is a Linear
    or convolution, token ids for one that starts with an Embedding; the
    same at every width (fixed generator)."""
    gen = torch.Generator().manual_seed(10_000)
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            return torch.randint(module.num_embeddings, (batch, seq), generator=gen)
        if isinstance(module, torch.nn.Linear):
            return torch.randn(batch, module.in_features, generator=gen)
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            return torch.randn(batch, module.in_channels, *([16] * (module.weight.dim() - 2)), generator=gen)
    raise MupError(Diagnostic(f"cannot guess an input for {type(model).__name__}",
                              hint="pass --input FILE.py:FUNC (FUNC() returns the example input)"))


def prepare_inputs(value, dtype) -> tuple[tuple, dict]:
    items = value if isinstance(value, tuple) else (value,)
    cast = tuple(v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in items)
    return cast, {}


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class SiteFit:
    site: str
    role: str
    fit: Fit
    predicted: float | None
    agrees: bool | None


@dataclass(frozen=True)
class RoleRow:
    optimizer: str
    role: str
    quantity: str
    step: int
    predicted: float
    measured: float      # mean over the role's sites
    ci: float            # the widest site interval
    sites: tuple[SiteFit, ...]

    @property
    def agrees(self) -> bool:
        return all(s.agrees for s in self.sites)

    @property
    def failing(self) -> list[SiteFit]:
        return [s for s in self.sites if not s.agrees]


def compare(fits: dict, site_roles: dict[str, str], own_roles: dict[str, tuple[str, ...]],
            preds: dict[str, dict], tol: float, steps: int) -> list[RoleRow]:
    """One row per (optimizer, role, quantity) check predicts: act at init,
    the others after the last step. A module's own-update prediction is the
    largest over its parameters' roles (a weight and its bias)."""
    grouped: dict[tuple, list[SiteFit]] = {}
    for (opt, step, site, quantity), fit in fits.items():
        if (quantity == "act") != (step == 0) or (step not in (0, steps)):
            continue
        role = site_roles.get(site)
        if role is None:
            continue
        table = preds.get(opt, {})
        if quantity == "own" and own_roles.get(site):
            options = [table[(r, "own")] for r in own_roles[site] if (r, "own") in table]
            pred = max(options) if options else None
        else:
            pred = table.get((role, quantity))
        if pred is None or not math.isfinite(pred):
            continue  # e.g. a zero-init readout: nothing to fit a slope to
        agrees = fit.ok and abs(fit.exponent - pred) <= tol
        grouped.setdefault((opt, role, quantity, step, pred), []).append(SiteFit(site, role, fit, pred, agrees))
    rows = []
    for (opt, role, quantity, step, pred), sites in grouped.items():
        good = [s.fit.exponent for s in sites if s.fit.ok]
        measured = sum(good) / len(good) if good else math.nan
        ci = max((s.fit.ci for s in sites), default=math.inf)
        rows.append(RoleRow(opt, role, quantity, step, pred, measured, ci, tuple(sites)))
    order = {r: i for i, r in enumerate(ROLE_ORDER)}
    return sorted(rows, key=lambda r: (r.optimizer, QUANTITIES.index(r.quantity), order.get(r.role, 99), r.predicted))


# ---------------------------------------------------------------- result


@dataclass
class CoordResult:
    title: str
    rows: list[RoleRow]
    samples: list[Sample]
    fits: dict
    preds: dict[str, dict]
    site_roles: dict[str, str]
    tol: float
    steps: int
    widths: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.agrees for r in self.rows)

    def render(self) -> str:
        return render(self)

    def as_json(self) -> dict:
        def num(v):
            return v if v is not None and math.isfinite(v) else None

        return {"title": self.title, "ok": self.ok, "tol": self.tol, "widths": self.widths, "notes": self.notes,
                "rows": [{"optimizer": r.optimizer, "role": r.role, "quantity": r.quantity, "step": r.step,
                          "predicted": r.predicted, "measured": num(r.measured), "ci": num(r.ci), "agrees": r.agrees,
                          "sites": [{"site": s.site, "exponent": num(s.fit.exponent), "ci": num(s.fit.ci),
                                     "agrees": s.agrees} for s in r.sites]} for r in self.rows]}


def render(result: CoordResult) -> str:
    lines = [result.title]
    for opt in sorted({r.optimizer for r in result.rows}):
        head = (f"{'role':9} {'quantity':26} {'step':>4} {'sites':>5}  {'predicted':>9}  "
                f"{'measured ± 95% CI':>18}  verdict")
        lines += ["", f"optimizer {opt}", head, "-" * len(head)]
        for r in (r for r in result.rows if r.optimizer == opt):
            meas = f"{r.measured:+.3f} ± {r.ci:.3f}" if math.isfinite(r.measured) else "n/a"
            lines.append(f"{r.role:9} {DESCRIBE[r.quantity]:26} {r.step:>4} {len(r.sites):>5}  "
                         f"{r.predicted:+9.2f}  {meas:>18}  {'PASS' if r.agrees else 'FAIL'}")
    lines += [f"note: {n}" for n in result.notes]
    failed = [r for r in result.rows if not r.agrees]
    lines.append("")
    if not result.rows:
        lines.append("FAIL: nothing to compare (no site has a role check predicts)")
    elif failed:
        lines.append(f"FAIL: {len(failed)} of {len(result.rows)} exponents differ from the prediction by more "
                     f"than {result.tol}:")
        for r in failed:
            worst = sorted(r.failing, key=lambda s: -abs(_off(s)))
            parts = [f"{s.site} {s.fit.exponent:+.2f} ({_off(s):+.2f})" for s in worst[:4]]
            more = f", +{len(worst) - 4} more" if len(worst) > 4 else ""
            lines.append(f"  {r.optimizer} {r.role} {DESCRIBE[r.quantity]} (predicted {r.predicted:+.2f}): "
                         + ", ".join(parts) + more)
    else:
        lines.append(f"PASS: all {len(result.rows)} exponents within {result.tol} of the prediction")
    return "\n".join(lines)


def _off(s: SiteFit) -> float:
    return s.fit.exponent - s.predicted if s.fit.ok else math.inf


# ---------------------------------------------------------------- the check


def _family_of(optimizer) -> str | None:
    opts = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    families = set()
    for opt in opts:
        name = type(opt).__name__.lower()
        families.add("sgd" if name.endswith("sgd") else "adam" if "adam" in name else None)
    return families.pop() if len(families) == 1 else None


def coord_check(make_model, widths, *, spec=None, make_input=None, loss=None, optimizer="adam",
                steps: int = 3, seeds=3, base_width=None, as_is: bool = False, expect=None, lr=None,
                tol: float = 0.2, roles=None, residual=None, dtype=torch.float64,
                quantities: Sequence[str] = QUANTITIES, factory_name: str | None = None,
                generated=None, on_run: Callable[[], None] = lambda: None, backend=None) -> CoordResult:
    """Measure the user's model across `widths` and compare each role's width
    exponents with check's predictions for `expect` (default: `spec`): a
    class name (muP, SP, NTK, mean-field, Depth-muP, CompleteP, u-muP), a
    spec file or an ir.Spec.

    `optimizer`: a family name ("adam", "sgd": the spec's param groups, or
    one group when `as_is`), a factory `opt(model) -> Optimizer | list`, or
    a list of those (one result table each). `on_run` is called after each
    trained network (width x seed x optimizer): the CLI's progress bar.
    `backend`: where the networks are trained, one sweep-runner task each
    (`runner.py`; default: in this process)."""
    from mupspec import ir
    from mupspec.codegen import load_module
    from mupspec.resolve import load_expected, load_spec

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    name = factory_name or getattr(make_model, "__name__", "make_model")
    spec = load_spec(spec) if isinstance(spec, (str, PurePath)) else spec
    if spec is None:
        raise MupError(Diagnostic("coord_check needs a spec (what the model should follow)"))
    expect = load_expected(expect) or spec  # a class name (muP, SP, ...), a path or a spec
    points = as_widths(widths)
    base = Width(base_width) if isinstance(base_width, int) else (as_widths([base_width] * 3)[0]
                                                                    if base_width else points[0])
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    if steps < 1 or not seeds:
        raise MupError(Diagnostic("steps and seeds must be at least 1"))
    P = generated or load_module(spec, f"{spec.name}.mup")
    base_shapes = P.base_shapes(shape_model(make_model, base, name))
    families = ir.optimizers(spec)
    opts = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    samples: list[Sample] = []
    site_roles: dict[str, str] = {}
    own_roles: dict[str, tuple[str, ...]] = {}
    preds: dict[str, dict] = {}
    notes: list[str] = []
    setups = []   # per optimizer: (label, opt, plan_kwargs, param_roles, sites), made here once
    for opt in opts:
        label = opt if isinstance(opt, str) else getattr(opt, "__name__", "optimizer")
        plan_family = opt if isinstance(opt, str) else ("adam" if "adam" in families else families[0])
        if isinstance(opt, str) and opt not in families and not as_is:
            raise MupError(Diagnostic(f"`{spec.name}` has no {opt} LR rules (it covers {', '.join(families)})",
                                      hint="pick --optimizer among those, or pass an optimizer factory"))
        if isinstance(opt, str):
            _covers(expect, P._family(opt))
        largest = shape_model(make_model, points[-1], name)
        # delta: what grows, so that the rules apply at the base width too (set_base_shapes' delta)
        plan_kwargs = dict(optimizer=plan_family, widths=points[-1].symbols(P.WIDTH_SYMBOLS),
                           base_widths=base.symbols(P.WIDTH_SYMBOLS), roles=roles, residual=residual,
                           delta=P.base_shapes(largest) if points[-1].x != base.x else None)
        param_roles, sites = _roles_and_sites(P, largest, base_shapes, plan_kwargs, name, points[-1])
        setups.append((label, opt, plan_kwargs, param_roles, sites))
    # every (optimizer, width, seed) network is one task of the sweep runner, on `backend`
    shared = CoordSetup(spec, generated or P, make_model, name, base_shapes, setups, as_is, make_input, loss, lr,
                        dtype, steps, tuple(quantities))
    tasks = [Task(measure_run, (k, width, seed), threads=torch.get_num_threads(), shared=shared,
                  label=f"{name}({width}) seed {seed}")
             for k in range(len(setups)) for width in points for seed in seeds]
    results = run_tasks(tasks, backend, on_done=lambda task: on_run())
    by_task = {task.args: result for task, result in zip(tasks, results)}
    for k, (label, opt, plan_kwargs, param_roles, sites) in enumerate(setups):
        family = None
        for width in points:
            for seed in seeds:
                by_step, family = by_task[(k, width, seed)]
                for site in sites:
                    site_roles[site.name] = site.role
                    own_roles[site.name] = (TIED_OUTPUT,) if site.role == TIED_OUTPUT else \
                        tuple(dict.fromkeys(param_roles.get(p, site.role) for p in site.params))
                    if site.role in ("output", TIED_OUTPUT):
                        site_roles[f"{site.name}:input"] = "features"
                site_roles.update({p: r for p, r in param_roles.items()})
                tied = any(site.role == TIED_OUTPUT for site in sites)
                site_roles[OUTPUT_SITE] = TIED_OUTPUT if tied else "output"
                for step, values in by_step.items():
                    for (site, quantity), value in values.items():
                        site_roles.setdefault(site, "logits" if site.startswith("attention[") else "scalar")
                        samples.append(Sample(label, width.x, 0, seed, step, site, quantity, value))
        if family is not None and not isinstance(opt, str):
            _covers(expect, family)
        if family is None:
            notes.append(f"{label}: no SGD/Adam family recognized; only sizes at init are compared")
        preds[label] = _only_init(role_predictions(expect, family or "adam")) if family is None \
            else role_predictions(expect, family)
    fits = fit_table(samples)
    rows = compare(fits, site_roles, own_roles, preds, tol, steps)
    how = "as is" if as_is else f"parametrized by `{spec.name}`"
    against = f"`{expect.name}`" if expect is not spec else f"`{spec.name}`"
    title = (f"coordinate check of {name} ({how}) against {against}'s predictions: widths "
             f"{[w.x for w in points]} (base {base.x}), {len(seeds)} seeds, {steps} steps")
    return CoordResult(title, rows, samples, fits, preds, site_roles, tol, steps, [w.x for w in points], notes)


def _covers(expect, family: str) -> None:
    """An expected class must state rules for the optimizer measured: NTK and
    mean-field are SGD parametrizations (TP4), u-muP an Adam one."""
    from mupspec import ir

    covered = ir.optimizers(expect)
    if family not in covered:
        raise MupError(Diagnostic(f"`{expect.name}` states no {family} rules (it covers {', '.join(covered)}): "
                                  f"it predicts nothing for a {family} run",
                                  hint=f"measure with --optimizer {covered[0]}, or expect another class"))


def _only_init(preds: dict) -> dict:
    return {k: v for k, v in preds.items() if k[1] == "act"}


def _roles_and_sites(P, model, base_shapes, plan_kwargs, name, width) -> tuple[dict[str, str], list[Site]]:
    """Parameter roles (the generated module's plan, tied names included),
    made on `model`, a throwaway built at the largest width, and the sites."""
    model.__dict__.pop("_mupspec_parametrized", None)  # a factory may have parametrized it: re-plan, init untouched
    try:
        plan = P.parametrize(model, base_shapes, init="none", **plan_kwargs)
    except ValueError as err:
        raise MupError(Diagnostic(f"{name}({width}): cannot place the parameters with the spec: {err}")) from None
    param_roles = {r.name: r.role for r in plan}
    return param_roles, module_sites(model, param_roles)


def _fast(make, family: str):
    """The optimizer in its fastest implementation: Adam fused (one kernel per
    group; ~3x torch's foreach on CPU), SGD foreach (fused is no faster);
    torch's CPU default for both is a loop over tensors. A setting torch
    refuses (a dtype or device without the fused kernel) falls back to
    foreach: the update is the same either way."""
    extra = {} if family == "sgd" else {"eps": 1e-12}
    if family != "sgd":
        try:
            return make(fused=True, **extra)
        except (RuntimeError, ValueError):
            pass
    return make(foreach=True, **extra)


def _prepare(P, make_model, name, width, base_shapes, seed, opt, plan_kwargs, as_is, make_input, loss, lr, dtype,
             param_roles, sites) -> tuple[Run, str | None]:
    torch.manual_seed(seed)
    model = build_model(make_model, width, name).to(dtype)
    plan = None
    if not as_is:
        try:
            plan = P.parametrize(model, base_shapes, generator=torch.Generator().manual_seed(seed), **plan_kwargs)
        except ValueError as err:
            raise MupError(Diagnostic(f"{name}({width}): cannot parametrize with the spec: {err}")) from None
    if isinstance(opt, str):
        rate = lr if lr is not None else DEFAULT_LR[P._family(opt)]
        if as_is:
            cls = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
            optimizer = _fast(lambda **extra: cls(model.parameters(), lr=rate, **extra), opt)
        else:
            optimizer = _fast(lambda **extra: P.make_optimizer(model, plan, lr=rate, **extra), opt)
        family = P._family(opt)
    else:
        try:
            optimizer = opt(model)
        except Exception as err:
            raise MupError(Diagnostic(f"optimizer factory failed at {width}: {type(err).__name__}: {err}")) from None
        family = _family_of(optimizer)
    try:
        example = make_input() if make_input is not None else default_input(model)
    except MupError:
        raise
    except Exception as err:
        raise MupError(Diagnostic(f"input function failed: {type(err).__name__}: {err}")) from None
    inputs, kw = prepare_inputs(example, dtype)
    return Run(model, optimizer, inputs, kw, loss, param_roles, sites), family


class CoordSetup:
    """What every network of one coord_check shares (a sweep-runner task's shared
    object): the spec, the user's factories, the base shapes and per optimizer its
    plan arguments, roles and sites. The generated module stays in this process:
    another process (a Ray worker) generates its own from the spec."""

    def __init__(self, spec, generated, make_model, name, base_shapes, setups, as_is, make_input, loss, lr,
                 dtype, steps, quantities):
        self.spec, self.generated, self.make_model, self.name = spec, generated, make_model, name
        self.base_shapes, self.setups, self.as_is = base_shapes, setups, as_is
        self.make_input, self.loss, self.lr, self.dtype = make_input, loss, lr, dtype
        self.steps, self.quantities = steps, quantities

    def __getstate__(self):
        return self.__dict__ | {"generated": None}   # a module does not pickle

    def module(self):
        if self.generated is None:
            from mupspec.codegen import load_module

            self.generated = load_module(self.spec, f"{self.spec.name}.mup")
        return self.generated


def measure_run(k: int, width: Width, seed: int, *, shared: CoordSetup) -> tuple[dict[int, dict], str | None]:
    """One network: the k-th optimizer's setup at `width` and `seed`, trained and
    recorded; ({step: {(site, quantity): value}}, the optimizer family found)."""
    s = shared
    P = s.module()
    _, opt, plan_kwargs, param_roles, sites = s.setups[k]
    plan_kwargs = plan_kwargs | {"widths": width.symbols(P.WIDTH_SYMBOLS)}
    run, family = _prepare(P, s.make_model, s.name, width, s.base_shapes, seed, opt, plan_kwargs, s.as_is,
                           s.make_input, s.loss, s.lr, s.dtype, param_roles, sites)
    try:
        return train_and_record(run, s.steps, s.quantities, seed), family
    except MupError:
        raise
    except Exception as err:
        raise MupError(Diagnostic(f"{s.name}({width}): the forward/backward pass failed: "
                                  f"{type(err).__name__}: {err}",
                                  hint="check the model and its example input (--input)")) from None


"""Stage 3b: the μP checker -- exponents -> size terms -> verdicts -> classification.

Takes a resolved `ir.Spec`; returns a `CheckResult` (plain data, rendered by
`report`). The calculus is THEORY.md §8 (full alignment, the Tensor Programs
assumption), validated against TP4 Table 1 and TP5 Tables 3/8/9 by
tests/test_check*.py. All sizes are growth exponents: a quantity is Θ(n^k);
k > 0 grows with width, k = 0 is Θ(1), k < 0 vanishes.

Per optimizer family, with the invariants e_init, e_opt of symbolic.py and the
backward signal g (SGD: min(e_init,out, e_sgd,out), TP4; Adam: 0, its step is
normalized), one step changes
  - a vector-like layer's output (input, bias, norm):  k = -(e_opt + g)
  - a hidden layer's output, ΔW·x summing n aligned terms: k = 1 - e_opt - g
  - the features (TP4's r): r = -max of the above (the change propagates)
  - the output by its own update: k = 1 - e_opt,out
  - the output through W_out·Δx (coherent):  k = 1 - min(e_init,out, e_opt,out) - r
Attention logits q·k/d^s: k = logit + max(1/2, 1 - r) (CLT at init, law of
large numbers once q and k move together; TP5 §6.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from mupspec import ir
from mupspec import symbolic as sym
from mupspec.symbolic import INF as OO

# Exponents are exact: Fractions, and float infinities for a zero init (the
# exact path of symbolic.py); sympy numbers from `symbolic.spec_exponents`
# work here too (verify passes them).
HALF = Fraction(1, 2)
ZERO, ONE = Fraction(0), Fraction(1)
VECTOR_LIKE = ("input", "bias", "norm")
CORE = ("input", "hidden", "output")

# μP in invariant form (THEORY.md §1.4; identical for TP5 Tables 3, 8, 9).
# Every normalized family (Adam, Adafactor, Lion, Muon) shares Adam's targets:
# symbolic.ClassExponents.e_opt already folds each one's update geometry in.
MUP_INIT = {"input": ZERO, "hidden": HALF, "output": ONE, "bias": ZERO, "norm": ZERO}
_MUP_NORMALIZED = {"input": ZERO, "hidden": ONE, "output": ONE, "bias": ZERO, "norm": ZERO}
MUP_OPT = {"sgd": {"input": -ONE, "hidden": ZERO, "output": ONE, "bias": -ONE, "norm": -ONE}} | {
    o: _MUP_NORMALIZED for o in ir.OPTIMIZERS if o != "sgd"}
NORMALIZED = tuple(o for o in ir.OPTIMIZERS if o != "sgd")


def _flat(init: tuple, opt: object) -> dict:
    inp, hid, out = init
    return {"init": {"input": inp, "hidden": hid, "output": out, "bias": ZERO, "norm": ZERO},
            "opt": {k: opt for k in ir.LAYER_KINDS}}


def _global_lr(init: tuple, c: object) -> dict[str, dict]:
    """One LR ∝ n^-c for every class, mult 1 (SP-style): e_opt = c, except
    Adafactor's relative step, e = e_init + c; Muon's hybrid has no such form."""
    flat = _flat(init, c)
    return {o: flat for o in ("sgd", "adam", "lion")} | {
        "adafactor": {"init": flat["init"], "opt": {k: v + c for k, v in flat["init"].items()}}}


_SP_INIT = (ZERO, HALF, HALF)
# Named parametrizations in invariant form, per optimizer (absent: not defined).
# Sources: THEORY.md §1.4 (μP, SP), §2 (TP4 Table 1: NTP, MFP, SP with LR 1/n),
# §5 (u-μP); mean-field under normalized optimizers is μP's class (Everett et
# al. 2024: {μP, MFP} share a readout a+b = 1 and per-layer LR exponents).
NAMED: dict[str, tuple[str, dict[str, dict]]] = {
    "mup": ("μP", {o: {"init": MUP_INIT, "opt": MUP_OPT[o]} for o in ir.OPTIMIZERS}),
    "mean_field": ("mean-field (MFP)", {o: {"init": MUP_INIT, "opt": MUP_OPT[o]} for o in ir.OPTIMIZERS}),
    "sp": ("SP (global Θ(1) LR)", _global_lr(_SP_INIT, ZERO)),
    "sp_lr_inv_width": ("SP with LR 1/width", _global_lr(_SP_INIT, ONE)),
    "ntk": ("NTK (NTP)", {"sgd": {"init": _flat(_SP_INIT, ZERO)["init"],
                                  "opt": {"input": ZERO, "hidden": ONE, "output": ONE, "bias": ZERO, "norm": ZERO}}}),
    "umup": ("u-μP", {"adam": {"init": MUP_INIT, "opt": MUP_OPT["adam"] | {"input": HALF}}}),
}


@dataclass(frozen=True)
class Alignment:
    """How coherently a sum of n terms adds (docs/checking.md §2): ΔW·x sums
    n terms of Θ(n^-e) to Θ(n^(update - e)); W_out·Δx likewise with
    `readout`. 1 is full alignment, 1/2 none (a CLT sum)."""

    name: str
    update: object = ONE
    readout: object = ONE


# The Tensor Programs assumption (TP4/TP5; the default), Everett et al. 2024's
# "full alignment" (ΔW·x coherent, W·Δx a CLT sum, readout included: their
# Table 1), and no alignment at all.
ALIGNMENTS = {"full": Alignment("full"), "everett": Alignment("everett", ONE, HALF),
              "none": Alignment("none", HALF, HALF)}


def parse_alignment(text: str) -> Alignment:
    """`full`, `everett`, `none`, or a measured exponent p in [1/2, 1] for both sums."""
    if text in ALIGNMENTS:
        return ALIGNMENTS[text]
    try:
        p = Fraction(text)
    except (ValueError, ZeroDivisionError):
        p = None
    if p is None or not HALF <= p <= ONE:
        raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)} or a number from 1/2 to 1, not {text!r}")
    return Alignment(f"measured {p}", p, p)


def spec_alignment(spec: ir.Spec) -> Alignment:
    """The spec's `alignment` block, or full alignment."""
    block = spec.block("alignment")
    if block is None:
        return ALIGNMENTS["full"]
    from mupspec.resolve import constant_value

    update, readout = (constant_value(ir.rule_value(block, f)) for f in ("update", "readout"))
    named = next((a for a in ALIGNMENTS.values() if (a.update, a.readout) == (update, readout)), None)
    return named or Alignment(f"update {update}, readout {readout}", update, readout)


def mup_targets(alignment: Alignment) -> tuple[dict, dict]:
    """(init, per-optimizer) invariants of a maximal parametrization under
    `alignment`: the own updates of the hidden and output layers are sums of
    n terms with exponent `update`; the readout may start as small as the
    W_out·Δx sum allows. Full alignment gives μP's (MUP_INIT, MUP_OPT)."""
    shift = alignment.update - ONE
    opt = {o: t | {"hidden": t["hidden"] + shift, "output": t["output"] + shift} for o, t in MUP_OPT.items()}
    return MUP_INIT | {"output": alignment.readout}, opt


REGIMES = ("unstable", "trivial", "kernel", "feature_learning", "mup")
# μP in width plus the TP6 depth class (THEORY.md §4): the depth-aware names.
DEPTH_CLASS_NAMES = {"Depth-μP": "depth_mup", "CompleteP": "completep"}
DEPTH_NAMES = {"depth_mup": "Depth-μP", "completep": "CompleteP"}
EXPECTABLE = tuple(dict.fromkeys(REGIMES + tuple(NAMED) + tuple(DEPTH_NAMES)))


@dataclass(frozen=True)
class Term:
    """One size in the calculus: `name` of class `kind` is Θ(n^k); it must be
    `need` ('=0', '<=0') and is `ok` or not; `role` groups terms by desideratum."""

    role: str  # init | output_init | own_update | features | output_change | attention
    kind: str
    name: str
    k: object
    need: str

    @property
    def ok(self) -> bool:
        return bool(self.k == 0) if self.need == "=0" else bool(self.k <= 0)

    @property
    def grows(self) -> bool:
        return bool(self.k > 0)


@dataclass
class OptimizerResult:
    optimizer: str
    backward: object          # g: exponent of the backward signal (SGD), 0 for Adam
    r: object                 # TP4's r: features change by Θ(n^-r)
    terms: list[Term]
    desiderata: dict[str, bool]
    regime: str
    names: list[str]
    depth_class: str | None = None


DEPTH_OK = (None, "Depth-μP", "CompleteP", "ODE-like")


@dataclass
class CheckResult:
    spec: ir.Spec
    exponents: dict[str, sym.ClassExponents]
    absent: list[str]
    logit: object | None
    depth: sym.DepthExponents | None
    results: dict[str, OptimizerResult]
    notes: list[str] = field(default_factory=list)
    alignment: Alignment = ALIGNMENTS["full"]
    without: tuple[str, ...] = ()   # core classes the user declared the model has none of

    @property
    def missing(self) -> list[str]:
        """Core classes (input, hidden, output) neither in the spec nor declared absent."""
        return [k for k in CORE if k in self.absent and k not in self.without]

    @property
    def ok(self) -> bool:
        """The μP desiderata hold for every optimizer checked (and in depth).
        A spec missing a core class is incomplete, not μP, unless the user
        declared the model has none (`--without`); bias and norm may be absent."""
        return bool(self.exponents) and not self.missing and all(
            r.regime == "mup" and r.depth_class in DEPTH_OK for r in self.results.values())

    def matches(self, expected: str) -> bool:
        return not self.missing and all(_matches(r, expected) for r in self.results.values())


def _matches(result: OptimizerResult, expected: str) -> bool:
    if expected == "feature_learning":
        return result.regime in ("feature_learning", "mup")
    if expected in REGIMES:
        return result.regime == expected
    return expected in result.names


# ---------------------------------------------------------------- terms


def init_terms(ex: dict[str, sym.ClassExponents]) -> list[Term]:
    """Sizes at init (optimizer independent): pre-activations Θ(1), output O(1)."""
    terms = []
    if "input" in ex:
        terms.append(Term("init", "input", "pre-activations at init", -ex["input"].e_init, "=0"))
    if "hidden" in ex:
        terms.append(Term("init", "hidden", "pre-activations at init (W·x, CLT)", HALF - ex["hidden"].e_init, "=0"))
    if "bias" in ex:  # zero init is allowed: O(1) suffices
        terms.append(Term("init", "bias", "bias at init", -ex["bias"].e_init, "<=0"))
    if "norm" in ex:
        terms.append(Term("init", "norm", "normalized activations × gain at init", -ex["norm"].e_init, "=0"))
    if "output" in ex:
        terms.append(Term("output_init", "output", "output at init (W_out·x, CLT)", HALF - ex["output"].e_init, "<=0"))
    return terms


def backward_exponent(ex: dict[str, sym.ClassExponents], optimizer: str) -> object:
    """SGD: the gradient reaching the features is Θ(n^-g) per coordinate,
    g = min(e_init,out, e_sgd,out) (W_out at init or after its own steps);
    without an output block μP's g = 1 is assumed. Adam normalizes: 0."""
    if optimizer != "sgd":
        return ZERO
    if "output" not in ex:
        return ONE
    return min(ex["output"].e_init, ex["output"].e_sgd)


def step_terms(ex: dict[str, sym.ClassExponents], optimizer: str, logit,
               alignment: Alignment = ALIGNMENTS["full"]) -> tuple[object, object, list[Term]]:
    g = backward_exponent(ex, optimizer)
    u, how = alignment.update, "aligned" if alignment.update == 1 else f"summing like n^{alignment.update}"
    terms = []
    for kind in VECTOR_LIKE:
        if kind in ex:
            terms.append(Term("own_update", kind, "own update Δw (fan_in finite)", -(ex[kind].e_opt(optimizer) + g), "=0"))
    if "hidden" in ex:
        terms.append(Term("own_update", "hidden", f"own update ΔW·x (n {how} terms)",
                          u - ex["hidden"].e_opt(optimizer) - g, "=0"))
    own_changes = [t.k for t in terms]
    r = -max(own_changes) if own_changes else ZERO
    terms.append(Term("features", "hidden", "feature change Δx (TP4's n^-r)", -r, "=0"))
    if "output" in ex:
        out = ex["output"]
        terms.append(Term("own_update", "output", "output change by its own update ΔW_out·x", u - out.e_opt(optimizer), "=0"))
        w_out = min(out.e_init, out.e_opt(optimizer))
        terms.append(Term("output_change", "output", "output change through W_out·Δx",
                          alignment.readout - w_out - r, "<=0"))
    if logit is not None:
        terms.append(Term("attention", "attention", "attention logits after a step", logit + max(HALF, ONE - r), "<=0"))
    return g, r, terms


# ---------------------------------------------------------------- verdicts


def desiderata(terms: list[Term], logit) -> dict[str, bool]:
    """The five desiderata of TP5 App. J.1 / TP4 §3, each True or False."""
    by_role = lambda *roles: [t for t in terms if t.role in roles]  # noqa: E731
    stable = all(t.k <= 0 for t in by_role("init", "output_init", "own_update", "features",
                                          "output_change", "attention"))
    features = [t for t in terms if t.role == "features"]
    maximal = all(t.k == 0 for t in by_role("own_update"))
    if logit is not None:
        maximal = maximal and bool(logit == -1)
    return {
        "init_activations": all(t.ok for t in by_role("init")),
        "output_bounded": all(t.ok for t in by_role("output_init", "output_change")),
        "stable_after_step": stable,
        "maximal_updates": maximal and stable,
        # features that vanish at init do not learn, whatever r says
        "feature_learning": stable and all(t.ok for t in by_role("init")) and bool(features and features[0].k == 0),
    }


def regime(terms: list[Term], verdicts: dict[str, bool]) -> str:
    """unstable / trivial / kernel / feature_learning / mup (TP4 Dynamical
    Dichotomy). Activations that vanish at init make the limit trivial."""
    if any(t.grows for t in terms):
        return "unstable"
    if not verdicts["init_activations"]:
        return "trivial"
    moves = [t for t in terms if t.kind == "output" and t.role in ("own_update", "output_change")]
    if moves and all(t.k < 0 for t in moves):
        return "trivial"
    if not verdicts["feature_learning"]:
        return "kernel"
    return "mup" if verdicts["maximal_updates"] else "feature_learning"


def named_matches(ex: dict[str, sym.ClassExponents], optimizer: str, without: tuple[str, ...] = ()) -> list[str]:
    """Named parametrizations whose invariants equal the spec's, class by
    class; core classes must all be there, except those declared `without`
    (TP4 Table 1's MFP with L = 1 has no hidden layer)."""
    names = []
    for key, (_, per_opt) in NAMED.items():
        template = per_opt.get(optimizer)
        if template is None or not all(k in ex or k in without for k in CORE):
            continue
        if all(_init_matches(e.e_init, template["init"][k], k) and e.e_opt(optimizer) == template["opt"][k]
               for k, e in ex.items()):
            names.append(key)
    return names


def _init_matches(found, wanted, kind: str) -> bool:
    """A readout or bias that starts smaller than μP's (down to zero) is still
    μP (TP5 App. D.2: the first step's change dominates it); an SP readout
    (e_init = 1/2) is the one whose size matters."""
    return found == wanted or (kind in ("bias", "output") and found > wanted and wanted != HALF)


def depth_class(depth: sym.DepthExponents, optimizer: str) -> str:
    """TP6: branch output at init L^-α, per-block update L^-(α+γ)."""
    alpha, s = depth.alpha, depth.update[optimizer]
    if alpha < HALF:
        return "unstable at init"
    if s < 1:
        return "unstable"
    if s > 1:
        return "trivial"
    if alpha == HALF:
        return "Depth-μP"
    if alpha == 1:
        return "CompleteP"
    return "ODE-like" if alpha < 1 else "outside TP6"


# ---------------------------------------------------------------- entry point


def check_spec(spec: ir.Spec, only: tuple[str, ...] | None = None, alignment: Alignment | None = None,
               without: tuple[str, ...] = ()) -> CheckResult:
    """Analyze one resolved spec for the optimizers it covers (∩ `only`),
    under `alignment` (default: the spec's `alignment` block, else full);
    `without`: core classes the model has none of (not counted as missing)."""
    alignment = alignment or spec_alignment(spec)
    ex = sym.spec_exponents(spec, exact=True)
    logit = sym.logit_exponent(spec, exact=True)
    depth = sym.depth_exponents(spec, exact=True)
    optimizers = tuple(o for o in ir.optimizers(spec) if only is None or o in only)
    results = {}
    for opt in optimizers:
        g, r, terms = step_terms(ex, opt, logit, alignment)
        terms = init_terms(ex) + terms
        verdicts = desiderata(terms, logit)
        dclass = depth_class(depth, opt) if depth is not None else None
        names = named_matches(ex, opt, without)
        if "mup" in names and dclass in DEPTH_CLASS_NAMES:
            names.append(DEPTH_CLASS_NAMES[dclass])
        results[opt] = OptimizerResult(opt, g, r, terms, verdicts, regime(terms, verdicts), names, dclass)
    absent = [k for k in ir.LAYER_KINDS if k not in ex]
    result = CheckResult(spec, ex, absent, logit, depth, results, alignment=alignment, without=tuple(without))
    result.notes = _notes(result)
    return result


def maximal_lr_exponents(ex: dict[str, sym.ClassExponents], optimizer: str,
                         alignment: Alignment = ALIGNMENTS["full"]) -> dict[str, object]:
    """Per class, the LR exponent c (LR ∝ n^-c) that makes its own update
    exactly Θ(1) -- the largest stable LR, every layer updated maximally --
    given its multiplier and init (Everett et al. 2024's per-layer
    prescription under their alignment assumptions). Solved from the same
    terms as `step_terms`, with the backward signal of the solution itself."""
    out, solved = {}, dict(ex)
    # the readout first: SGD's backward signal depends on it
    for kind in [k for k in ("output", "input", "hidden", "bias", "norm") if k in ex]:
        e = ex[kind]
        g = backward_exponent(solved, optimizer) if kind != "output" else ZERO
        u = alignment.update if kind in ("hidden", "output") else ZERO
        target = u - g  # own update k = u - e_opt - g = 0
        c = target - (e.e_opt(optimizer) - e.c(optimizer))
        out[kind] = c
        solved[kind] = _with_c(e, optimizer, c)
    return out


def _with_c(e: sym.ClassExponents, optimizer: str, c) -> sym.ClassExponents:
    from dataclasses import replace

    return replace(e, **{f"c_{e.family(optimizer)}": c})


def _notes(result: CheckResult) -> list[str]:
    notes = []
    if not result.exponents:
        notes.append("no layer block (input, hidden, output, bias, norm): nothing to check in width")
    if result.missing:
        notes.append(f"incomplete: no {', '.join(result.missing)} block, so this is not a whole model; "
                     f"if the model really has no such layers, say so with "
                     + " ".join(f"--without {k}" for k in result.missing))
    if result.without:
        notes.append(f"declared without: {', '.join(result.without)} (the model has no such layers)")
    if result.absent:
        notes.append(f"not checked (no block in the spec): {', '.join(result.absent)}")
    if result.alignment.name != "full":
        a = result.alignment
        notes.append(f"alignment: {a.name} (ΔW·x sums like n^{a.update}, W_out·Δx like n^{a.readout}); "
                     "the default is full alignment (Tensor Programs)")
    if result.depth is not None and result.depth.layers > 1:
        notes.append(f"block depth {result.depth.layers} (layers per branch): Tensor Programs VI shows that for "
                     "block depth >= 2 every infinite-depth limit of its family has fundamental limitations "
                     "(Depth-μP stays the best of the family, but depth transfer is not guaranteed); "
                     "the depth class below is the family's, not a guarantee")
    if "output" not in result.exponents and "sgd" in result.results:
        notes.append("no output block: the SGD backward signal assumes μP's readout (g = 1)")
    if result.logit is None:
        notes.append("no attention block: attention logits not checked")
    return notes

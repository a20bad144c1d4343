"""Stage 3b: the μP checker -- exponents -> size terms -> verdicts -> classification.

Takes a resolved `ir.Spec`; returns a `CheckResult` (plain data, rendered by
`report`). The calculus is docs/theory.md §7 (full alignment, the Tensor Programs
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

from dataclasses import dataclass, field, replace
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

# μP in invariant form (docs/theory.md §3.1; identical for TP5 Tables 3, 8, 9).
MUP_INIT = {"input": ZERO, "hidden": HALF, "output": ONE, "bias": ZERO, "norm": ZERO}
MUP_OPT = {
    "sgd": {"input": -ONE, "hidden": ZERO, "output": ONE, "bias": -ONE, "norm": -ONE},
    "adam": {"input": ZERO, "hidden": ONE, "output": ONE, "bias": ZERO, "norm": ZERO},
}


def _flat(init: tuple, opt: object) -> dict:
    inp, hid, out = init
    return {"init": {"input": inp, "hidden": hid, "output": out, "bias": ZERO, "norm": ZERO},
            "opt": {k: opt for k in ir.LAYER_KINDS}}


# Named parametrizations in invariant form, per optimizer (None: not defined).
# Sources: docs/theory.md §3.1 (μP, SP), §4 (TP4 Table 1: NTP, MFP, SP with LR 1/n), §5 (u-μP).
NAMED: dict[str, tuple[str, dict[str, dict | None]]] = {
    "mup": ("μP", {o: {"init": MUP_INIT, "opt": MUP_OPT[o]} for o in ir.OPTIMIZERS}),
    "mean_field": ("mean-field (MFP)", {"sgd": {"init": MUP_INIT, "opt": MUP_OPT["sgd"]}, "adam": None}),
    "sp": ("SP (global Θ(1) LR)", {o: _flat((ZERO, HALF, HALF), ZERO) for o in ir.OPTIMIZERS}),
    "sp_lr_inv_width": ("SP with LR 1/width", {o: _flat((ZERO, HALF, HALF), ONE) for o in ir.OPTIMIZERS}),
    "ntk": ("NTK (NTP)", {"sgd": {"init": _flat((ZERO, HALF, HALF), ZERO)["init"],
                                  "opt": {"input": ZERO, "hidden": ONE, "output": ONE, "bias": ZERO, "norm": ZERO}},
                          "adam": None}),
    "umup": ("u-μP", {"sgd": None, "adam": {"init": MUP_INIT, "opt": MUP_OPT["adam"] | {"input": HALF}}}),
}
REGIMES = ("unstable", "trivial", "kernel", "feature_learning", "mup")
# μP in width plus the TP6 depth class (docs/theory.md §6): the depth-aware names.
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


@dataclass
class CheckResult:
    spec: ir.Spec
    exponents: dict[str, sym.ClassExponents]
    absent: list[str]
    logit: object | None
    depth: sym.DepthExponents | None
    results: dict[str, OptimizerResult]
    notes: list[str] = field(default_factory=list)
    head: object = ONE        # width exponent of the attention head size d_head
    subroles: dict[str, sym.ClassExponents] = field(default_factory=dict)
    tie: "TieResult | None" = None

    @property
    def ok(self) -> bool:
        """The μP desiderata hold for every optimizer checked (and in depth);
        a spec without any layer block has nothing to check and is not μP."""
        return bool(self.exponents) and all(r.regime == "mup" and r.depth_class in (None, "Depth-μP", "CompleteP", "ODE-like")
                   for r in self.results.values())

    def matches(self, expected: str) -> bool:
        return all(_matches(r, expected) for r in self.results.values())


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


def step_terms(ex: dict[str, sym.ClassExponents], optimizer: str, logit, head=ONE) -> tuple[object, object, list[Term]]:
    g = backward_exponent(ex, optimizer)
    terms = []
    for kind in VECTOR_LIKE:
        if kind in ex:
            terms.append(Term("own_update", kind, "own update Δw (fan_in finite)", -(ex[kind].e_opt(optimizer) + g), "=0"))
    if "hidden" in ex:
        terms.append(Term("own_update", "hidden", "own update ΔW·x (n aligned terms)",
                          ONE - ex["hidden"].e_opt(optimizer) - g, "=0"))
    own_changes = [t.k for t in terms]
    r = -max(own_changes) if own_changes else ZERO
    terms.append(Term("features", "hidden", "feature change Δx (TP4's n^-r)", -r, "=0"))
    if "output" in ex:
        out = ex["output"]
        terms.append(Term("own_update", "output", "output change by its own update ΔW_out·x", ONE - out.e_opt(optimizer), "=0"))
        w_out = min(out.e_init, out.e_opt(optimizer))
        terms.append(Term("output_change", "output", "output change through W_out·Δx", ONE - w_out - r, "<=0"))
    if logit is not None:  # q·k sums d_head = Θ(n^head) terms: CLT at init, LLN once q and k move
        terms.append(Term("attention", "attention", "attention logits after a step",
                          logit + max(head * HALF, head - r), "<=0"))
    return g, r, terms


# ---------------------------------------------------------------- verdicts


def desiderata(terms: list[Term], logit, head=ONE) -> dict[str, bool]:
    """The five desiderata of TP5 App. J.1 / TP4 §3, each True or False."""
    by_role = lambda *roles: [t for t in terms if t.role in roles]  # noqa: E731
    stable = all(t.k <= 0 for t in by_role("init", "output_init", "own_update", "features",
                                          "output_change", "attention"))
    features = [t for t in terms if t.role == "features"]
    maximal = all(t.k == 0 for t in by_role("own_update"))
    if logit is not None:
        maximal = maximal and bool(logit == -head)
    return {
        "init_activations": all(t.ok for t in by_role("init")),
        "output_bounded": all(t.ok for t in by_role("output_init", "output_change")),
        "stable_after_step": stable,
        "maximal_updates": maximal and stable,
        "feature_learning": stable and bool(features and features[0].k == 0),
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


def named_matches(ex: dict[str, sym.ClassExponents], optimizer: str) -> list[str]:
    """Named parametrizations whose invariants equal the spec's, class by class."""
    names = []
    for key, (_, per_opt) in NAMED.items():
        template = per_opt.get(optimizer)
        if template is None or not all(k in ex for k in CORE):
            continue
        if all(_init_matches(e.e_init, template["init"][k], k) and e.e_opt(optimizer) == template["opt"][k]
               for k, e in ex.items()):
            names.append(key)
    return names


def _init_matches(found, wanted, kind: str) -> bool:
    return found == wanted or (kind in ("bias", "output") and found == OO and wanted != HALF)


def depth_class(depth: sym.DepthExponents, optimizer: str) -> str:
    """TP6: branch multiplier L^-α, per-block update L^-γ."""
    alpha, s = depth.alpha, depth.alpha + depth.gamma(optimizer)
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


def check_spec(spec: ir.Spec, only: tuple[str, ...] | None = None) -> CheckResult:
    """Analyze one resolved spec for the optimizers it covers (∩ `only`)."""
    ex = sym.spec_exponents(spec, exact=True)
    logit = sym.logit_exponent(spec, exact=True)
    head = sym.head_exponent(spec, exact=True) if logit is not None else ONE
    depth = sym.depth_exponents(spec, exact=True)
    optimizers = tuple(o for o in ir.optimizers(spec) if only is None or o in only)
    subroles = sym.subrole_exponents(spec, exact=True)
    tie = tie_result(spec, ex, subroles, optimizers) if spec.ties else None
    results = {}
    for opt in optimizers:
        dclass = depth_class(depth, opt) if depth is not None else None
        # The classes first, then each variant (a sub-role or the tied readout
        # standing in for its class): every one must pass.
        outs = [_outcome(label, variant, opt, logit, head) for label, variant in _variants(ex, subroles, tie)]
        terms = [t for o in outs for t in _labelled(o.terms, o.label)]
        verdicts = {key: all(o.verdicts[key] for o in outs) for key in outs[0].verdicts}
        worst = min((o.regime for o in outs), key=REGIMES.index)
        names = [n for n in outs[0].names if all(n in o.names for o in outs)]
        if "mup" in names and dclass in DEPTH_CLASS_NAMES:
            names.append(DEPTH_CLASS_NAMES[dclass])
        results[opt] = OptimizerResult(opt, outs[0].g, outs[0].r, terms, verdicts, worst, names, dclass)
    absent = [k for k in ir.LAYER_KINDS if k not in ex]
    result = CheckResult(spec, ex, absent, logit, depth, results, head=head, subroles=subroles, tie=tie)
    result.notes = _notes(result)
    return result


@dataclass
class _Outcome:
    label: str | None
    g: object
    r: object
    terms: list[Term]
    verdicts: dict[str, bool]
    regime: str
    names: list[str]


def _outcome(label, ex: dict[str, sym.ClassExponents], opt: str, logit, head) -> _Outcome:
    g, r, terms = step_terms(ex, opt, logit, head)
    terms = init_terms(ex) + terms
    verdicts = desiderata(terms, logit, head)
    return _Outcome(label, g, r, terms, verdicts, regime(terms, verdicts), named_matches(ex, opt))


def _notes(result: CheckResult) -> list[str]:
    notes = []
    if result.logit is not None and len(result.spec.widths) > 1 and \
            result.spec.block("attention").rule("head_dim") is None:
        notes.append(f"attention: no `head_dim` rule, so d_head is taken to be `{result.spec.widths[0]}`")
    for role, ex in result.subroles.items():
        if ex.b == OO and role in ZERO_INIT_OK:
            notes.append(f"{role}: zero init, allowed for this sub-role (checked with its class's init)")
    if result.tie is not None:
        notes += result.tie.notes()
    if not result.exponents:
        notes.append("no layer block (input, hidden, output, bias, norm): nothing to check in width")
    if result.absent:
        notes.append(f"not checked (no block in the spec): {', '.join(result.absent)}")
    if "output" not in result.exponents and "sgd" in result.results:
        notes.append("no output block: the SGD backward signal assumes μP's readout (g = 1)")
    if result.logit is None:
        notes.append("no attention block: attention logits not checked")
    return notes


# ---------------------------------------------------------------- sub-roles and ties (Transformer parts)

# Sub-roles whose zero init keeps the network non-trivial: each feeds a sum
# that other terms keep alive (a residual stream, a softmax's logits, the
# readout), and its first step moves it by a Θ(1) amount (mup zero-inits the
# query and the readout; many GPTs zero-init the projections into the stream).
ZERO_INIT_OK = ("query", "key", "attn_out", "mlp_out", "router", "readout")


def _variants(ex: dict[str, sym.ClassExponents], subroles: dict[str, sym.ClassExponents], tie):
    """(label, class exponents) to check: the classes themselves, then each
    sub-role that differs from its class standing in for that class, then
    the tied readout. The spec passes only if every variant does: a network
    mixes every part."""
    yield None, ex
    for role, sub in subroles.items():
        parent = ir.SUBROLES[role]
        stand_in = replace(sub, kind=parent)
        if role in ZERO_INIT_OK and sub.b == OO and parent in ex:
            stand_in = replace(stand_in, b=ex[parent].b)  # zero init allowed: check the rest
        if parent in ex and stand_in != ex[parent]:
            yield role, ex | {parent: stand_in}
    if tie is not None:
        yield f"{tie.readout} (tied)", ex | {"output": tie.tied}


def _labelled(terms: list[Term], label: str | None) -> list[Term]:
    """A variant's terms about the part it stands in for, named after it."""
    if label is None:
        return terms
    kind = "output" if label.endswith("(tied)") else None
    return [replace(t, kind=label) for t in terms
            if t.kind == (kind or ir.SUBROLES.get(label)) and t.role not in ("features", "attention")]


@dataclass
class TieResult:
    """`tie EMBEDDING, READOUT`: one tensor, with the embedding's init and
    optimizer group; the readout keeps its multiplier. `shareable`: the two
    rules give that tensor the same width exponents (b, c, wd, eps) per
    optimizer, so tying changes nothing; `tied` is the readout as it really
    is (its a, the embedding's b, c, wd, eps); `fix_a` the readout
    multiplier exponent that makes the tied readout's invariants the spec's
    (None when no multiplier can: the embedding's b - c differs)."""

    embedding: str
    readout: str
    shareable: bool
    differs: list[str]
    tied: sym.ClassExponents
    fix_a: object | None

    def notes(self) -> list[str]:
        head = f"tie {self.embedding}, {self.readout}: "
        if self.shareable:
            return [head + "the two rules can share one tensor (same init, LR, wd and eps exponents)"]
        fix = (f"a readout `mult` ∝ n^-{self.fix_a} (with the embedding's init and LR) keeps the readout's "
               f"invariants" if self.fix_a is not None else
               "no readout multiplier can restore the readout's invariants (the embedding's b and c differ "
               "from the readout's by different amounts)")
        return [head + f"the rules cannot share one tensor as written ({', '.join(self.differs)} differ); "
                "tied, the readout takes the embedding's init and LR (see the `(tied)` rows); " + fix]


def tie_result(spec: ir.Spec, ex: dict, subroles: dict, optimizers: tuple[str, ...]) -> TieResult:
    tie = spec.ties[0]
    emb = subroles.get(tie.embedding) or ex.get("input") or sym.class_exponents(spec, "input", exact=True)
    out = subroles.get(tie.readout) or ex.get("output") or sym.class_exponents(spec, "output", exact=True)
    fields = ["b"] + [f for o in optimizers for f in (f"c_{o}", f"wd_{o}")] + (["eps_adam"] if "adam" in optimizers else [])
    differs = [f for f in fields if getattr(emb, f) != getattr(out, f)]
    tied = replace(emb, kind="output", a=out.a)
    # Lemma J.1: with b, c fixed to the embedding's, a' = e_init,out - b_emb;
    # it must also give e_opt,out: Adam a' + c, SGD 2a' + c.
    fix_a = None if emb.b == OO or out.e_init == OO else out.e_init - emb.b
    if fix_a is not None and not all(replace(tied, a=fix_a).e_opt(o) == out.e_opt(o) for o in optimizers):
        fix_a = None
    return TieResult(tie.embedding, tie.readout, not differs, differs, tied, fix_a)

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
from mupspec.resolve import TIE_EMBEDDINGS, TIE_READOUTS
from mupspec.symbolic import INF as OO

# Exponents are exact: Fractions, and float infinities for a zero init (the
# exact path of symbolic.py); sympy numbers from `symbolic.spec_exponents`
# work here too (verify passes them).
HALF = Fraction(1, 2)
ZERO, ONE = Fraction(0), Fraction(1)
VECTOR_LIKE = ("input", "bias", "norm")
CORE = ("input", "hidden", "output")

# μP in invariant form (docs/theory.md §3.1; identical for TP5 Tables 3, 8, 9).
# Every normalized family (Adam, Adafactor, Lion, Muon) shares Adam's targets:
# symbolic.ClassExponents.e_opt already folds each one's update geometry in.
MUP_INIT = {"input": ZERO, "hidden": HALF, "output": ONE, "bias": ZERO, "norm": ZERO}
_MUP_NORMALIZED = {"input": ZERO, "hidden": ONE, "output": ONE, "bias": ZERO, "norm": ZERO}
NORMALIZED = tuple(o for o in ir.OPTIMIZERS if o != "sgd")
MUP_OPT = {"sgd": {"input": -ONE, "hidden": ZERO, "output": ONE, "bias": -ONE, "norm": -ONE}} | {
    o: _MUP_NORMALIZED for o in NORMALIZED}


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
# Sources: docs/theory.md §3.1 (μP, SP), §4 (TP4 Table 1: NTP, MFP, SP with LR 1/n),
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
    head: object = ONE        # width exponent of the attention head size d_head
    subroles: dict[str, sym.ClassExponents] = field(default_factory=dict)
    tie: "TieResult | None" = None
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


def step_terms(ex: dict[str, sym.ClassExponents], optimizer: str, logit, head=ONE,
               alignment: Alignment = ALIGNMENTS["full"]) -> tuple[object, object, list[Term]]:
    g = backward_exponent(ex, optimizer)
    u, how = alignment.update, "aligned" if alignment.update == 1 else f"summing like n^{alignment.update}"  # mutate: display
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
        outs = [_outcome(label, variant, opt, logit, head, alignment, without)
                for label, variant in _variants(ex, subroles, tie)]
        terms = [t for o in outs for t in _labelled(o.terms, o.label)]
        verdicts = {key: all(o.verdicts[key] for o in outs) for key in outs[0].verdicts}
        worst = min((o.regime for o in outs), key=REGIMES.index)
        names = [n for n in outs[0].names if all(n in o.names for o in outs)]
        if "mup" in names and dclass in DEPTH_CLASS_NAMES:
            names.append(DEPTH_CLASS_NAMES[dclass])
        results[opt] = OptimizerResult(opt, outs[0].g, outs[0].r, terms, verdicts, worst, names, dclass)
    absent = [k for k in ir.LAYER_KINDS if k not in ex]
    result = CheckResult(spec, ex, absent, logit, depth, results, head=head, subroles=subroles, tie=tie,
                         alignment=alignment, without=tuple(without))
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


@dataclass
class _Outcome:
    label: str | None
    g: object
    r: object
    terms: list[Term]
    verdicts: dict[str, bool]
    regime: str
    names: list[str]


def _outcome(label, ex: dict[str, sym.ClassExponents], opt: str, logit, head, alignment, without) -> _Outcome:
    g, r, terms = step_terms(ex, opt, logit, head, alignment)
    terms = init_terms(ex) + terms
    verdicts = desiderata(terms, logit, head)
    return _Outcome(label, g, r, terms, verdicts, regime(terms, verdicts), named_matches(ex, opt, without))


def _notes(result: CheckResult) -> list[str]:  # mutate: display
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

    def notes(self) -> list[str]:  # mutate: display
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
    """The spec's declared tie (`tie EMBEDDING, READOUT`)."""
    tie = spec.ties[0]
    return tie_between(spec, tie.embedding, tie.readout, optimizers, ex, subroles)


def tie_between(spec: ir.Spec, embedding: str, readout: str, optimizers: tuple[str, ...] | None = None,
                ex: dict | None = None, subroles: dict | None = None) -> TieResult:
    """Whether the rules of `embedding` (an input role) and `readout` (an
    output role) can share one tensor the way microsoft/mup's
    MuSharedReadout shares it: the tensor keeps the embedding's init and
    LR group, the readout keeps its multiplier. `shareable` when the two
    rules give the tensor the same width exponents (b, c, wd, eps) for every
    optimizer covered (default: all the spec covers), so tying changes
    nothing; docs/language.md, "Ties"."""
    optimizers = ir.optimizers(spec) if optimizers is None else optimizers
    ex = sym.spec_exponents(spec, exact=True) if ex is None else ex
    subroles = sym.subrole_exponents(spec, exact=True) if subroles is None else subroles
    emb = subroles.get(embedding) or ex.get("input") or sym.class_exponents(spec, "input", exact=True)
    out = subroles.get(readout) or ex.get("output") or sym.class_exponents(spec, "output", exact=True)
    fields = ["b"] + [f for o in optimizers for f in (f"c_{o}", f"wd_{o}")] + (["eps_adam"] if "adam" in optimizers else [])
    differs = [f for f in fields if getattr(emb, f) != getattr(out, f)]
    tied = replace(emb, kind="output", a=out.a)
    # Lemma J.1: with b, c fixed to the embedding's, a' = e_init,out - b_emb;
    # it must also give e_opt,out: Adam a' + c, SGD 2a' + c.
    fix_a = None if emb.b == OO or out.e_init == OO else out.e_init - emb.b
    if fix_a is not None and not all(replace(tied, a=fix_a).e_opt(o) == out.e_opt(o) for o in optimizers):
        fix_a = None
    return TieResult(embedding, readout, not differs, differs, tied, fix_a)


def shareable_ties(spec: ir.Spec) -> tuple[tuple[str, str], ...]:
    """The (embedding, readout) pairs among the spec's own blocks (`input`
    or `token_embedding`; `output` or `readout`) whose rules can share one
    tensor (`tie_between`): a model may tie those without the spec
    declaring it, since tying changes no exponent."""
    embeddings = [r for r in TIE_EMBEDDINGS if spec.block(r) is not None]
    readouts = [r for r in TIE_READOUTS if spec.block(r) is not None]
    if not embeddings or not readouts:
        return ()
    ex, subroles = sym.spec_exponents(spec, exact=True), sym.subrole_exponents(spec, exact=True)
    return tuple((e, r) for e in embeddings for r in readouts if tie_between(spec, e, r, None, ex, subroles).shareable)

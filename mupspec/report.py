"""Stage 3c: a `check.CheckResult` -> findings with fixes -> text, markdown or JSON.

`diagnose` compares every class's invariants with μP's (docs/theory.md §3.1), the
attention logit with 1/d (TP5 §6.1) and the residual block with TP6, and
returns one `Finding` per rule that breaks them: the rule's span, the exponent
found and needed, one sentence of why, and the spec edit that fixes it.
`render_text`, `render_markdown` and `to_json` only format; the JSON schema is
documented in docs/checking.md ("mupspec.check/1").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from mupspec import ir
from mupspec.check import DEPTH_OK, HALF, NAMED, ZERO_INIT_OK, CheckResult, mup_targets
from mupspec.symbolic import MULT_WEIGHT
from mupspec.errors import Diagnostic, render
from mupspec.printer import format_expr
from mupspec.symbolic import INF as OO, fmt_exponent

SCHEMA = "mupspec.check/1"
# The growing dimension of each class, as the fix is written (TP5: fan_in for
# output and hidden weights, fan_out for input weights and vectors).
FAN = {"input": "fan_out", "hidden": "fan_in", "output": "fan_in", "bias": "fan_out", "norm": "fan_out"}
REGIME_TEXT = {"unstable": "unstable", "trivial": "trivial", "kernel": "kernel regime",
               "feature_learning": "feature learning (not maximal)", "mup": "μP (feature learning, every layer maximal)"}
DESIDERATA = {
    "init_activations": "Θ(1) activations at init",
    "output_bounded": "O(1) output (init and after a step)",
    "stable_after_step": "stable after a step",
    "maximal_updates": "every layer updated maximally",
    "feature_learning": "feature learning (r = 0)",
}


# Each family's invariant, as the diagnostics write it (docs/checking.md, "Optimizer families").
INVARIANT_TEXT = {"sgd": "2a+c", "adam": "a+c", "lion": "a+c", "adafactor": "a+b+c",
                  "muon": "a+c+(fan exponents)/2"}


@dataclass(frozen=True)
class Finding:
    kind: str                 # class or block
    field: str
    optimizer: str | None     # None: optimizer independent
    span: ir.Span | None
    found: str
    needed: str
    message: str
    why: str
    fix: str
    severity: str = "error"


# ---------------------------------------------------------------- findings


def power_text(p, name: str) -> str:
    """`name`^p as spec text: 1, fan_in, 1/fan_in^2, sqrt(L), 1/fan_in^(3/2)."""
    p = Fraction(p)
    if p == 0:
        return "1"
    mag = abs(p)
    body = name if mag == 1 else f"sqrt({name})" if mag == HALF else \
        f"{name}^{mag}" if mag.denominator == 1 else f"{name}^({mag})"
    return body if p > 0 else f"1/{body}"


def _span(spec: ir.Spec, kind: str, *fields: str) -> ir.Span | None:
    block = spec.block(kind)
    if block is None:  # a depth rule left to its default: point at `depth L`
        dim = next((d for d in spec.dims if d.role == "depth"), None) if kind == "residual" else None
        return dim.span if dim is not None else None
    rule = next((block.rule(f) for f in fields if block.rule(f) is not None), None)
    return rule.span if rule is not None else block.span


def _as_written(spec: ir.Spec, kind: str, field: str) -> str:
    block = spec.block(kind) or ir.Block(kind=kind)
    given = block.rule(field) or (block.rule("init.std") if field == "init.var" else None)
    inherited = kind in ir.SUBROLES and ir.given_rule(spec.block(ir.SUBROLES[kind]), field) is not None
    text = f"{given.field} = {format_expr(given.value)}" if given else \
        f"{field} = {format_expr(ir.role_rule(spec, kind, field))} " + \
        (f"(from `{ir.SUBROLES[kind]}`)" if inherited else "(default)")
    return text


def _grows(k) -> str:
    return f"Θ(n^{fmt_exponent(k)})"


def _parts(result: CheckResult) -> dict:
    """The classes, and the sub-roles whose exponents are not their class's."""
    own = {r: e for r, e in result.subroles.items()
           if replace(e, kind=ir.SUBROLES[r]) != result.exponents.get(ir.SUBROLES[r])}
    return result.exponents | own


def diagnose(result: CheckResult) -> list[Finding]:
    findings = []
    for kind, ex in _parts(result).items():
        per_rule = _init_findings(result, kind, ex) + [f for opt in result.results
                                                        for f in _lr_findings(result, kind, ex, opt)]
        one_line = _mult_finding(result, kind, ex, per_rule)
        findings += one_line or per_rule
    findings += _attention_findings(result)
    findings += _depth_findings(result)
    if "adam" in result.results:
        findings += [f for kind, ex in result.exponents.items() for f in _eps_findings(result, kind, ex)]
    return findings


def _mult_finding(result: CheckResult, kind: str, ex, per_rule: list[Finding]) -> list[Finding]:
    """One multiplier edit instead of one edit per rule, when every invariant
    of the class is off by what a multiplier n^-t would fix: e_init by t,
    e_sgd by 2t, every normalized family's e_opt by t (a forgotten
    `mult = 1/fan_in` on the readout is the usual case)."""
    cls = ir.role_class(kind)
    if cls == "norm" or len(per_rule) != 1 + len(result.results):
        return []
    init, opt = mup_targets(result.alignment)
    t = init[cls] - ex.e_init
    if t == 0 or any(opt[o][cls] - ex.e_opt(o) != MULT_WEIGHT[ex.family(o)] * t for o in result.results):
        return []
    spec, fan = result.spec, FAN[cls]
    written = _as_written(spec, kind, "mult")
    grows = "too large" if t > 0 else "too small"
    return [Finding(kind, "mult", None, _span(spec, kind, "mult"), fmt_exponent(ex.a), fmt_exponent(ex.a + t),
                    f"{kind}: {written} leaves every invariant of the class off by the same multiplier n^{fmt_exponent(-t)}",
                    f"e_init is {fmt_exponent(ex.e_init)} (μP: {fmt_exponent(init[cls])}) and each optimizer's step "
                    f"is off by the same factor: the {kind} layer's output and its updates are {grows} by n^{fmt_exponent(abs(t))}; "
                    f"one multiplier fixes all of them (the other rules can stay as they are)",
                    f"mult = {power_text(-(ex.a + t), fan)}  (or, rule by rule: "
                    + "; ".join(f"`{f.fix.split('  ')[0]}`" for f in per_rule) + ")")]


def _eps_findings(result: CheckResult, kind: str, ex) -> list[Finding]:
    """Warning (no verdict changes): Adam's eps above the gradient scale turns
    Adam into SGD for this class at large width (docs/theory.md §5). The
    gradient of w is A·(backward ⊗ input): n^-(a + g), g = the backward signal's
    exponent, min(e_init,out, e_adam,out); the output's own gradient has g = 0."""
    out = result.exponents.get("output")
    g = 0 if kind == "output" or out is None else min(out.e_init, out.e_adam)
    needed = ex.a + g
    if ex.eps_adam >= needed:
        return []
    return [Finding(kind, "eps.adam", "adam", _span(result.spec, kind, "eps.adam"), fmt_exponent(ex.eps_adam),
                    f">= {fmt_exponent(needed)}",
                    f"{kind}: {_as_written(result.spec, kind, 'eps.adam')} is above the gradient scale Θ(n^-{fmt_exponent(needed)})",
                    "once eps dominates sqrt(v), Adam's step is LR·grad/eps: this class drifts toward SGD with a "
                    "width-dependent LR at large width (Everett et al. 2024; the J.1 symmetry holds only if eps moves too)",
                    f"eps.adam = {power_text(-needed, FAN[kind])}", severity="warning")]


def _init_findings(result: CheckResult, role: str, ex) -> list[Finding]:
    kind = ir.role_class(role)  # a sub-role is held to its class's invariants
    spec, found, target = result.spec, ex.e_init, mup_targets(result.alignment)[0][kind]
    if found == target or (kind in ("output", "bias") and found > target) or (role in ZERO_INIT_OK and ex.b == OO):
        return []  # a smaller (or zero) readout or bias init is allowed: TP5 App. D.2; a bias is O(1)
    fan = FAN[kind]
    if kind == "norm":  # a gain starts at 1: only its multiplier sets the scale
        return [Finding(kind, "mult", None, _span(spec, kind, "mult"), fmt_exponent(found), "0",
                        f"norm: {_as_written(spec, kind, 'mult')} scales the normalized activations by {_grows(-found)}",
                        "a norm gain starts at 1, so its multiplier alone sets the activations' size; they must stay Θ(1)",
                        f"mult = 1")]
    var_power = -2 * (target - ex.a)
    fix = f"init.var = {power_text(var_power, fan)}"
    written = _as_written(spec, role, 'init.var')
    here = f"init.var = {power_text(-2 * ex.b, fan)}" if ex.b != OO else "init.var = 0"
    if here not in written:
        written += f" [here {here}]"
    message = f"{role}: {written} gives e_init = a+b = {fmt_exponent(found)}; μP needs {fmt_exponent(target)}"
    if kind == "output" and found == HALF and all(r.regime != "mup" for r in result.results.values()):
        message += " -- with the LR it has, the readout is SP's"
    if kind == "output" and found >= HALF:
        why = (f"W_out entries are Θ(n^-{fmt_exponent(found)}); once the features move by Θ(1), W_out·Δx adds n aligned "
               f"terms and grows like {_grows(1 - found)}, so the LR must shrink and the features freeze "
               f"(TP4 Dynamical Dichotomy): with an unscaled LR this is SP's readout, not μP's")
        fix += "  (TP5 Table 3; or Table 8: `init.var = 1` with `mult = 1/fan_in`, `lr.sgd = fan_in`, `lr.adam = 1`)"
    elif kind in ("output", "hidden"):
        why = (f"W·x sums n independent terms (CLT): entries Θ(n^-{fmt_exponent(found)}) make it "
               f"{_grows(HALF - found)}, and it must be {'Θ(1)' if kind == 'hidden' else 'O(n^-1/2) for μP'}")
    else:
        why = (f"a finite fan_in sums O(1) terms of size {_grows(-found)}: the activations are {_grows(-found)} "
               "and must be Θ(1)")
    return [Finding(role, "init.var", None, _span(spec, role, "init.var", "init.std"), fmt_exponent(found),
                    fmt_exponent(target), message, why, fix)]


def _lr_findings(result: CheckResult, role: str, ex, opt: str) -> list[Finding]:
    kind = ir.role_class(role)
    found, target = ex.e_opt(opt), mup_targets(result.alignment)[1][opt][kind]
    if found == target:
        return []
    family = ex.family(opt)
    spec, field = result.spec, f"lr.{family}"
    factor = ex.e_opt(opt) - ex.c(opt)  # what the multiplier, init and geometry contribute
    fix = f"{field} = {power_text(-(target - factor), FAN[kind])}  (keep any constant factor)"
    inv = f"e_{opt} = {INVARIANT_TEXT[family]}"
    message = f"{role}: {_as_written(spec, role, field)} gives {inv} = {fmt_exponent(found)}; μP needs {fmt_exponent(target)}"
    term = "ΔW·x" if kind == "hidden" else "ΔW_out·x" if kind == "output" else "Δw"
    if found < target:
        why = f"with every other layer at μP, this layer's own update {term} is {_grows(target - found)} per step: it grows with width"
    else:
        why = (f"with every other layer at μP, this layer's own update {term} is {_grows(target - found)} per step: "
               "it vanishes, so the layer is not updated maximally and stops learning at large width")
    actual = [t for t in result.results[opt].terms if t.kind == role and not t.ok]
    if actual:
        why += "; in this spec: " + ", ".join(f"{t.name} = {_grows(t.k)}" for t in actual)
    return [Finding(role, field, opt, _span(spec, role, field), fmt_exponent(found), fmt_exponent(target), message, why, fix)]


def _attention_findings(result: CheckResult) -> list[Finding]:
    if result.logit is None or result.logit == -result.head:
        return []
    head = format_expr(ir.role_rule(result.spec, "attention", "head_dim"))
    found, needed = result.logit, -result.head
    if found > needed:
        why = (f"q·k sums d terms; once training correlates q and k it is Θ(d) (law of large numbers, not CLT), "
               f"so a scale {_grows(found)} leaves logits {_grows(found + 1)} after training (TP5 §6.1)")
    else:
        why = f"q·k is at most Θ(d): a scale {_grows(found)} makes the logits vanish, so attention becomes uniform"
    return [Finding("attention", "logit", None, _span(result.spec, "attention", "logit"), fmt_exponent(found),
                    fmt_exponent(needed),
                    f"attention: {_as_written(result.spec, 'attention', 'logit')} scales logits by {_grows(found)}; "
                    f"μP needs 1/d_head = {_grows(needed)} (d_head = {head})",
                    why, f"logit = 1/{head}" if " " not in head else f"logit = 1/({head})")]


def _depth_findings(result: CheckResult) -> list[Finding]:
    depth, spec = result.depth, result.spec
    if depth is None:
        return []
    L = spec.depth or "L"
    findings = []
    mult_span = _span(spec, "residual", "mult")
    written = _as_written(spec, "residual", "mult")
    if depth.alpha < HALF:
        findings.append(Finding("residual", "mult", None, mult_span, fmt_exponent(depth.alpha), ">= 1/2",
                                f"residual: {written} gives α = {fmt_exponent(depth.alpha)} (branch output at init ∝ L^-α)",
                                "L branches of size L^-α add up to L^(1/2-α) at init (TP6): α must be at least 1/2",
                                f"mult = {_branch_mult(depth, HALF, L)}"))
    elif depth.alpha > 1:
        findings.append(Finding("residual", "mult", None, mult_span, fmt_exponent(depth.alpha), "1/2 to 1",
                                f"residual: {written} gives α = {fmt_exponent(depth.alpha)}: the branches start smaller "
                                "than any parametrization of TP6's family (α from 1/2 to 1)",
                                "with α > 1 even L branches add up to a vanishing change at init; TP6 classifies "
                                "α = 1/2 (Depth-μP) to α = 1 (CompleteP's ODE limit)",
                                _ZERO_BRANCH_FIX if depth.alpha == OO else
                                f"mult = {_branch_mult(depth, 1, L)}  (CompleteP, α = 1; "
                                f"then set the residual LR for α+γ = 1)"))
    if depth.alpha_width != 0:
        findings.append(Finding("residual", "mult", None, mult_span, fmt_exponent(depth.alpha_width), "0",
                                "residual: the branch multiplier depends on width",
                                "width scaling belongs to the layer classes; a width-dependent branch multiplier changes every hidden layer's e_init",
                                f"mult = 1/sqrt({L})"))
    for opt, res in result.results.items():
        s = depth.update[opt]
        if depth.alpha < HALF or s == 1 or res.depth_class in DEPTH_OK:
            continue
        family = result.exponents["hidden"].family(opt) if "hidden" in result.exponents else opt
        c_now = -_depth_exponent(spec, f"lr.{family}")
        grows = "grows" if s < 1 else "vanishes"
        findings.append(Finding(
            "residual", f"lr.{family}", opt, _span(spec, "residual", f"lr.{family}"), fmt_exponent(s), "1",
            f"residual ({opt}): α+γ = {fmt_exponent(s)} (α = {fmt_exponent(depth.alpha)}, γ = {fmt_exponent(depth.gamma(opt))}); TP6 needs α+γ = 1",
            f"each block moves the residual stream by L^-(α+γ) per step, L blocks by L^(1-α-γ): it {grows} with depth",
            f"lr.{family} = {power_text(-(c_now + 1 - s), L)}" if s != OO else _ZERO_BRANCH_FIX))
    return findings


# A branch that is zero at every depth (zero init, `n - n`) has an infinite
# exponent: no power of L rescales it, so the fix is an init, not a power.
_ZERO_BRANCH_FIX = "give the branch's layers a nonzero init (they start at exactly zero: no power of L fixes that)"


def _branch_mult(depth, alpha, L: str) -> str:
    """The residual multiplier that makes the branch output L^-alpha at init
    (whatever depth factors the init and hidden multiplier already carry)."""
    return power_text(-(alpha - depth.alpha + depth.mult_alpha), L)


def _depth_exponent(spec: ir.Spec, field: str):
    from mupspec.symbolic import exact_exponent

    block = spec.block("residual") or ir.Block(kind="residual")
    return exact_exponent(spec, "residual", ir.rule_value(block, field, spec.widths), axis=1)


def to_diagnostic(f: Finding) -> Diagnostic:
    return Diagnostic(f.message, f.span, None, f.severity)


# ---------------------------------------------------------------- rendering


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
               ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def exponent_rows(result: CheckResult) -> list[list[str]]:
    """Per class: a, b, c per optimizer checked, e_init, e per optimizer, μP's."""
    opts = list(result.results)
    rows = []
    for kind, e in result.exponents.items():
        init, opt = mup_targets(result.alignment)
        mup = [fmt_exponent(init[kind])] + [fmt_exponent(opt[o][kind]) for o in opts]
        values = [e.a, e.b] + [e.c(o) for o in opts] + [e.e_init] + [e.e_opt(o) for o in opts]
        rows.append([kind] + [fmt_exponent(v) for v in values] + [", ".join(mup)])
    for role, e in result.subroles.items():  # a sub-role is held to its class's μP invariants
        parent = ir.SUBROLES[role]
        init, opt = mup_targets(result.alignment)
        mup = [fmt_exponent(init[parent])] + [fmt_exponent(opt[o][parent]) for o in opts]
        values = [e.a, e.b] + [e.c(o) for o in opts] + [e.e_init] + [e.e_opt(o) for o in opts]
        rows.append([f"{role} ({parent})"] + [fmt_exponent(v) for v in values] + [", ".join(mup)])
    return rows


def exponent_header(result: CheckResult) -> list[str]:
    opts = list(result.results)
    return (["class", "a", "b"] + [f"c_{o}" for o in opts] + ["e_init"] + [f"e_{o}" for o in opts]
            + ["μP: " + ", ".join(["e_init"] + [f"e_{o}" for o in opts])])


def term_rows(result: CheckResult) -> list[list[str]]:
    opts = list(result.results)
    first = result.results[opts[0]].terms if opts else []
    rows = []
    for i, term in enumerate(first):
        cells = []
        for o in opts:
            t = result.results[o].terms[i]
            cells.append(fmt_exponent(t.k) + ("" if t.ok else " !"))
        rows.append([term.kind, term.name, "Θ(1)" if term.need == "=0" else "O(1)"] + cells)
    return rows


def _names(result: CheckResult, opt: str) -> str:
    res = result.results[opt]
    names = [NAMED[n][0] for n in res.names if n in NAMED]  # depth names show in the depth column
    return ("equivalent to " + " = ".join(names)) if names else "no named parametrization"


def render_text(result: CheckResult, findings: list[Finding], file: str, markdown: bool = False,
                shown: dict[str, str] | None = None, quiet: bool = False, color: bool = False) -> str:
    """The text report. `shown` (finding text -> spec name) carries findings
    already printed for an earlier spec of the same run: a spec that inherits
    them (`extends`) gets their first line and a pointer, not the whole text again."""
    spec, out = result.spec, []
    h = (lambda t: f"### {t}") if markdown else (lambda t: t)
    out.append(("## " if markdown else "") + f"{file}: {spec.name}" + (f" -- {spec.title}" if spec.title else ""))
    out.append(f"optimizers checked: {', '.join(result.results) or 'none'}")
    out += ["", h("exponents (A ∝ n^-a, B ∝ n^-b, C ∝ n^-c; e_init = a+b, e_sgd = 2a+c_sgd, e_adam = a+c_adam)")]
    out += _table(exponent_header(result), exponent_rows(result), markdown)
    out += ["", h("sizes at init and after one step: Θ(n^k), k per optimizer (! = fails)")]
    out += _table(["class", "quantity", "needs"] + list(result.results), term_rows(result), markdown)
    out += ["", h("verdicts")]
    for opt, res in result.results.items():
        depth = f"; depth (TP6): {res.depth_class}" if res.depth_class else ""
        out.append(f"{opt}: {REGIME_TEXT[res.regime]} in width; r = {fmt_exponent(res.r)}; {_names(result, opt)}{depth}")
        for key, label in DESIDERATA.items():
            out.append(f"{'  - ' if markdown else '  '}[{'x' if res.desiderata[key] else ' '}] {label}")
    if result.depth is not None:
        d = result.depth
        out.append(f"depth: α = {fmt_exponent(d.alpha)}, " + ", ".join(
            f"γ_{o} = {fmt_exponent(d.gamma(o))}" for o in result.results) + f", eps L-exponent {fmt_exponent(d.eps_adam)}")
    if result.logit is not None:
        out.append(f"attention: logit scale n^{fmt_exponent(result.logit)}, d_head = Θ(n^{fmt_exponent(result.head)}) "
                   f"(μP: 1/d_head, n^{fmt_exponent(-result.head)})")
    for note in result.notes:
        out.append(f"note: {note}")
    out.append(f"verdict: {verdict_text(result)}")
    kept = [f for f in findings if not (quiet and f.severity == "warning")]
    if findings:
        hidden = f"; {len(findings) - len(kept)} warnings hidden by --quiet" if len(kept) < len(findings) else ""
        out += ["", h(f"diagnostics ({len(findings)}{hidden})")]
        body = _finding_texts(sorted(kept, key=_position), spec.name, shown, color)
        out += (["```"] + body + ["```"]) if markdown and body else body
    return "\n".join(out) + "\n"


def _position(f: Finding) -> tuple:
    """Source order: by file, line and column; findings with no span last."""
    return (0, f.span.file or "", f.span.line, f.span.column) if f.span else (1, "", 0, 0)


def _once(text: str, spec_name: str, shown: dict[str, str] | None) -> str:
    if shown is None:
        return text
    if text in shown:
        return f"{text.splitlines()[0]}\n  (as shown above for {shown[text]})"
    shown[text] = spec_name
    return text


def verdict_text(result: CheckResult) -> str:
    if result.ok:
        return "μP" + (f" (a model without {', '.join(result.without)} layers, as declared)" if result.without else "")
    reasons = [_why_not(r) for r in result.results.values() if _why_not(r)]
    if result.missing:
        reasons.insert(0, f"incomplete spec: no {', '.join(result.missing)} block "
                          f"(declare a model without them with --without)")
    return "NOT μP -- " + ("; ".join(reasons) if reasons else "nothing to check")


def _why_not(res) -> str:
    reasons = [] if res.regime == "mup" else [f"{REGIME_TEXT[res.regime]} in width"]
    if res.depth_class not in (None, "Depth-μP", "CompleteP", "ODE-like"):
        reasons.append(f"{res.depth_class} in depth (TP6)")
    return f"{res.optimizer}: {', '.join(reasons)}" if reasons else ""


def render_finding(f: Finding, color: bool = False) -> str:
    head = render(to_diagnostic(f), color=color)
    opt = f" [{f.optimizer}]" if f.optimizer else ""
    fix = "\033[32mfix:\033[0m" if color else "fix:"
    return f"{head}\n  found {f.found}, needed {f.needed}{opt}\n  why: {f.why}\n  {fix} {f.fix}"


def _finding_texts(findings: list[Finding], spec_name: str, shown, color: bool) -> list[str]:
    """Each finding in full once (`_once`); a warning that repeats for more classes
    (eps.adam in every class) is told in one line under its first full telling."""
    texts, first, repeats = [], {}, {}
    for f in findings:
        full = render_finding(f, color)
        text = _once(full, spec_name, shown)
        key = (f.field, f.optimizer)
        if f.severity == "warning" and text == full:
            if key in first:
                repeats[first[key]].append(f)
                continue
            first[key], repeats[len(texts)] = len(texts), []
        texts.append(text)
    return [text + summarize_repeats(repeats.get(i, [])) for i, text in enumerate(texts)]


def summarize_repeats(more: list[Finding]) -> str:
    if not more:
        return ""
    where = ", ".join(f"{f.kind} (fix: {f.fix})" for f in more)
    return f"\n  the same warning for {len(more)} more {'class' if len(more) == 1 else 'classes'}: {where}"


# ---------------------------------------------------------------- JSON


def to_json(result: CheckResult, findings: list[Finding], file: str) -> dict:
    s = fmt_exponent
    return {
        "file": file, "spec": result.spec.name, "title": result.spec.title,
        "optimizers": list(result.results), "ok": result.ok,
        "classes_absent": result.absent, "notes": result.notes,
        "exponents": {k: {"a": s(e.a), "b": s(e.b), "c_sgd": s(e.c_sgd), "c_adam": s(e.c_adam),
                          "e_init": s(e.e_init), "e_sgd": s(e.e_sgd), "e_adam": s(e.e_adam),
                          "wd_sgd": s(e.wd_sgd), "wd_adam": s(e.wd_adam), "eps_adam": s(e.eps_adam)}
                      | {f"c_{o}": s(e.c(o)) for o in result.results} | {f"e_{o}": s(e.e_opt(o)) for o in result.results}
                      for k, e in result.exponents.items()},
        "attention": None if result.logit is None else {"logit_exponent": s(result.logit),
                                                        "head_dim_exponent": s(result.head)},
        "subroles": {k: {"class": ir.SUBROLES[k], "a": s(e.a), "b": s(e.b), "c_sgd": s(e.c_sgd), "c_adam": s(e.c_adam),
                         "e_init": s(e.e_init), "e_sgd": s(e.e_sgd), "e_adam": s(e.e_adam)}
                     for k, e in result.subroles.items()},
        "tie": None if result.tie is None else {
            "embedding": result.tie.embedding, "readout": result.tie.readout, "shareable": result.tie.shareable,
            "differs": result.tie.differs, "readout_mult_exponent": None if result.tie.fix_a is None else s(result.tie.fix_a)},
        "depth": None if result.depth is None else {
            "alpha": s(result.depth.alpha), "c_sgd": s(result.depth.c_sgd), "c_adam": s(result.depth.c_adam),
            "eps_adam": s(result.depth.eps_adam), "gamma": {o: s(result.depth.gamma(o)) for o in result.results},
            "update": {o: s(result.depth.update[o]) for o in result.results}, "layers": result.depth.layers},
        "alignment": {"name": result.alignment.name, "update": s(result.alignment.update),
                      "readout": s(result.alignment.readout)},
        "without": list(result.without), "missing": result.missing,
        "results": {o: {"regime": r.regime, "names": r.names, "r": s(r.r), "backward_exponent": s(r.backward),
                        "depth_class": r.depth_class, "desiderata": r.desiderata,
                        "terms": [{"role": t.role, "class": t.kind, "quantity": t.name, "k": s(t.k),
                                   "need": t.need, "ok": t.ok} for t in r.terms]}
                    for o, r in result.results.items()},
        "diagnostics": [{"severity": f.severity, "class": f.kind, "field": f.field, "optimizer": f.optimizer,
                         "file": f.span.file if f.span else None, "line": f.span.line if f.span else None,
                         "column": f.span.column if f.span else None, "found": f.found, "needed": f.needed,
                         "message": f.message, "why": f.why, "fix": f.fix} for f in findings],
    }

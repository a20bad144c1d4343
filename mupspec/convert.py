"""Stage 4: resolved `ir.Spec` -> an equivalent `ir.Spec` (TP5 Lemma J.1).

For θ > 0 (any expression in the spec's symbols, one per layer class) the
map   mult ← mult·θ,  init.var ← init.var/θ²  (init.std ← init.std/θ),
      lr.sgd ← lr.sgd/θ²,  wd.sgd ← wd.sgd·θ²,
      lr.adam ← lr.adam/θ,  wd.adam ← wd.adam·θ,  eps.adam ← eps.adam·θ
leaves the function computed at every step of training unchanged
(docs/converting.md derives the wd and eps rows). `convert` picks θ per class
from a named form (`FORMS`) or from user pins (`Setting`: "this field of this
class must equal that"), applies it, and writes the new values back as IR
built from sympy (`to_ir`): monomials come out as `1/fan_in`, `sqrt(fan_out)`,
`fan_in^(3/2)`. Attention and residual blocks are not parameter classes and
are never moved; norm gains start at 1 (no init rule can absorb θ), so norm
is never moved either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import sympy

from mupspec import ir
from mupspec.errors import Diagnostic, MupError, did_you_mean
from mupspec.printer import format_expr
from mupspec.resolve import limit_errors
from mupspec.symbolic import to_sympy

MOVABLE = ("input", "hidden", "output", "bias")
# value ← value · θ^power
# Adam, Lion and Muon steps are normalized (LR/θ, decoupled wd·θ); SGD's
# carries the multiplier twice; Adafactor's is relative to the parameter's
# RMS, so neither its LR nor its (relative) weight decay moves.
POWER: dict[str, int] = {"mult": 1, "init.var": -2, "init.std": -1, "lr.sgd": -2, "wd.sgd": 2,
                         "lr.adam": -1, "wd.adam": 1, "eps.adam": 1, "lr.lion": -1, "wd.lion": 1,
                         "lr.muon": -1, "wd.muon": 1, "lr.adafactor": 0, "wd.adafactor": 0}
THETA = "theta"  # pseudo-field of --set: give θ itself


@dataclass(frozen=True)
class Setting:
    """A pin: after conversion, `field` of class `kind` equals `value`."""

    kind: str
    field: str
    value: object  # ir.Expr
    source: str = ""


@dataclass
class Conversion:
    spec: ir.Spec
    thetas: dict[str, object]  # kind -> θ as an ir.Expr (only classes that moved)
    exact: bool
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- named forms

FORMS: dict[str, str] = {
    "table3": "no multipliers: mult = 1 in every class (TP5 Table 3)",
    "table8": "output init.var = 1 (its scale in the multiplier), mult = 1 elsewhere (TP5 Table 8, microsoft/mup)",
    "table9": "SGD LR = 1 in every class (TP4 style, TP5 Table 9); for Adam-only specs "
              "init.var = 1/fan_out (input, bias) and 1/fan_in (hidden, output)",
    "unit": "init.var = 1 in every class: all scale in multipliers and LRs (u-μP style)",
}

_ONE = ir.Num(numerator=1)


def _inv(name: str):
    return ir.BinOp(op="/", left=_ONE, right=ir.Sym(name=name))


def form_settings(form: str, spec: ir.Spec) -> list[Setting]:
    if form not in FORMS:
        raise MupError(Diagnostic(f"unknown form `{form}`", hint=did_you_mean(form, FORMS)
                                  or f"forms are: {', '.join(FORMS)}; or pin fields with --set"))
    kinds = [k for k in MOVABLE if spec.block(k) is not None]
    if form == "table3":
        return [Setting(k, "mult", _ONE, form) for k in kinds]
    if form == "table8":  # a zero-init readout pins Table 8's readout multiplier instead of its init
        return [Setting(k, "mult", _inv("fan_in"), form) if k == "output" and _zero_init(spec, k) else
                Setting(k, "init.var" if k == "output" else "mult", _ONE, form) for k in kinds]
    if form == "unit":
        return [Setting(k, "init.var", _ONE, form) for k in kinds if not _zero_init(spec, k)]
    if "sgd" in ir.optimizers(spec):
        return [Setting(k, "lr.sgd", _ONE, form) for k in kinds]
    return [Setting(k, "init.var", _inv("fan_out" if k in ("input", "bias") else "fan_in"), form)
            for k in kinds if not _zero_init(spec, k)]


def _zero_init(spec: ir.Spec, kind: str) -> bool:
    value = ir.rule_value(spec.block(kind), "init.var", spec.widths)
    return to_sympy(value, raw_env(spec)) == 0


# ---------------------------------------------------------------- sympy <-> IR


def raw_env(spec: ir.Spec) -> dict[str, sympy.Symbol]:
    """Every name as its own positive symbol: fan_in and fan_out stay
    symbolic (the rewrite is exact, not a width limit). Its key order --
    fans, widths, depth, hyperparameters -- is the order `to_ir` writes them."""
    names = ("fan_in", "fan_out", *spec.widths, *((spec.depth,) if spec.depth else ()),
             *(h.name for h in spec.hypers))
    return {name: sympy.Symbol(name, positive=True) for name in names}


def _name_rank(name: str, order: tuple[str, ...]) -> tuple:
    return (order.index(name), name) if name in order else (len(order), name)


def to_ir(f: sympy.Expr, order: tuple[str, ...] = ("fan_in", "fan_out")):
    """An IR expression for a sympy tree built from IR (Add, Mul, rational
    powers, rationals, positive symbols), in a canonical spelling:
    coefficient first, symbols in a fixed order, negative powers below the
    fraction bar, x^(1/2) as sqrt(x). `order` ranks the symbols (`name_order`)."""
    if isinstance(f, (sympy.Min, sympy.Max)):
        return ir.MinMax(func="min" if isinstance(f, sympy.Min) else "max", args=tuple(to_ir(a, order) for a in f.args))
    if f.is_Add:
        return _sum_ir(f, order)
    coeff, factors = f.as_coeff_mul()
    if not coeff.is_Rational:
        raise ValueError(f"not an expression mupspec can write: {f}")
    if coeff < 0:
        return ir.Neg(operand=to_ir(-f, order))
    top, bottom = _int_factors(coeff.p), _int_factors(coeff.q)
    for factor in sorted(factors, key=lambda factor: _factor_rank(factor, order)):
        base, exp = factor.as_base_exp()
        if not exp.is_Rational:
            raise ValueError(f"not an expression mupspec can write: {f}")
        (top if exp > 0 else bottom).append(_power_ir(base, abs(exp), order))
    numerator = _product(top) if top else _ONE
    return ir.BinOp(op="/", left=numerator, right=_product(bottom)) if bottom else numerator


def _sum_ir(f: sympy.Expr, order: tuple[str, ...]):
    out = None
    for term in f.as_ordered_terms():
        negative = term.could_extract_minus_sign()
        part = to_ir(-term if negative else term, order)
        if out is None:
            out = ir.Neg(operand=part) if negative else part
        else:
            out = ir.BinOp(op="-" if negative else "+", left=out, right=part)
    return out


def _int_factors(value: int) -> list:
    return [] if value == 1 else [ir.Num.of(value)]


def _factor_rank(factor: sympy.Expr, order: tuple[str, ...]) -> tuple:
    base = factor.as_base_exp()[0]
    if base.is_Number:
        return (0, str(base))
    if base.is_Symbol:
        return (1, *_name_rank(base.name, order))
    return (2, sympy.srepr(factor))


def _power_ir(base: sympy.Expr, exp: sympy.Rational, order: tuple[str, ...]):
    if not (base.is_Integer or base.is_Symbol or base.is_Add or base.is_Mul or base.is_Pow
            or isinstance(base, (sympy.Min, sympy.Max))):
        raise ValueError(f"not an expression mupspec can write: {base}")  # Abs, sign, ...: to_ir would loop
    inner = ir.Num.of(int(base)) if base.is_Integer else (
        ir.Sym(name=base.name) if base.is_Symbol else to_ir(base, order))
    if exp == 1:
        return inner
    if exp == sympy.Rational(1, 2):
        return ir.Call(func="sqrt", arg=inner)
    power = ir.Num.of(int(exp)) if exp.q == 1 else ir.BinOp(op="/", left=ir.Num.of(exp.p), right=ir.Num.of(exp.q))
    return ir.BinOp(op="^", left=inner, right=power)


def _product(items: list):
    out = items[0]
    for item in items[1:]:
        out = ir.BinOp(op="*", left=out, right=item)
    return out


def normal_form(f: sympy.Expr) -> sympy.Expr:
    """One spelling per value, so that converting back gives the text back:
    a monomial as sympy writes it, anything else as cancel's p/q (expanded
    numerator and denominator, common factors removed)."""
    f = sympy.powsimp(f, force=True)
    if not f.has(sympy.Add):
        return f
    # cancel() sees n and sqrt(n) as unrelated: write n = u^q first, so that
    # every power of n is an integer power of u, cancel, then put n back.
    there, back = {}, {}
    for symbol in sorted(f.free_symbols, key=str):
        q = sympy.ilcm(1, 1, *(p.exp.q for p in f.atoms(sympy.Pow) if p.base == symbol and p.exp.is_Rational))
        if q > 1:
            u = sympy.Dummy(f"u_{symbol.name}", positive=True)  # a Dummy: no spec name can collide with it
            there[symbol], back[u] = u**q, symbol ** sympy.Rational(1, q)
    return sympy.cancel(f.subs(there)).subs(back)


def simplify_ir(expr):
    """`expr` rewritten through sympy into the canonical spelling of `to_ir`."""
    names = {s.name for s in _symbols(expr)}
    env = {name: sympy.Symbol(name, positive=True) for name in names}
    return to_ir(normal_form(to_sympy(expr, env)))


_symbols = ir.symbols_in


# ---------------------------------------------------------------- settings


def parse_setting(text: str, spec: ir.Spec) -> Setting:
    """`CLASS.FIELD=EXPR` (e.g. `output.mult=1/fan_in`, `hidden.theta=sqrt(n)`),
    the expression parsed and validated by the spec language's own parser."""
    from mupspec.resolve import Symbols, parse_and_validate

    target, eq, value_text = text.partition("=")
    kind, dot, fld = target.strip().partition(".")
    if not eq or not dot or not value_text.strip():
        raise MupError(Diagnostic(f"cannot read --set `{text}`",
                                  hint="write CLASS.FIELD=EXPR, e.g. --set output.mult=1/fan_in"))
    if kind not in MOVABLE:
        why = "norm gains start at 1, so no init rule can absorb θ" if kind == "norm" else \
            "attention and residual blocks are not parameter classes" if kind in ir.BLOCK_KINDS else \
            (did_you_mean(kind, MOVABLE) or f"classes are: {', '.join(MOVABLE)}")
        raise MupError(Diagnostic(f"--set `{text}`: class `{kind}` cannot be converted", hint=why))
    if fld not in POWER and fld != THETA:
        raise MupError(Diagnostic(f"--set `{text}`: `{fld}` is not a field convert can pin",
                                  hint=did_you_mean(fld, (*POWER, THETA)) or f"fields: {', '.join((*POWER, THETA))}"))
    if spec.block(kind) is None:
        raise MupError(Diagnostic(f"--set `{text}`: spec `{spec.name}` has no `{kind}` block"))
    # validated as the very field it pins (so errors name it); θ as a multiplier
    as_field = fld if fld in ir.BLOCK_FIELDS[kind] else "mult"
    prefix = f"parametrization set {kind} {{ {as_field} = "
    value_col = len(target) + len(eq) + 1 + (len(value_text) - len(value_text.lstrip()))
    try:
        parsed = parse_and_validate(f"{prefix}{value_text.strip()} }}", "--set", Symbols.of(spec))
    except MupError as err:
        shift = value_col - (len(prefix) + 1)
        raise MupError([_shifted(d, shift, text, as_field, fld) for d in err.diagnostics]) from None
    return Setting(kind, fld, parsed.block(kind).rules[0].value, text)


def _shifted(diag: Diagnostic, shift: int, text: str, as_field: str, fld: str) -> Diagnostic:
    message = diag.message.replace(f"`{as_field}`", f"`{fld}`") + f" (in --set `{text}`)"
    if diag.span is None:
        return Diagnostic(message, None, diag.hint, diag.severity)
    span = diag.span.model_copy(update={"column": diag.span.column + shift,
                                        "end_column": diag.span.end_column + shift})
    return Diagnostic(message, span, diag.hint, diag.severity)


# ---------------------------------------------------------------- convert


def convert(spec: ir.Spec, form: str | None = None, settings: tuple[Setting, ...] = (),
            fixed_eps: bool = False) -> Conversion:
    """The spec moved by θ per class: `settings` override the form's pins."""
    env = raw_env(spec)
    pins = {s.kind: s for s in (form_settings(form, spec) if form else [])}
    seen: dict[str, Setting] = {}
    for s in settings:
        if s.kind in seen:
            raise MupError(Diagnostic(f"--set `{s.source}` and `{seen[s.kind].source}` both pin `{s.kind}`",
                                      hint="θ has one degree of freedom per class: pin one field per class"))
        seen[s.kind] = pins[s.kind] = s
    thetas: dict[str, sympy.Expr] = {}
    for kind, pin in pins.items():
        theta = _solve_theta(spec, pin, env)
        if theta != 1:
            thetas[kind] = theta
    _check_ties(spec, thetas)
    covered = ir.optimizers(spec)
    blocks = tuple(_moved_block(spec, b, thetas[b.kind], covered, fixed_eps, env) if b.kind in thetas else
                   _moved_subrole(spec, b, thetas[ir.SUBROLES[b.kind]], covered, fixed_eps, env)
                   if ir.SUBROLES.get(b.kind) in thetas else b
                   for b in spec.blocks)
    new = spec.model_copy(update={"blocks": blocks, "extends": None})
    moved_adam = [k for k in thetas if "adam" in covered]
    exact = not (fixed_eps and moved_adam)
    notes = []
    if fixed_eps and moved_adam:
        notes.append(f"Adam eps kept fixed in {', '.join(moved_adam)}: equivalent only up to eps "
                     "(exactly so when eps is negligible next to sqrt(v))")
    return Conversion(new, {k: to_ir(t, tuple(env)) for k, t in thetas.items()}, exact, notes)


def _check_ties(spec: ir.Spec, thetas: dict) -> None:
    """A tied embedding and readout are one tensor: the symmetry rescales
    that tensor once, so both classes must move by the same θ."""
    for tie in spec.ties:
        emb, out = ir.role_class(tie.embedding), ir.role_class(tie.readout)
        theta_in, theta_out = thetas.get(emb, sympy.Integer(1)), thetas.get(out, sympy.Integer(1))
        if sympy.simplify(theta_in - theta_out) != 0:
            raise MupError(Diagnostic(
                f"`tie {tie.embedding}, {tie.readout}`: the two share one tensor, so they must move by one θ, "
                f"but this conversion moves {emb} by θ = {theta_in} and {out} by θ = {theta_out}", tie.span,
                f"pin one θ for both (`--set {emb}.theta=...` and `--set {out}.theta=...` with the same value), "
                "or remove the `tie` to convert the untied network"))


def _solve_theta(spec: ir.Spec, pin: Setting, env) -> sympy.Expr:
    target = to_sympy(pin.value, env)
    if pin.field == THETA:
        theta = target
    else:
        if pin.field.startswith(("lr.", "wd.", "eps.")) and pin.field.split(".", 1)[1] not in ir.optimizers(spec):
            raise MupError(Diagnostic(f"{_who(pin)}: spec `{spec.name}` covers no `{pin.field.split('.')[1]}` "
                                      "optimizer", hint=f"it covers {', '.join(ir.optimizers(spec))}"))
        old = to_sympy(_field_value(spec.block(pin.kind), pin.field, spec), env)
        if target == 0:
            raise MupError(Diagnostic(f"{_who(pin)}: `{pin.field}` cannot become 0 by the symmetry "
                                      f"(it rescales `{pin.field}` by a positive power of θ)",
                                      hint="a zero init is a different parametrization: edit the spec instead"))
        if old == 0:
            raise MupError(Diagnostic(f"{_who(pin)}: cannot solve for θ from `{pin.field}`, which is 0 (zero init) in the spec",
                                      hint="pin another field of this class (e.g. mult)"))
        theta = normal_form((target / old) ** sympy.Rational(1, POWER[pin.field]))
    if theta.is_positive is False or theta.has(sympy.zoo, sympy.nan, sympy.oo, sympy.Abs, sympy.I) or theta == 0:
        rule = spec.block(pin.kind).rule(pin.field) or spec.block(pin.kind).rule("init.std")
        raise MupError(Diagnostic(f"{_who(pin)}: θ = {theta} is not a positive scale", rule.span if rule else None,
                                  hint="pins must be positive expressions, and so must the rule they replace"))
    return theta


def _who(pin: Setting) -> str:  # mutate: display
    return f"--set `{pin.source}`" if "=" in pin.source else f"form {pin.source}, class {pin.kind}"


def _field_value(block: ir.Block, fld: str, spec: ir.Spec):
    if fld == "init.std":
        std = block.rule("init.std")
        return std.value if std is not None else ir.Call(func="sqrt", arg=ir.rule_value(block, "init.var"))
    return ir.rule_value(block, fld, spec.widths)


def _moved_fields(block: ir.Block, covered: tuple[str, ...], fixed_eps: bool) -> list[str]:
    fields = ["init.std" if block.rule("init.std") is not None else "init.var", "mult"]
    for opt in covered:
        # Muon's rules only where given: a class without `lr.muon` is on AdamW
        if opt != "muon" or block.rule("lr.muon") is not None:
            fields += [f for f in (f"lr.{opt}", f"wd.{opt}") if f in ir.BLOCK_FIELDS[block.kind]]
    if "adam" in covered and not fixed_eps:
        fields.append("eps.adam")
    return fields


def _moved_subrole(spec, block: ir.Block, theta, covered, fixed_eps: bool, env) -> ir.Block:
    """A sub-role moves with its class (one θ); only the rules it states
    are rewritten, the others keep following the class."""
    moved = _moved_block(spec, block, theta, covered, fixed_eps, env)
    stated = {("init" if r.field.startswith("init.") else r.field) for r in block.rules}
    rules = [r for r in moved.rules if ("init" if r.field.startswith("init.") else r.field) in stated]
    return moved.model_copy(update={"rules": tuple(rules)})


def _moved_block(spec, block: ir.Block, theta, covered, fixed_eps: bool, env) -> ir.Block:
    """Init and LR rules are always written out (LR rules decide which
    optimizers a spec covers); mult, wd and eps only when not at their default."""
    rules = {r.field: r for r in block.rules}
    for fld in _moved_fields(block, covered, fixed_eps):
        old = _field_value(block, fld, spec)
        new_value = normal_form(to_sympy(old, env) * theta ** POWER[fld])
        is_default = fld in ir.DEFAULT_RULES and new_value == to_sympy(ir.DEFAULT_RULES[fld], env)
        if is_default and not fld.startswith(("init.", "lr.")):
            rules.pop(fld, None)
            continue
        new_ir = _writable(new_value, tuple(env), block, fld)
        if fld in rules and format_expr(rules[fld].value) == format_expr(new_ir):
            continue
        rules[fld] = ir.Rule(field=fld, value=new_ir)  # comments described the old value: dropped
    order = ir.BLOCK_FIELDS[block.kind]
    return block.model_copy(update={"rules": tuple(sorted(rules.values(), key=lambda r: order.index(r.field)))})


MAX_WRITTEN_BITS = 330  # ~100 digits: the longest number the parser reads


def _writable(value: sympy.Expr, order: tuple[str, ...], block: ir.Block, fld: str):
    """`to_ir(value)`, or a MupError at the user's rule when the moved value
    cannot be written as spec text (a constant over 100 digits, a form
    outside the language): never a broken output file."""
    rule = block.rule(fld) or (block.rule("init.std") if fld == "init.var" else None)
    where = rule.span if rule is not None else block.span
    try:
        new = to_ir(value, order)
    except (ValueError, RecursionError):
        new = None
    numbers = [n for n in _nodes(new) if isinstance(n, ir.Num)] if new is not None else []
    if new is None or any(max(n.numerator.bit_length(), n.denominator.bit_length()) > MAX_WRITTEN_BITS for n in numbers):
        raise MupError(Diagnostic(f"convert cannot write the new `{block.kind}.{fld}`: moved by θ it needs "
                                  "a constant over 100 digits or a form the language has no words for", where,
                                  "pin another field of this class with --set, or rewrite this rule"))
    beyond = limit_errors(new)
    if beyond:
        raise MupError(Diagnostic(f"convert cannot write the new `{block.kind}.{fld}`: moved by θ it would read "
                                  f"`{format_expr(new)}`, beyond the spec language's limits ({beyond[0].message})",
                                  where, f"{beyond[0].hint}; pin another field of this class with --set, "
                                  "or rewrite this rule"))
    return new


def _nodes(expr):
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(getattr(node, c) for c in ("operand", "arg", "left", "right") if hasattr(node, c))


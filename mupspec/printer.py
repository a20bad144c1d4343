"""Stage 2c: `ir.Spec` -> canonical `.mup` text (used by `mupspec fmt`).

Canonical form: header comments, the `parametrization` line, widths, depth,
hyperparameters in source order, ties, then blocks in the order input, hidden,
output, bias, norm, the sub-roles (ir.SUBROLES order), attention, residual, one rule per line in field order,
two-space indent, minimal parentheses, comments kept with their nodes.
For any valid spec, parse(print(spec)) == spec up to spans.
"""

from __future__ import annotations

from mupspec import ir

# Binding power of each operator; higher binds tighter.
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "^": 4}


def format_expr(expr) -> str:
    return _expr(expr, 0)


def _expr(expr, parent_prec: int, right_of: str | None = None) -> str:
    if isinstance(expr, ir.Num):
        return _number(expr)
    if isinstance(expr, ir.Sym):
        return expr.name
    if isinstance(expr, ir.Call):
        return f"{expr.func}({_expr(expr.arg, 0)})"
    if isinstance(expr, ir.MinMax):
        return f"{expr.func}({', '.join(_expr(a, 0) for a in expr.args)})"
    if isinstance(expr, ir.Neg):
        # -a^b parses as -(a^b); -(-a) needs parens only for readability of "--"
        text = "-" + _expr(expr.operand, _PREC["neg"])
        return f"({text})" if parent_prec > _PREC["neg"] else text
    prec = _PREC[expr.op]
    if expr.op == "^":
        # An exponent that is not a number, name or call gets parentheses:
        # `n^(-1)/2`, `n^(1/2)`, so that the trap `n^-1/2` == (n^-1)/2 is
        # always visible in canonical form.
        left = _expr(expr.left, prec + 1)
        right = _expr(expr.right, prec + 1)
        text = f"{left}^{right}"
    else:
        left = _expr(expr.left, prec)
        right = _expr(expr.right, prec + 1)  # left-associative: a-(b-c) keeps its parens
        text = f"{left} {expr.op} {right}" if expr.op in "+-" else f"{left}{expr.op}{right}"
    return f"({text})" if prec < parent_prec else text


def _number(num: ir.Num) -> str:
    value = num.value
    if value.denominator == 1:
        return str(value.numerator)
    # a finite decimal (the IR guarantees it): print its exact digits
    digits = 0
    scaled = value
    while scaled.denominator != 1:
        scaled *= 10
        digits += 1
    whole, frac = divmod(scaled.numerator, 10**digits)
    return f"{whole}.{frac:0{digits}d}"


def _comment_lines(comments: tuple[str, ...], indent: str) -> list[str]:
    return [f"{indent}#{c}" if c == "" or c.startswith(" ") else f"{indent}# {c}" for c in comments]


def _with_note(line: str, note: str | None) -> str:
    if note is None:
        return line
    return f"{line}  #{note}" if note == "" or note.startswith(" ") else f"{line}  # {note}"


def _quote(title: str) -> str:
    return '"' + title.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_spec(spec: ir.Spec) -> str:
    out: list[str] = _comment_lines(spec.comments, "")
    header = f"parametrization {spec.name}"
    if spec.title is not None:
        header += f" {_quote(spec.title)}"
    if spec.extends is not None:
        target = _quote(spec.extends.target) if spec.extends.is_path else spec.extends.target
        header += f" extends {target}"
    out.append(_with_note(header, spec.note))
    decls = [*sorted(spec.dims, key=lambda d: d.role != "width"), *spec.hypers, *spec.ties]
    if decls:
        out.append("")
    for decl in decls:
        out += _comment_lines(decl.comments, "")
        if isinstance(decl, ir.Dim):
            items = [name if decl.value(name) is None else f"{name} = {format_expr(decl.value(name))}"
                     for name in decl.names]
            line = f"{decl.role} {', '.join(items)}"
        elif isinstance(decl, ir.Tie):
            line = f"tie {decl.embedding}, {decl.readout}"
        else:
            line = f"hyper {decl.name} = {format_expr(decl.value)}"
        out.append(_with_note(line, decl.note))
    for block in sorted(spec.blocks, key=lambda b: ir.BLOCK_KINDS.index(b.kind)):
        out.append("")
        out += _format_block(block)
    if spec.end_comments:
        out.append("")
        out += _comment_lines(spec.end_comments, "")
    return "\n".join(out) + "\n"


def _format_block(block: ir.Block) -> list[str]:
    out = _comment_lines(block.comments, "")
    out.append(_with_note(f"{block.kind} {{", block.note))
    order = ir.BLOCK_FIELDS[block.kind]
    for rule in sorted(block.rules, key=lambda r: order.index(r.field)):
        out += _comment_lines(rule.comments, "  ")
        out.append(_with_note(f"  {rule.field} = {format_expr(rule.value)}", rule.note))
    out += _comment_lines(block.end_comments, "  ")
    out.append("}")
    return out

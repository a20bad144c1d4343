"""Stage 2c: `ir.Spec` -> canonical `.mup` text (used by `mupspec fmt`).

Canonical form: header comments, the `parametrization` line, widths, depth,
hyperparameters in source order, ties, then blocks in the order input, hidden,
output, bias, norm, the sub-roles (ir.SUBROLES order), attention, residual, one rule per line in field order,
two-space indent, minimal parentheses, comments kept with their nodes.
For any valid spec, parse(print(spec)) == spec up to spans, except that a
comment holding a line break other than "\n" comes back as several comments.
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


def _comment(text: str) -> str:
    return f"#{text}" if text == "" or text.startswith(" ") else f"# {text}"


def _pieces(comment: str) -> list[str]:
    """A comment as lines. A comment runs to the next "\n", so it may hold
    "\r", "\x0b", "\x0c", "\x1c"-"\x1e", "\x85", U+2028 or U+2029; every
    editor, universal-newline reader and `str.splitlines` breaks a line there,
    and the rest of the comment would read as spec text. Each piece is
    written as a comment of its own (the breaks themselves are dropped)."""
    return [piece.rstrip() for piece in comment.splitlines()] or [""]


def _comment_lines(comments: tuple[str, ...], indent: str) -> list[str]:
    return [indent + _comment(piece) for c in comments for piece in _pieces(c)]


def _with_note(line: str, note: str | None) -> tuple[str, list[str]]:
    """`line` ending in the first line of its note, and the note's further
    lines (see `_pieces`): the caller writes them as the leading comments of
    the next node in the same scope (or its closing comments), which is where
    the parser puts a full-line comment there, so a second `fmt` changes
    nothing. The text is kept; its attachment moves."""
    if note is None:
        return line, []
    first, *rest = _pieces(note)
    return f"{line}  {_comment(first)}", rest


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
    line, carried = _with_note(header, spec.note)  # carried: note lines for the next node
    out.append(line)
    decls = [*sorted(spec.dims, key=lambda d: d.role != "width"), *spec.hypers, *spec.ties]
    if decls:
        out.append("")
    for decl in decls:
        out += _comment_lines((*carried, *decl.comments), "")
        if isinstance(decl, ir.Dim):
            items = [name if decl.value(name) is None else f"{name} = {format_expr(decl.value(name))}"
                     for name in decl.names]
            line = f"{decl.role} {', '.join(items)}"
        elif isinstance(decl, ir.Tie):
            line = f"tie {decl.embedding}, {decl.readout}"
        else:
            line = f"hyper {decl.name} = {format_expr(decl.value)}"
        line, carried = _with_note(line, decl.note)
        out.append(line)
    for block in sorted(spec.blocks, key=lambda b: ir.BLOCK_KINDS.index(b.kind)):
        out.append("")
        out += _format_block(block, carried)
        carried = []
    if carried or spec.end_comments:
        out.append("")
        out += _comment_lines((*carried, *spec.end_comments), "")
    return "\n".join(out) + "\n"


def _format_block(block: ir.Block, leading: list[str]) -> list[str]:
    out = _comment_lines((*leading, *block.comments), "")
    line, carried = _with_note(f"{block.kind} {{", block.note)
    out.append(line)
    order = ir.BLOCK_FIELDS[block.kind]
    for rule in sorted(block.rules, key=lambda r: order.index(r.field)):
        out += _comment_lines((*carried, *rule.comments), "  ")
        line, carried = _with_note(f"  {rule.field} = {format_expr(rule.value)}", rule.note)
        out.append(line)
    out += _comment_lines((*carried, *block.end_comments), "  ")
    out.append("}")
    return out

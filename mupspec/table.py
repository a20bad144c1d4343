"""Stage: resolved `ir.Spec` -> a Tensor Programs V style table.

`build_table(spec)` returns a `Table` (rows: init variance, multiplier, one LR
row per optimizer the spec covers, then whatever else the spec sets; columns:
its blocks, with classes whose every cell agrees merged into one column, as
the paper writes "input weights & all biases"). `render(table, format)` turns
it into plain text, Markdown or LaTeX. With `invariants=True` the rows
e_init, e_sgd, e_adam (docs/theory.md §3.1) are added from `mupspec.symbolic`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mupspec import ir
from mupspec.printer import format_expr

# field -> row label, in row order.
ROW_LABELS: dict[str, str] = {
    "init.var": "init var",
    "mult": "multiplier",
    "lr.sgd": "SGD LR",
    "lr.adam": "Adam LR",
    "wd.sgd": "SGD weight decay",
    "wd.adam": "AdamW weight decay",
    "eps.adam": "Adam eps",
    "logit": "attention logit",
}
FORMATS = ("text", "markdown", "latex")
PARAM_CLASSES = ("input", "hidden", "output", "bias")  # the classes with an init rule
_ALWAYS = ("init.var",)  # shown even when every class takes the default


@dataclass(frozen=True)
class Cell:
    """One entry: an IR expression, a pre-rendered string (invariants), or
    nothing (the field does not apply to that column)."""

    expr: object | None = None
    text: str | None = None

    def key(self) -> str:
        return self.text if self.text is not None else (format_expr(self.expr) if self.expr is not None else "")


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]


def build_table(spec: ir.Spec, invariants: bool = False, merge: bool = True) -> Table:
    blocks = sorted(spec.blocks, key=lambda b: ir.BLOCK_KINDS.index(b.kind))
    fields = _shown_fields(spec, blocks)
    rows = [(ROW_LABELS[f], tuple(_cell(spec, b, f) for b in blocks)) for f in fields]
    if invariants:
        rows += _invariant_rows(spec, blocks)
    columns = [b.kind for b in blocks]
    if merge:
        columns, rows = _merge_columns(columns, rows)
    return Table(spec.title or spec.name, tuple(columns), tuple(rows))


def _shown_fields(spec: ir.Spec, blocks: list[ir.Block]) -> list[str]:
    """init var always; an LR row per optimizer covered; any other field only
    when some block sets it (Table 3 has no multiplier row, as in the paper)."""
    covered = ir.optimizers(spec)
    set_fields = {r.field for b in blocks for r in b.rules}
    if "init.std" in set_fields:
        set_fields.add("init.var")
    shown = []
    for field in ROW_LABELS:
        if field.startswith("lr."):
            keep = field.split(".", 1)[1] in covered
        elif field in ("wd.sgd", "wd.adam", "eps.adam"):
            keep = field in set_fields and field.split(".", 1)[1] in covered
        else:
            keep = field in set_fields or (field in _ALWAYS and any(b.kind in PARAM_CLASSES for b in blocks))
        if keep:
            shown.append(field)
    return shown


def _cell(spec: ir.Spec, block: ir.Block, field: str) -> Cell:
    accepted = ir.BLOCK_FIELDS[block.kind]
    if field == "init.var":
        if "init.var" not in accepted:
            return Cell()
        std = block.rule("init.std")
        if std is not None:
            return Cell(expr=_variance_of(std.value))
    elif field not in accepted:
        return Cell()
    return Cell(expr=ir.role_rule(spec, block.kind, field))  # a sub-role shows what it inherits


def _variance_of(std) -> object:
    """std^2, simplified when sympy can write it back as an expression."""
    from mupspec.convert import simplify_ir  # sympy stays on the convert side

    return simplify_ir(ir.BinOp(op="^", left=std, right=ir.Num(numerator=2)))


def _invariant_rows(spec: ir.Spec, blocks: list[ir.Block]):
    from mupspec.symbolic import class_exponents, fmt_exponent

    covered = ir.optimizers(spec)
    names = ["e_init"] + [f"e_{opt}" for opt in covered]
    per_block = {}
    for block in blocks:
        if block.kind in PARAM_CLASSES or block.kind == "norm":
            per_block[block.kind] = class_exponents(spec, block.kind)
    rows = []
    for name in names:
        cells = []
        for block in blocks:
            exps = per_block.get(block.kind)
            value = getattr(exps, name, None) if exps is not None else None
            cells.append(Cell(text=fmt_exponent(value)) if value is not None else Cell())
        rows.append((name, tuple(cells)))
    return rows


def _merge_columns(columns, rows):
    """Merge columns whose cells agree in every row: the paper's 'input
    weights & all biases'. Only parameter classes merge with each other."""
    keys = [tuple(cells[i].key() for _, cells in rows) for i in range(len(columns))]
    groups: list[list[int]] = []
    for i, col in enumerate(columns):
        home = next((g for g in groups if keys[g[0]] == keys[i] and columns[g[0]] in PARAM_CLASSES + ("norm",)
                     and col in PARAM_CLASSES + ("norm",)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    new_columns = [" & ".join(columns[i] for i in g) for g in groups]
    new_rows = [(label, tuple(cells[g[0]] for g in groups)) for label, cells in rows]
    return new_columns, new_rows


# ---------------------------------------------------------------- rendering


def render(table: Table, fmt: str = "text") -> str:
    if fmt == "markdown":
        return _render_markdown(table)
    if fmt == "latex":
        return _render_latex(table)
    return _render_text(table)


def _plain(cell: Cell) -> str:
    if cell.text is not None:
        return cell.text
    return format_expr(cell.expr) if cell.expr is not None else "-"


def _render_text(table: Table) -> str:
    header = ["", *table.columns]
    body = [[label, *(_plain(c) for c in cells)] for label, cells in table.rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([table.title, "", line(header), rule, *(line(r) for r in body)]) + "\n"


def _render_markdown(table: Table) -> str:
    def md(cell: Cell) -> str:
        if cell.expr is None and cell.text is None:
            return "–"
        return f"`{_plain(cell)}`"

    out = [f"**{table.title}**", "", "| | " + " | ".join(table.columns) + " |",
           "|---|" + "---|" * len(table.columns)]
    out += [f"| {label} | " + " | ".join(md(c) for c in cells) + " |" for label, cells in table.rows]
    return "\n".join(out) + "\n"


def _render_latex(table: Table) -> str:
    def tex(cell: Cell) -> str:
        if cell.text is not None:
            return f"${_latex_fraction(cell.text)}$"
        return f"${latex_expr(cell.expr)}$" if cell.expr is not None else "--"

    columns = [_tex_escape(c).replace(" \\& ", " \\& ") for c in table.columns]
    out = [f"% {table.title} (needs \\usepackage{{booktabs}})", "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
           " & " + " & ".join(columns) + " \\\\", "\\midrule"]
    out += [f"{_tex_escape(label)} & " + " & ".join(tex(c) for c in cells) + " \\\\" for label, cells in table.rows]
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out) + "\n"


def _tex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("_", "\\_").replace("%", "\\%")


def _latex_fraction(text: str) -> str:
    if "/" in text:
        num, den = text.split("/", 1)
        sign = "-" if num.startswith("-") else ""
        return f"{sign}\\tfrac{{{num.lstrip('-')}}}{{{den}}}"
    return text


# Binding power for LaTeX: fractions need no parentheses, products and powers do.
_TEX_PREC = {"+": 1, "-": 1, "*": 2, "/": 3, "neg": 2, "^": 4}


def latex_expr(expr, parent: int = 0) -> str:
    if isinstance(expr, ir.Num):
        return format_expr(expr)
    if isinstance(expr, ir.Sym):
        name = expr.name.replace("_", "\\_")
        return expr.name if len(expr.name) == 1 else f"\\mathrm{{{name}}}"
    if isinstance(expr, ir.Call):
        return f"\\sqrt{{{latex_expr(expr.arg)}}}"
    if isinstance(expr, ir.MinMax):
        return f"\\{expr.func}\\left({', '.join(latex_expr(a) for a in expr.args)}\\right)"
    if isinstance(expr, ir.Neg):
        text = "-" + latex_expr(expr.operand, _TEX_PREC["neg"] + 1)
        return f"\\left({text}\\right)" if parent > _TEX_PREC["neg"] else text
    if expr.op == "/":
        text = f"\\frac{{{latex_expr(expr.left)}}}{{{latex_expr(expr.right)}}}"
        return f"\\left({text}\\right)" if parent > _TEX_PREC["^"] else text
    if expr.op == "^":
        base = latex_expr(expr.left, _TEX_PREC["^"] + 1)
        return f"{base}^{{{latex_expr(expr.right)}}}"
    prec = _TEX_PREC[expr.op]
    left = latex_expr(expr.left, prec)
    right = latex_expr(expr.right, prec + 1)
    text = f"{left} \\cdot {right}" if expr.op == "*" else f"{left} {expr.op} {right}"
    return f"\\left({text}\\right)" if prec < parent else text

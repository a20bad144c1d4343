"""`mupspec table`: the bundled TP5 specs render as the paper's Tables 3, 8, 9.

The expected cells are copied by hand from docs/theory.md §3 (the paper's
notation: ² and √), not computed from the specs."""

import re
from pathlib import Path

import pytest

from mupspec.cli import main
from mupspec.resolve import load_spec
from mupspec.table import build_table, latex_expr, render

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    """Paths below are relative to the repository root, wherever pytest runs."""
    monkeypatch.chdir(ROOT)


# columns: input weights & all biases | output weights | hidden weights
PAPER = {
    "mup_table3": {
        "init var": ("1/fan_in", "1/fan_in²", "1/fan_in"),
        "SGD LR": ("fan_out", "1/fan_in", "1"),
        "Adam LR": ("1", "1/fan_in", "1/fan_in"),
    },
    "mup_table8": {
        "init var": ("1/fan_in", "1", "1/fan_in"),
        "multiplier": ("1", "1/fan_in", "1"),
        "SGD LR": ("fan_out", "fan_in", "1"),
        "Adam LR": ("1", "1", "1/fan_in"),
    },
    "mup_table9": {
        "init var": ("1/fan_out", "1/fan_in", "1/fan_in"),
        "multiplier": ("√fan_out", "1/√fan_in", "1"),
        "SGD LR": ("1", "1", "1"),
        "Adam LR": ("1/√fan_out", "1/√fan_in", "1/fan_in"),
    },
}
PAPER_COLUMNS = ("input & bias", "output", "hidden")

# μP in invariant form, docs/theory.md §3.1 (input/bias, output, hidden)
MUP_INVARIANTS = {"e_init": ("0", "1", "1/2"), "e_sgd": ("-1", "1", "0"), "e_adam": ("0", "1", "1")}


def _ascii(paper_cell: str) -> str:
    """The paper's notation in mupspec's: x² -> x^2, √x -> sqrt(x)."""
    cell = paper_cell.replace("²", "^2")
    return re.sub(r"√(\w+)", r"sqrt(\1)", cell)


def _parse_text_table(text: str) -> dict[str, dict[str, str]]:
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.startswith("---")) - 1
    columns = re.split(r"\s{2,}", lines[header_at].strip())
    rows = {}
    for line in lines[header_at + 2:]:
        label, *cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(columns), line
        rows[label] = dict(zip(columns, cells))
    return rows


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_tables_cell_for_cell(name, capsys):
    assert main(["table", f"specs/{name}.mup"]) == 0
    rows = _parse_text_table(capsys.readouterr().out)
    expected = PAPER[name]
    # the paper's rows, plus only the attention logit row (the specs' 1/d logit)
    assert set(rows) == set(expected) | {"attention logit"}
    for label, cells in expected.items():
        for column, paper_cell in zip(PAPER_COLUMNS, cells):
            assert rows[label][column] == _ascii(paper_cell), (name, label, column)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_mup_invariants_rows(name, capsys):
    assert main(["table", f"specs/{name}.mup", "--invariants"]) == 0
    rows = _parse_text_table(capsys.readouterr().out)
    for label, cells in MUP_INVARIANTS.items():
        assert tuple(rows[label][c] for c in PAPER_COLUMNS) == cells, (name, label)


def test_unmerged_columns_and_sp_invariants(capsys):
    assert main(["table", "specs/sp.mup", "--invariants", "--no-merge"]) == 0
    rows = _parse_text_table(capsys.readouterr().out)
    assert list(rows["init var"]) == ["input", "hidden", "output", "bias", "attention"]
    # SP with a global Θ(1) LR: e_init = (0, 1/2, 1/2), e_sgd = e_adam = 0 (docs/theory.md §3.1)
    assert [rows["e_init"][c] for c in ("input", "hidden", "output")] == ["0", "1/2", "1/2"]
    assert {rows[r][c] for r in ("e_sgd", "e_adam") for c in ("input", "hidden", "output", "bias")} == {"0"}


def test_umup_zero_init_and_norm_column(capsys):
    assert main(["table", "specs/umup.mup"]) == 0
    rows = _parse_text_table(capsys.readouterr().out)
    assert rows["init var"]["bias"] == "0"
    assert rows["init var"]["norm"] == "-"  # norm gains start at 1: no init rule
    assert "SGD LR" not in rows  # an Adam-only spec


def test_markdown_and_latex():
    table = build_table(load_spec("specs/mup_table8.mup"))
    md = render(table, "markdown")
    assert "| | input & bias | hidden | output | attention |" in md
    assert "| multiplier | `1` | `1` | `1/fan_in` | – |" in md
    tex = render(table, "latex")
    assert "\\begin{tabular}{lcccc}" in tex and "input \\& bias" in tex
    assert "$\\frac{1}{\\mathrm{fan\\_in}}$" in tex
    assert tex.count("\\\\") == 1 + 5  # header + 5 rows


def test_latex_expressions():
    spec = load_spec("specs/mup_table3.mup")
    assert latex_expr(spec.block("output").rule("init.var").value) == "\\frac{1}{\\mathrm{fan\\_in}^{2}}"
    spec9 = load_spec("specs/mup_table9.mup")
    assert latex_expr(spec9.block("input").rule("mult").value) == "\\sqrt{\\mathrm{fan\\_out}}"


def test_init_std_is_shown_as_variance(tmp_path, capsys):
    path = tmp_path / "std.mup"
    path.write_text("parametrization s\nwidth n\nhidden {\n  init.std = 1/sqrt(fan_in)\n}\n")
    assert main(["table", str(path)]) == 0
    assert _parse_text_table(capsys.readouterr().out)["init var"]["hidden"] == "1/fan_in"


def test_missing_file_is_a_clean_error(capsys):
    assert main(["table", "specs/nope.mup"]) == 2
    assert "no such file" in capsys.readouterr().err

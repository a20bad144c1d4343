"""Alignment assumptions (docs/checking.md §2) and Everett et al. 2024's
Table 1: SP / NTK / mean-field / μP × SGD / Adam / Adafactor, per-layer LR
exponents that update every layer maximally under their "full alignment"
(ΔW·x coherent, W·Δx a CLT sum, the readout's included)."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from mupspec.check import ALIGNMENTS, check_spec, maximal_lr_exponents, parse_alignment
from mupspec.cli import main
from mupspec.resolve import parse_and_resolve
from mupspec.symbolic import spec_exponents

H = F(1, 2)
# Everett et al. 2024 (arXiv 2407.05872), Table 1, in their abc convention
# (W = n^-a w, w ~ N(0, n^-2b), LR n^-c; embedding / hidden / readout).
EVERETT_AB = {
    "SP": ((0, 0), (0, H), (0, H)),
    "NTK": ((0, 0), (H, 0), (H, 0)),
    "MFP": ((0, 0), (H, 0), (1, 0)),
    "muP": ((-H, H), (0, H), (H, H)),
}
# Per-layer LR exponents c (embedding, hidden, readout) under their full
# alignment. The Adam row is the paper's (SP (0, 1, 1), NTK (0, 1/2, 1/2),
# μP (1/2, 1, 1/2)); the SGD and Adafactor rows are derived by the same
# rules (Adafactor's relative step: c_adafactor = c_adam - b).
EVERETT_C = {
    "sgd": {"SP": (-H, H, 1), "NTK": (-H, -H, 0), "MFP": (-1, -1, -1), "muP": (0, 0, 0)},
    "adam": {"SP": (0, 1, 1), "NTK": (0, H, H), "MFP": (0, H, 0), "muP": (H, 1, H)},
    "adafactor": {"SP": (0, H, H), "NTK": (0, H, H), "MFP": (0, H, 0), "muP": (0, H, 0)},
}
CASES = [(p, o) for o in EVERETT_C for p in EVERETT_AB]


def abc_spec(name: str, optimizer: str, c=None) -> str:
    lines = [f"parametrization {name.lower()}_{optimizer}", "width n"]
    for kind, (a, b), ci in zip(("input", "hidden", "output"), EVERETT_AB[name], c or (0, 0, 0)):
        lines.append(f"{kind} {{ mult = n^({-F(a)}); init.var = n^({-2 * F(b)}); lr.{optimizer} = n^({-F(ci)}) }}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, optimizer", CASES)
def test_everett_table1_per_layer_lrs_are_the_maximal_stable_ones_under_their_alignment(name, optimizer):
    blank = spec_exponents(parse_and_resolve(abc_spec(name, optimizer)), exact=True)
    solved = maximal_lr_exponents(blank, optimizer, ALIGNMENTS["everett"])
    assert tuple(solved[k] for k in ("input", "hidden", "output")) == EVERETT_C[optimizer][name]
    spec = parse_and_resolve(abc_spec(name, optimizer, EVERETT_C[optimizer][name]))
    res = check_spec(spec, alignment=ALIGNMENTS["everett"]).results[optimizer]
    assert res.regime == "mup" and res.r == 0  # stable, features move, every layer maximal


@pytest.mark.parametrize("name, optimizer", CASES)
def test_under_tensor_programs_full_alignment_only_the_mup_class_survives(name, optimizer):
    spec = parse_and_resolve(abc_spec(name, optimizer, EVERETT_C[optimizer][name]))
    res = check_spec(spec).results[optimizer]
    if name in ("SP", "NTK"):
        # the readout starts at n^-1/2 and W_out·Δx adds n aligned terms: Θ(n^1/2)
        assert res.regime == "unstable"
        assert [t.k for t in res.terms if t.role == "output_change"] == [H]
    else:
        assert res.regime == "mup" and "mup" in res.names and "mean_field" in res.names


def test_no_alignment_allows_larger_hidden_lrs():
    blank = spec_exponents(parse_and_resolve(abc_spec("muP", "adam")), exact=True)
    full = maximal_lr_exponents(blank, "adam", ALIGNMENTS["full"])
    none = maximal_lr_exponents(blank, "adam", ALIGNMENTS["none"])
    assert none["hidden"] == full["hidden"] - H and none["output"] == full["output"] - H
    assert none["input"] == full["input"]
    measured = maximal_lr_exponents(blank, "adam", parse_alignment("0.75"))
    assert measured["hidden"] == full["hidden"] - F(1, 4)


def test_the_spec_or_the_command_line_chooses_the_alignment(tmp_path, capsys):
    path = tmp_path / "sp_everett.mup"
    path.write_text(abc_spec("SP", "adam", EVERETT_C["adam"]["SP"]))
    assert main(["check", str(path)]) == 1
    assert main(["check", str(path), "--alignment", "everett"]) == 0
    assert "alignment: everett" in capsys.readouterr().out
    path.write_text(abc_spec("SP", "adam", EVERETT_C["adam"]["SP"]) + "alignment {\n  update = 1\n  readout = 1/2\n}\n")
    assert main(["check", str(path)]) == 0
    assert main(["check", str(path), "--alignment", "full"]) == 1
    assert main(["check", str(path), "--alignment", "0.3"]) == 2


@pytest.mark.parametrize("block, message", [
    ("alignment { update = 2 }", "`update` must be an alignment exponent from 1/2 (none) to 1 (full)"),
    ("alignment { readout = n }", "`readout` must be an alignment exponent"),
    ("alignment { logit = 1 }", "`logit` is not a rule of `alignment` blocks"),
    ("residual { layers = 3/2 }", "`layers` must be a whole number of layers per branch"),
])
def test_constant_fields_take_plain_numbers(block, message):
    from mupspec.errors import MupError

    with pytest.raises(MupError) as err:
        parse_and_resolve(f"parametrization x\ndepth L\n{block}\n")
    assert message in str(err.value)

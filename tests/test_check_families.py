"""Optimizer families beyond SGD and Adam (docs/checking.md, "Optimizer
families"): Adafactor, Lion / sign-SGD, Muon (+ AdamW) through check,
convert, equiv and codegen."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mupspec.check import check_spec
from mupspec.cli import main
from mupspec.codegen import load_module
from mupspec.errors import MupError
from mupspec.report import diagnose
from mupspec.resolve import load_spec, parse_and_resolve

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
BUNDLED = {"mup_adafactor": "adafactor", "mup_lion": "lion", "mup_muon": "muon"}


@pytest.mark.parametrize("name, family", BUNDLED.items())
def test_bundled_family_specs_are_mup_and_survive_conversion(name, family, tmp_path, capsys):
    spec = load_spec(SPECS / f"{name}.mup")
    result = check_spec(spec)
    assert family in result.results and result.ok
    for form in ("table8", "table9", "unit"):
        out = tmp_path / f"{name}_{form}.mup"
        assert main(["convert", str(SPECS / f"{name}.mup"), "--to", form, "-o", str(out)]) == 0
        assert main(["equiv", "--strict", str(SPECS / f"{name}.mup"), str(out)]) == 0
        assert check_spec(load_spec(out)).results[family].regime == "mup"


# μP's input and output LRs of each family on Table 3's init (Muon: AdamW's there)
OTHERS = {"lion": ("1", "1/fan_in"), "adafactor": ("1", "1"), "muon": None}


def hidden_lr(family: str, value: str) -> str:
    rest = OTHERS[family]
    inp, out = (f"lr.{family} = {rest[0]}", f"lr.{family} = {rest[1]}") if rest else ("lr.adam = 1", "lr.adam = 1/fan_in")
    return (f"parametrization x\ninput {{ {inp} }}\nhidden {{ lr.adam = 1/fan_in\n lr.{family} = {value} }}\n"
            f"output {{ init.var = 1/fan_in^2\n {out} }}\n")


@pytest.mark.parametrize("family, mup_value, wrong_value", [
    ("lion", "1/fan_in", "1"),                   # entry-wise normalized: Adam's rule
    ("adafactor", "1/sqrt(fan_in)", "1/fan_in"), # relative to the RMS n^-1/2: Everett et al.
    ("muon", "1", "1/fan_in"),                    # spectrally normalized: Θ(1) on n x n (Adam's rule would freeze it)
])
def test_each_family_gets_its_own_hidden_rule(family, mup_value, wrong_value):
    good = check_spec(parse_and_resolve(hidden_lr(family, mup_value)), only=(family,))
    assert good.results[family].regime == "mup"
    bad = check_spec(parse_and_resolve(hidden_lr(family, wrong_value)), only=(family,))
    assert bad.results[family].regime != "mup"
    fixes = [f.fix.split("  ")[0] for f in diagnose(bad) if f.optimizer == family]
    assert fixes == [f"lr.{family} = {mup_value}"]


def test_muon_hybrid_keeps_classes_without_a_muon_rule_on_adamw():
    spec = load_spec(SPECS / "mup_muon.mup")
    ex = check_spec(spec).exponents
    assert ex["hidden"].family("muon") == "muon" and ex["output"].family("muon") == "adam"
    with pytest.raises(MupError) as err:
        parse_and_resolve("parametrization x\nbias { lr.muon = 1 }\n")
    assert "Muon orthogonalizes weight matrices" in err.value.diagnostics[0].hint


def test_check_imports_no_torch_and_no_optimizer_code():
    code = ("import sys; from mupspec.cli import main; main(['check', 'specs/mup_muon.mup', 'specs/mup_lion.mup', "
            "'specs/mup_adafactor.mup']); print(sorted(m for m in ('torch', 'sympy', 'mupspec.codegen') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- the symmetry, numerically


def _train(make_opt, mult: float, w0: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Train A·w on a fixed least-squares problem; return the effective weight."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, w0.shape[1], generator=gen, dtype=torch.float64), \
        torch.randn(16, w0.shape[0], generator=gen, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    opt = make_opt([w])
    for _ in range(steps):
        opt.zero_grad()
        ((x @ (mult * w).T - y) ** 2).mean().backward()
        opt.step()
    return (mult * w).detach()


def test_the_symmetry_trains_lion_adafactor_and_muon_identically():
    """convert's rules for the new families: mult·θ, init/θ, and LR / θ (Lion,
    Muon), LR unchanged (Adafactor, its eps2 floor / θ); decay as documented."""
    lion = load_module(load_spec(SPECS / "mup_lion.mup"), "mup_lion.mup").Lion
    theta, w0 = 3.0, torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cases = {
        "lion": lambda t: lambda p: lion(p, lr=1e-2 / t, weight_decay=0.1 * t),
        "adafactor": lambda t: lambda p: torch.optim.Adafactor(p, lr=1e-2, eps=(1e-30, 1e-3 / t), weight_decay=0.1),
        "muon": lambda t: lambda p: torch.optim.Muon(p, lr=1e-2 / t, weight_decay=0.1 * t),
    }
    for name, make in cases.items():
        one = _train(make(1.0), 1.0, w0)
        moved = _train(make(theta), theta, w0 / theta)
        tol = 1e-2 if name == "muon" else 1e-9  # Muon orthogonalizes in bfloat16
        assert torch.allclose(one, moved, rtol=tol, atol=tol), name
        if name == "adafactor":  # Adam's rule (LR / θ) is wrong for Adafactor
            wrong = _train(lambda p: torch.optim.Adafactor(p, lr=1e-2 / theta, eps=(1e-30, 1e-3 / theta),
                                                           weight_decay=0.1), theta, w0 / theta)
        else:  # and so is Adafactor's (LR kept) for Lion and Muon
            wrong = _train(make(1.0), theta, w0 / theta)
        assert not torch.allclose(one, wrong, rtol=tol, atol=tol), name


def test_codegen_builds_each_family_and_muon_returns_the_pair():
    def net(width):
        return torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                   torch.nn.ReLU(), torch.nn.Linear(width, 4))
    for name, family in BUNDLED.items():
        module = load_module(load_spec(SPECS / f"{name}.mup"), f"{name}.mup")
        model = net(128)
        plan = module.parametrize(model, net(32), optimizer=family)
        made = module.make_optimizer(model, plan, lr=1e-3)
        opts = made if isinstance(made, tuple) else (made,)
        model(torch.randn(4, 8)).sum().backward()
        for opt in opts:
            opt.step()
        groups = [g for opt in opts for g in opt.param_groups]
        by_role = {role: g["lr"] for g in groups for role in g["roles"]}
        if family == "muon":
            assert [type(o).__name__ for o in opts] == ["Muon", "AdamW"]
            assert opts[0].param_groups[0]["roles"] == ["hidden"] and math.isclose(by_role["hidden"], 1e-3)
        if family == "lion":
            assert math.isclose(by_role["hidden"], 1e-3 / 4)  # 1/fan_in, anchored at width 32
        if family == "adafactor":
            assert math.isclose(by_role["hidden"], 1e-3 / 2)  # 1/sqrt(fan_in)
            hidden = next(g for g in groups if "hidden" in g["roles"])
            assert math.isclose(hidden["eps"][1], 1e-3 / 2)  # eps2 moves with the init std

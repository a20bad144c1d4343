"""Equivalent specs train identically through their generated modules.

Tables 3, 8 and 9 of TP5 are one parametrization written three ways (Lemma
J.1). Anchored at a base width, their generated modules must give the same
loss trajectory: for SGD as bundled, for Adam once eps moves with θ (done by
mupspec.convert). A hypothesis test draws θ per class and seeds. Folding the
multipliers away (multipliers="fold") must not change training either."""

from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mupspec import ir
from mupspec.codegen import load_module
from mupspec.convert import THETA, Setting, convert
from mupspec.resolve import load_spec

D_IN, D_OUT, BATCH, STEPS = 10, 4, 16, 20
WIDTHS, BASE = (96, 192), (32, 64)  # unequal widths: fan_in and fan_out both grow


def mlp(widths):
    layers = [torch.nn.Linear(D_IN, widths[0])]
    for a, b in zip(widths, widths[1:]):
        layers += [torch.nn.Tanh(), torch.nn.Linear(a, b)]
    return torch.nn.Sequential(*layers, torch.nn.Tanh(), torch.nn.Linear(widths[-1], D_OUT))


def trajectory(module, optimizer, *, seed=0, lr=0.02, wd=0.0, multipliers="hooks", init="rescale"):
    torch.manual_seed(seed)
    model = mlp(WIDTHS)
    plan = module.parametrize(model, mlp(BASE), optimizer=optimizer, multipliers=multipliers, init=init,
                              generator=torch.Generator().manual_seed(seed))
    opt = module.make_optimizer(model, plan, lr=lr, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randn(BATCH, D_IN, generator=gen), torch.randn(BATCH, D_OUT, generator=gen)
    return _losses(model, opt, x, y)


def _losses(model, opt, x, y):
    """The loss at each of STEPS full-batch MSE training steps."""
    out = []
    for _ in range(STEPS):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return torch.tensor(out)


_modules = {}


def generated(name, spec=None, tmp=None):
    if name not in _modules:
        spec = spec or load_spec(f"specs/{name}.mup")
        _modules[name] = load_module(spec, f"{name}.mup", tmp)
    return _modules[name]


@pytest.mark.parametrize("init", ["rescale", "normal"])
def test_tables_3_8_9_train_identically_with_sgd(init):
    # no weight decay: the bundled tables keep wd = 1, which Lemma J.1 would move by θ²
    runs = {t: trajectory(generated(t), "sgd", lr=0.05, init=init)
            for t in ("mup_table8", "mup_table3", "mup_table9")}
    assert runs["mup_table8"][-1] < runs["mup_table8"][0]
    for name in ("mup_table3", "mup_table9"):
        torch.testing.assert_close(runs[name], runs["mup_table8"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("form", ["table3", "table9"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_converted_tables_train_identically_with_adam(form, optimizer):
    table8 = load_spec("specs/mup_table8.mup")
    moved = convert(table8, form=form).spec.model_copy(update={"name": f"table8_as_{form}"})
    kwargs = dict(lr=3e-3, wd=1e-2 if optimizer == "adamw" else 0.0)
    base = trajectory(generated("mup_table8"), optimizer, **kwargs)
    torch.testing.assert_close(trajectory(generated(moved.name, moved), optimizer, **kwargs), base,
                               rtol=1e-4, atol=1e-6)


def test_eps_must_move_with_theta():
    """The bundled Table 3 keeps eps fixed: with a large eps it trains
    differently from Table 8, and its eps-moved conversion does not."""
    table8 = generated("mup_table8")
    moved = convert(load_spec("specs/mup_table8.mup"), form="table3").spec.model_copy(update={"name": "t8_t3"})
    runs = [trajectory(m, "adam", lr=3e-3) for m in (table8, generated("mup_table3"), generated("t8_t3", moved))]
    big_eps = [_trajectory_eps(m, 1e-2) for m in (table8, generated("mup_table3"), generated("t8_t3"))]
    torch.testing.assert_close(runs[2], runs[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(big_eps[2], big_eps[0], rtol=1e-4, atol=1e-6)
    assert (big_eps[1] - big_eps[0]).abs().max() > 1e-3


def _trajectory_eps(module, eps):
    torch.manual_seed(0)
    model = mlp(WIDTHS)
    plan = module.parametrize(model, mlp(BASE), optimizer="adam")
    opt = module.make_optimizer(model, plan, lr=3e-3, eps=eps)
    x, y = torch.randn(BATCH, D_IN), torch.randn(BATCH, D_OUT)
    return _losses(model, opt, x, y)


@pytest.mark.parametrize("spec", ["mup_table8", "mup_table9"])
@pytest.mark.parametrize("optimizer,wd", [("sgd", 1e-3), ("adam", 1e-3), ("adamw", 1e-2)])
def test_folding_multipliers_changes_nothing(spec, optimizer, wd):
    lr = 0.05 if optimizer == "sgd" else 3e-3
    hooks = trajectory(generated(spec), optimizer, lr=lr, wd=wd)
    folded = trajectory(generated(spec), optimizer, lr=lr, wd=wd, multipliers="fold")
    torch.testing.assert_close(folded, hooks, rtol=1e-4, atol=1e-6)


# θ per class, a power of the fan that grows in that class
_FAN = {"input": "fan_out", "hidden": "fan_in", "output": "fan_in", "bias": "fan_out"}
_EXPONENTS = [Fraction(-1), Fraction(-1, 2), Fraction(1, 2), Fraction(1)]


def _power(fan: str, exponent: Fraction):
    value = ir.Num.of(abs(exponent))
    return ir.BinOp(op="^", left=ir.Sym(name=fan), right=ir.Neg(operand=value) if exponent < 0 else value)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exponents=st.fixed_dictionaries({k: st.sampled_from(_EXPONENTS) for k in _FAN}),
       seed=st.integers(0, 2**16), optimizer=st.sampled_from(["sgd", "adam"]))
def test_theta_transformed_specs_train_identically(exponents, seed, optimizer):
    table8 = load_spec("specs/mup_table8.mup")
    pins = tuple(Setting(kind, THETA, _power(_FAN[kind], e), f"{kind}.theta") for kind, e in exponents.items())
    moved = convert(table8, settings=pins).spec.model_copy(update={"name": "theta_moved"})
    module = load_module(moved, "theta_moved.mup")
    lr = 0.05 if optimizer == "sgd" else 3e-3
    torch.testing.assert_close(trajectory(module, optimizer, seed=seed, lr=lr),
                               trajectory(generated("mup_table8"), optimizer, seed=seed, lr=lr),
                               rtol=2e-4, atol=1e-6)

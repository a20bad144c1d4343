"""The module generated from specs/mup_table8.mup against microsoft/mup 1.0.0
on the reference GPT (mupspec/empirical/gpt.py): untied, tied with wte or
lm_head registered first (MuSharedReadout), only d_ff scaled, heads added at
fixed d_head, a raw position-embedding parameter; Adam, AdamW, SGD with
momentum and weight decay; 20 steps; widths 48 (not a power of two) and 128
over base 16. Each case states where mup is bitwise, where it is not (the
readout divides by width_mult where the hook multiplies by its inverse) and
where mup cannot express the case at all."""

import copy
import importlib.util
import sys
import types

import pytest
import torch

if importlib.util.find_spec("yaml") is None:
    sys.modules["yaml"] = types.ModuleType("yaml")  # mup imports PyYAML only for base-shape files
mup = pytest.importorskip("mup")

from mupspec.codegen import load_module  # noqa: E402
from mupspec.empirical.gpt import GPT, GPTConfig, batches, loss  # noqa: E402
from mupspec.resolve import load_spec, parse_and_resolve  # noqa: E402
from test_codegen_mup import COUPLED_WD  # noqa: E402  (Table 8 with mup's coupled weight decay)

STEPS, BATCH = 20, 8
OPTIMIZERS = {  # name: (our family, mup optimizer, lr, extra kwargs)
    "adam": ("adam", mup.MuAdam, 3e-3, {"weight_decay": 0.01}),
    "adamw": ("adamw", mup.MuAdamW, 3e-3, {"weight_decay": 0.1}),
    "sgd": ("sgd", mup.MuSGD, 0.05, {"weight_decay": 0.01, "momentum": 0.9}),
}
CASES = {  # name: (config of the target, config of the base)
    "untied": (dict(d_model=48, tie=None), dict(d_model=16, tie=None)),
    "tied_wte_first": (dict(d_model=128, tie="wte"), dict(d_model=16, tie="wte")),
    "tied_lm_head_first": (dict(d_model=48, tie="lm_head"), dict(d_model=16, tie="lm_head")),
    "heads_at_fixed_d_head": (dict(d_model=48, n_heads=6, d_head=8, tie=None), dict(d_model=16, n_heads=2, d_head=8,
                                                                                      tie=None)),
    "raw_position_parameter": (dict(d_model=128, position="parameter", tie=None, fused_qkv=False),
                               dict(d_model=16, position="parameter", tie=None, fused_qkv=False)),
}


@pytest.fixture(scope="module")
def coupled(tmp_path_factory):
    return load_module(parse_and_resolve(COUPLED_WD, "coupled.mup"), "coupled.mup", str(tmp_path_factory.mktemp("c")))


@pytest.fixture(scope="module")
def table8(tmp_path_factory):
    return load_module(load_spec("specs/mup_table8.mup"), "specs/mup_table8.mup", str(tmp_path_factory.mktemp("t8")))


def config(**kw):
    kw.setdefault("n_heads", 2)
    return GPTConfig(vocab=32, block_size=8, n_layers=2, attn_scale=0.125, **kw)


def with_mup_readout(model):
    """The same model, its readout swapped for mup's (weights kept):
    MuSharedReadout on the embedding's tensor when tied, MuReadout otherwise.
    The module keeps its place, so the registration order is unchanged."""
    model = copy.deepcopy(model)
    if model.cfg.tie is not None:
        model.lm_head = mup.MuSharedReadout(model.transformer.wte.weight, bias=False)
    else:
        weight = model.lm_head.weight.detach().clone()
        model.lm_head = mup.MuReadout(model.cfg.d_model, model.cfg.vocab, bias=False)
        with torch.no_grad():
            model.lm_head.weight.copy_(weight)
    return model


def build(case):
    target_kw, base_kw = CASES[case]
    torch.manual_seed(0)
    ours = GPT(config(**target_kw))
    reference = with_mup_readout(ours)
    base = GPT(config(**base_kw))
    mup.set_base_shapes(reference, with_mup_readout(base))
    return ours, reference, base


def width_mult(case):
    target_kw, base_kw = CASES[case]
    return target_kw["d_model"] / base_kw["d_model"]


def train(model, optimizer, cfg):
    out = []
    for x, y in batches(cfg, BATCH, STEPS, seed=1):
        value = loss(model, x, y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        out.append(value.item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_init_matches_mup(table8, case):
    ours, reference, base = build(case)
    table8.parametrize(ours, base)
    ref = dict(reference.named_parameters(remove_duplicate=False))
    for name, p in ours.named_parameters(remove_duplicate=False):
        expected = ref[name]
        if case.startswith("tied") and name in ("lm_head.weight", "transformer.wte.weight"):
            # mup departs here: set_base_shapes calls MuSharedReadout._rescale_parameters, which multiplies the
            # shared tensor by sqrt(width_mult) as if it held nn.Linear's 1/fan_in init; it holds the
            # embedding's N(0, 1), whose Table-8 variance (input: 1/fan_in, vocab fixed) does not change
            expected = expected / width_mult(case) ** 0.5
        torch.testing.assert_close(p, expected, rtol=1e-6, atol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("case", list(CASES))
def test_training_matches_mup(coupled, case, optimizer):
    family, mu_cls, lr, kwargs = OPTIMIZERS[optimizer]
    ours, reference, base = build(case)
    if case.startswith("tied"):
        with torch.no_grad():  # undo mup's departure on the shared tensor (test_init_matches_mup)
            reference.transformer.wte.weight.copy_(ours.transformer.wte.weight)
    plan = coupled.parametrize(ours, base, optimizer=family)
    got = train(ours, coupled.make_optimizer(ours, plan, lr=lr, **kwargs), ours.cfg)
    expected = train(reference, mu_cls(reference.parameters(), lr=lr, **kwargs), reference.cfg)
    assert got[-1] < got[0]  # it learns
    # mup divides the readout input and LRs by width_mult, the generated module multiplies by the inverse:
    # bitwise when width_mult is a power of two (128/16), equal up to rounding at 48/16 = 3
    delta = float((got - expected).abs().max())
    print(f"{case} {optimizer}: width_mult {width_mult(case):g}, max |dloss| over {STEPS} steps = {delta:.3g}")
    if width_mult(case) == 8:
        assert delta == 0.0
    assert delta <= 1e-5 * float(expected.abs().max())


def test_only_d_ff_scaled_cannot_be_expressed_in_mup(table8):
    """d_ff grows, d_model stays: the MLP's c_proj maps a growing dimension to
    a fixed one (an output layer in Table 8's sense). mup asks for a MuReadout
    there (set_base_shapes asserts); the generated module gives it the output
    rules: multiplier base/fan_in, Adam LR 1, c_fc the input rules."""
    torch.manual_seed(0)
    target, base = GPT(config(d_model=16, d_ff=96, tie=None)), GPT(config(d_model=16, d_ff=32, tie=None))
    with pytest.raises(AssertionError, match="has infinite fan-in and finite fan-out dimensions but is not type"):
        mup.set_base_shapes(with_mup_readout(target), with_mup_readout(base))
    plan = table8.parametrize(target, base)
    proj, fc = plan["transformer.h.0.mlp.c_proj.weight"], plan["transformer.h.0.mlp.c_fc.weight"]
    assert (proj.role, proj.mult, proj.lr_factor) == ("output", 32 / 96, 1.0)
    assert (fc.role, fc.mult, fc.lr_factor) == ("input", 1.0, 1.0)
    assert plan["lm_head.weight"].role == "scalar" and plan["transformer.h.0.attn.c_attn.weight"].role == "scalar"
    x, y = batches(target.cfg, BATCH, 1)[0]
    assert torch.isfinite(loss(target, x, y))

"""A real client: Hugging Face transformers' GPT2LMHeadModel, built from a
GPT2Config (nothing downloaded), parametrized by the Table-8 spec in one
call, against the same model set up by hand as microsoft/mup prescribes:
MuSharedReadout on the tied lm_head (readout multiplier 1/width_mult), the
matrix-like weights re-initialized with mup.init's constant-std rule
(std 0.02 / sqrt(width_mult): HF's init is a constant std, not PyTorch's
1/fan_in), vector-like ones kept, MuAdam's LR groups. Widths grow by adding
heads at a fixed d_head of 16, so GPT-2's 1/sqrt(d_head) attention is
already what muP asks at every width."""

import importlib.util
import sys
import types

import pytest
import torch

if importlib.util.find_spec("yaml") is None:
    sys.modules["yaml"] = types.ModuleType("yaml")
mup = pytest.importorskip("mup")
transformers = pytest.importorskip("transformers")

from mupspec.codegen import load_module  # noqa: E402
from mupspec.resolve import load_spec  # noqa: E402

pytestmark = pytest.mark.slow  # importing transformers takes 5-15 s on the shared machine


def gpt2(n_head, seed=0):
    config = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=16 * n_head, n_layer=2, n_head=n_head,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                     eos_token_id=None)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config)


def by_hand(model, base):
    """microsoft/mup's recipe for this model, with mup's own tools."""
    model.lm_head = mup.MuSharedReadout(model.transformer.wte.weight, bias=False)
    base.lm_head = mup.MuSharedReadout(base.transformer.wte.weight, bias=False)
    # rescale_params=False: its MuReadout rescale assumes nn.Linear's init, not HF's N(0, 0.02) embedding
    mup.set_base_shapes(model, base, rescale_params=False)
    with torch.no_grad():
        for p in model.parameters():
            if p.infshape.ninf() == 2:  # mup.init's constant-std rule: std / sqrt(width_mult), as a rescale
                p.mul_(p.infshape.width_mult() ** -0.5)
    return model


def losses(model, optimizer, steps=10):
    idx = torch.randint(0, 32, (8, 8), generator=torch.Generator().manual_seed(1))  # one batch: the loss must fall
    out = []
    for _ in range(steps):
        loss = model(input_ids=idx, labels=idx).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return torch.tensor(out)


def test_hf_gpt2_is_parametrized_like_mup_by_hand(tmp_path):
    table8 = load_module(load_spec("specs/mup_table8.mup"), "specs/mup_table8.mup", str(tmp_path))
    ours, base = gpt2(8), gpt2(2)
    hand = by_hand(gpt2(8), gpt2(2))
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    plan = table8.parametrize(ours, base)
    head = plan["lm_head.weight"]
    assert (head.role, head.tied_to, head.mult) == ("output", "transformer.wte.weight", 0.25)
    assert plan["transformer.h.0.attn.c_attn.weight"].init_law == "constant"
    assert plan["transformer.h.0.mlp.c_proj.weight"].init_law == "constant"  # 0.02/sqrt(2 n_layer) at both
    reference = dict(hand.named_parameters())
    changed = 0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, reference[name], rtol=1e-6, atol=0, msg=name)
        changed += not torch.equal(p, before[name])
    assert changed == 8  # the 2-D Conv1D weights of both blocks (HF's init left alone before)
    idx = torch.randint(0, 32, (2, 8))
    torch.testing.assert_close(ours(input_ids=idx).logits, hand(input_ids=idx).logits, rtol=1e-5, atol=1e-6)
    got = losses(ours, table8.make_optimizer(ours, plan, lr=3e-3))
    expected = losses(hand, mup.MuAdam(hand.parameters(), lr=3e-3))
    assert got[-1] < got[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)  # measured: bitwise (width_mult 4)
    assert torch.equal(got, expected)

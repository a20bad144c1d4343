"""The reference GPT (mupspec/empirical/gpt.py): names and ties as nanoGPT
and HF GPT-2 have them, every option builds and trains."""

import pytest
import torch

from mupspec.empirical.gpt import GPT, GPTConfig, batches, loss


@pytest.mark.parametrize("tie, first", [(None, "transformer.wte.weight"), ("wte", "transformer.wte.weight"),
                                        ("lm_head", "lm_head.weight")])
def test_tie_registration_order(tie, first):
    model = GPT(GPTConfig(tie=tie))
    names = [n for n, _ in model.named_parameters()]
    all_names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert names[0] == first and "transformer.wte.weight" in all_names and "lm_head.weight" in all_names
    assert (model.lm_head.weight is model.transformer.wte.weight) == (tie is not None)
    assert len(all_names) - len(names) == (tie is not None)


def test_options_shapes_and_explicit_attention_scale():
    cfg = GPTConfig(d_model=48, n_heads=3, d_head=8, d_ff=100, fused_qkv=False, position="parameter",
                    attn_scale=1 / 8, tie=None)
    model = GPT(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["wpe"] == (32, 48) and shapes["transformer.h.0.attn.q_proj.weight"] == (24, 48)
    assert shapes["transformer.h.1.mlp.c_fc.weight"] == (100, 48) and model.transformer.h[0].attn.scale == 1 / 8
    x, y = batches(cfg, 4, 1)[0]
    assert model(x).shape == (4, 32, 64) and torch.isfinite(loss(model, x, y))


def test_gpt2_init_and_training_lowers_the_loss():
    torch.manual_seed(0)
    cfg = GPTConfig(init_std=0.02, n_layers=2)
    model = GPT(cfg)
    assert model.transformer.h[0].mlp.c_proj.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for x, y in batches(cfg, 16, 40):
        losses.append(loss(model, x, y))
        opt.zero_grad()
        losses[-1].backward()
        opt.step()
    assert losses[-1].item() < losses[0].item() - 0.3

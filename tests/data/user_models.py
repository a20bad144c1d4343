"""Models as a user writes them, for the coordinate check, audit and infer
tests (the FILE.py:FACTORY contract: FACTORY(width) -> nn.Module).

- `mlp(width)`: a plain torch MLP taking float vectors (default input).
- `gpt(width)` / `gpt_untied(width)`: a small GPT (token + position
  embeddings, pre-LayerNorm blocks, F.scaled_dot_product_attention, 4x MLP)
  with its readout tied to the token embedding (or not); `tokens()` is its
  example input. Attention scale 1/sqrt(d_head), PyTorch's default init:
  standard parametrization until a spec parametrizes it.
- `hand_attention_gpt(width)` / `hand_attention_gpt_mup(width)`: the same
  GPT with attention written by hand, nanoGPT's way (q @ k^T * scale, a
  causal masked_fill with -inf, F.softmax), scale 1/sqrt(d_head) or 1/d_head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, SEQ, HEADS, LAYERS = 64, 8, 4, 2


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4, bias=False))


class Attention(nn.Module):
    def __init__(self, width: int, logit_power: float = 0.5):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.scale = (width // HEADS) ** -logit_power

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class SplitAttention(nn.Module):
    """Llama-style separate q_proj, k_proj, v_proj (F.scaled_dot_product_attention)."""

    def __init__(self, width: int, logit_power: float = 0.5):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.proj = nn.Linear(width, width, bias=False)
        self.scale = (width // HEADS) ** -logit_power

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z(x).view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class HandAttention(Attention):
    """Attention without F.scaled_dot_product_attention (nanoGPT's slow path)."""

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, logit_power: float, attention: type = Attention):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = attention(width, logit_power)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, width: int, tied: bool = True, logit_power: float = 0.5, attention: type = Attention):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, width), nn.Embedding(SEQ, width)
        self.blocks = nn.ModuleList(Block(width, logit_power, attention) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.readout(x)

    def readout(self, x):
        return self.lm_head(self.ln_f(x))


class HandMupGPT(GPT):
    """μP written by hand, the way the practitioner's guide to μP and
    EleutherAI's nanoGPT-mup do it: std 0.02 / sqrt(width_mult) for hidden
    weights, 0.02 for the (tied) embedding, zero biases, the readout's input
    divided by width_mult, attention 1/d_head, hidden LR / width_mult
    (`hand_mup_adamw`)."""

    def __init__(self, width: int, base: int = 64, attention: type = Attention):
        super().__init__(width, tied=True, logit_power=1.0, attention=attention)
        self.width_mult = width / base
        for name, p in self.named_parameters():
            if name.endswith(".bias") and "ln" not in name:
                nn.init.zeros_(p)
            elif p.dim() == 2:
                embedding = name.startswith(("wte", "wpe"))
                nn.init.normal_(p, std=0.02 if embedding else 0.02 / self.width_mult ** 0.5)

    def readout(self, x):
        return self.lm_head(self.ln_f(x) / self.width_mult)


def hand_mup_gpt(width: int) -> nn.Module:
    return HandMupGPT(width)


def hand_mup_gpt_zero_query(width: int) -> nn.Module:
    """The hand-written μP GPT with separate q/k/v projections and the query
    started at zero (as Tensor Programs V, App. D.2, allows): the query's
    init rule differs from the key's."""
    model = HandMupGPT(width, attention=SplitAttention)
    for block in model.blocks:
        nn.init.zeros_(block.attn.q_proj.weight)
    return model


def hand_mup_adamw(model: HandMupGPT) -> torch.optim.Optimizer:
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("wte", "wpe"))]
    ids = {id(p) for p in hidden}
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and id(p) not in ids]
    rest = [p for p in model.parameters() if p.dim() < 2]
    lr = 1e-3
    return torch.optim.AdamW([{"params": hidden, "lr": lr / model.width_mult, "weight_decay": 0.1},
                              {"params": decay, "lr": lr, "weight_decay": 0.1},
                              {"params": rest, "lr": lr, "weight_decay": 0.0}], lr=lr)


def adamw_one_group(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3)


def hf_gpt2(width: int) -> nn.Module:
    """Hugging Face GPT-2 from a config (nothing downloaded), default init."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=width, n_layer=LAYERS, n_head=HEADS,
                        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    return GPT2LMHeadModel(config)


def gpt(width: int) -> nn.Module:
    return GPT(width, tied=True)


def gpt_untied(width: int) -> nn.Module:
    return GPT(width, tied=False)


def gpt_mup_attention(width: int) -> nn.Module:
    """Untied, attention logits scaled 1/d_head (μP's rule)."""
    return GPT(width, tied=False, logit_power=1.0)


def gpt_tied_mup_attention(width: int) -> nn.Module:
    """Readout tied to the token embedding, attention logits scaled 1/d_head."""
    return GPT(width, tied=True, logit_power=1.0)


def hand_attention_gpt(width: int) -> nn.Module:
    """Untied, attention by hand with logits scaled 1/sqrt(d_head) (SP's rule)."""
    return GPT(width, tied=False, attention=HandAttention)


def hand_attention_gpt_mup(width: int) -> nn.Module:
    """Untied, attention by hand with logits scaled 1/d_head (μP's rule)."""
    return GPT(width, tied=False, logit_power=1.0, attention=HandAttention)


def tokens() -> torch.Tensor:
    return torch.randint(VOCAB, (4, SEQ), generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- broken factories (error tests)


def not_a_module(width: int):
    return [width]


def fails_at_large_width(width: int) -> nn.Module:
    if width > 64:
        raise RuntimeError("out of memory (pretend)")
    return mlp(width)


class FusedAttention(Attention):
    """nanoGPT's attention: one `c_attn` Linear producing q | k | v."""

    def __init__(self, width: int, logit_power: float = 0.5):
        super().__init__(width, logit_power)
        self.c_attn = self.qkv
        del self.qkv

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in self.c_attn(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


def hand_mup_gpt_zero_query_fused(width: int) -> nn.Module:
    """The zero-query hand-written μP GPT with nanoGPT's fused c_attn: the
    query's rows of c_attn start at zero, the key's and value's do not."""
    model = HandMupGPT(width, attention=FusedAttention)
    for block in model.blocks:
        nn.init.zeros_(block.attn.c_attn.weight[:width])
    return model


def hand_mup_gpt_fused(width: int) -> nn.Module:
    """The hand-written μP GPT with nanoGPT's fused c_attn, every part alike."""
    return HandMupGPT(width, attention=FusedAttention)

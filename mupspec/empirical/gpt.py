"""A reference GPT, written the way nanoGPT and Hugging Face GPT-2 write it,
small enough to train on two CPU cores.

Token + position embedding (an `nn.Embedding`, or a raw `(T, d)`
`nn.Parameter` as some codebases keep it), pre-norm blocks of causal
self-attention and a GELU MLP, a final LayerNorm and a readout. Parameter
names follow nanoGPT (`transformer.wte`, `transformer.h.0.attn.c_attn`,
`mlp.c_fc`, `mlp.c_proj`, `lm_head`), so the generated module's default
name patterns and the tests see what a user's model looks like. Options:
- `fused_qkv`: one `c_attn` Linear producing q, k, v (nanoGPT, GPT-2), or
  separate `q_proj`, `k_proj`, `v_proj` (Llama style);
- `n_heads`, `d_head` (default d_model / n_heads), `d_ff` (default 4 d_model):
  each can scale on its own;
- `tie`: None (untied readout), "wte" (tied, the embedding registered first,
  as nanoGPT and HF do) or "lm_head" (tied, the readout registered first);
- `attn_scale`: the logit scale passed explicitly to
  `F.scaled_dot_product_attention(scale=...)` (default 1/sqrt(d_head));
- `init_std`: None keeps PyTorch's default init (what microsoft/mup assumes);
  a number draws every weight N(0, init_std^2) and the residual projections
  N(0, init_std^2 / (2 n_layers)), biases zero, as nanoGPT and HF GPT-2 do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TIES = (None, "wte", "lm_head")


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 64
    block_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_head: int | None = None
    d_ff: int | None = None
    fused_qkv: bool = True
    tie: str | None = "wte"
    position: str = "embedding"  # "embedding" (nn.Embedding) | "parameter" (a raw (T, d) nn.Parameter)
    bias: bool = True
    attn_scale: float | None = None
    init_std: float | None = None

    def __post_init__(self):
        if self.tie not in TIES:
            raise ValueError(f"tie must be one of {TIES}, not {self.tie!r}")
        if self.position not in ("embedding", "parameter"):
            raise ValueError(f"position must be 'embedding' or 'parameter', not {self.position!r}")
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}: pass d_head")

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else 1.0 / math.sqrt(self.head_dim)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        inner = cfg.n_heads * cfg.head_dim
        if cfg.fused_qkv:
            self.c_attn = nn.Linear(cfg.d_model, 3 * inner, bias=cfg.bias)
        else:
            self.q_proj = nn.Linear(cfg.d_model, inner, bias=cfg.bias)
            self.k_proj = nn.Linear(cfg.d_model, inner, bias=cfg.bias)
            self.v_proj = nn.Linear(cfg.d_model, inner, bias=cfg.bias)
        self.c_proj = nn.Linear(inner, cfg.d_model, bias=cfg.bias)
        self.n_heads, self.d_head, self.scale = cfg.n_heads, cfg.head_dim, cfg.scale

    def qkv(self, x):
        if hasattr(self, "c_attn"):
            return self.c_attn(x).chunk(3, dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (z.view(b, t, self.n_heads, self.d_head).transpose(1, 2) for z in self.qkv(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.tie == "lm_head":  # registered before the embedding: named_parameters() yields lm_head.weight
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab, cfg.d_model),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers)),
            ln_f=nn.LayerNorm(cfg.d_model, bias=cfg.bias),
        ))
        if cfg.position == "embedding":
            self.transformer["wpe"] = nn.Embedding(cfg.block_size, cfg.d_model)
        else:
            self.wpe = nn.Parameter(torch.randn(cfg.block_size, cfg.d_model))  # N(0, 1), as nn.Embedding draws
        if cfg.tie != "lm_head":
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        if cfg.init_std is not None:
            self._init_like_gpt2(cfg.init_std)
        if cfg.tie is not None:
            self.lm_head.weight = self.transformer.wte.weight  # one Parameter, seen under both names

    @torch.no_grad()
    def _init_like_gpt2(self, std):
        for name, p in self.named_parameters():
            if p.dim() == 1:
                p.zero_() if name.endswith("bias") else p.fill_(1.0)
            elif name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by depth
                p.normal_(0.0, std / math.sqrt(2 * self.cfg.n_layers))
            else:
                p.normal_(0.0, std)

    def position(self, t):
        if self.cfg.position == "embedding":
            return self.transformer.wpe(torch.arange(t, device=self.transformer.wte.weight.device))
        return self.wpe[:t]

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.position(idx.shape[1])
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def loss(model, idx, targets):
    logits = model(idx)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def batches(cfg: GPTConfig, batch: int, steps: int, seed: int = 0):
    """`steps` (inputs, targets) pairs of a learnable next-token task: each
    sequence walks tok -> (a * tok + c) mod vocab with its own random c and
    10% random tokens; deterministic in `seed`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        start = torch.randint(cfg.vocab, (batch, 1), generator=g)
        step = torch.randint(1, cfg.vocab, (batch, 1), generator=g)
        seq = (start + step * torch.arange(cfg.block_size + 1)) % cfg.vocab
        noise = torch.rand(seq.shape, generator=g) < 0.1
        seq = torch.where(noise, torch.randint(cfg.vocab, seq.shape, generator=g), seq)
        out.append((seq[:, :-1], seq[:, 1:]))
    return out

"""Text for the Transformer study: real English prose available offline on
every Python, as byte-level tokens, with a deterministic train/validation split.

The default corpus is CPython's own `pydoc_data.topics` (the text `help()`
prints for keywords and topics: about 465 KB of English prose from the Python
documentation, Python Software Foundation License). It ships with every
CPython, so nothing is downloaded at run time. `--text FILE` takes any file.

Tokens are bytes (vocabulary 256, no tokenizer to ship). Split: the last
`val_fraction` of the bytes is validation, the rest training (contiguous, so
no validation window overlaps a training one). Training batches are random
windows drawn from a seeded generator, the same for every replica of a seed;
validation uses a fixed set of evenly spaced windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mupspec.errors import Diagnostic, MupError

VOCAB = 256


@dataclass(frozen=True)
class TextConfig:
    path: str | None = None       # None: CPython's pydoc_data.topics
    val_fraction: float = 0.1
    context: int = 64             # tokens per window (the model predicts each next byte)


@dataclass(frozen=True)
class TextData:
    train: torch.Tensor           # uint8 token stream
    val: torch.Tensor
    source: str                   # where the text came from, for the records
    context: int


def default_corpus() -> bytes:
    """CPython's pydoc topics, joined in key order (deterministic)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def read_corpus(path: str | None) -> tuple[bytes, str]:
    if path is None:
        return default_corpus(), "pydoc_data.topics (CPython documentation, PSF License)"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MupError(Diagnostic(f"cannot read text file {path}: {e.strerror or e}",
                                  hint="pass --text a readable text file, or leave it out for the "
                                       "built-in corpus")) from None
    if not data:
        raise MupError(Diagnostic(f"text file {path} is empty", hint="pass --text a file with some text in it"))
    return data, str(path)


def load_text(cfg: TextConfig) -> TextData:
    """Read, tokenize (bytes) and split; a clear error if the split is too small for the context."""
    raw, source = read_corpus(cfg.path)
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    n_val = int(len(tokens) * cfg.val_fraction)
    train, val = tokens[:len(tokens) - n_val], tokens[len(tokens) - n_val:]
    # a window is context + 1 tokens (inputs and the next-token targets)
    need = cfg.context + 1
    if len(train) < need or len(val) < need:
        raise MupError(Diagnostic(
            f"{source}: {len(tokens)} bytes give a training split of {len(train)} and a validation split of "
            f"{len(val)} bytes, fewer than a context of {cfg.context} needs ({need} each)",
            hint=f"use a longer text (at least {int(need / min(cfg.val_fraction, 1 - cfg.val_fraction)) + 1} bytes) "
                 "or a shorter context"))
    return TextData(train=train, val=val, source=source, context=cfg.context)


def windows(stream: torch.Tensor, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (*starts.shape, context) int64: next-byte prediction."""
    idx = starts.unsqueeze(-1) + torch.arange(context + 1, device=starts.device)
    w = stream[idx].long()
    return w[..., :-1], w[..., 1:]


def train_starts(data: TextData, steps: int, batch: int, seed: int) -> torch.Tensor:
    """(steps, batch) window starts: the seed's batch order (shared by its replicas)."""
    gen = torch.Generator().manual_seed(2_000_003 + seed)
    return torch.randint(len(data.train) - data.context, (steps, batch), generator=gen)


def even_starts(stream: torch.Tensor, context: int, count: int) -> torch.Tensor:
    """`count` evenly spaced window starts over a split (fewer if it is short):
    the fixed windows on which train and validation loss are evaluated."""
    last = len(stream) - context - 1
    count = max(1, min(count, last + 1))
    return torch.linspace(0, last, count).round().long().unique().to(stream.device)

"""Matmul kernels of the batched engine: (R, B, k) x (R, k, m) products, one
per replica, through torch.bmm for small layers and torch's oneDNN linear for
large ones, and the allocator setting the oneDNN weight gradients need; and
the split of a batched engine's replicas into single-threaded shards that
both engines (spiral and language model) train side by side."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch


def _onednn_linear():
    """torch's oneDNN linear kernel (x @ W.T), or None where this build lacks it.
    On the AMD CPUs measured here it runs float32 32 x n by n x n products about
    2x faster than the MKL sgemm behind torch.bmm (MKL takes a slower code path
    on non-Intel CPUs); benchmarks/bench_engine.py prints both rates."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        # a private op: check once that it exists here and computes x @ W.T
        x, w = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(4, 3)
        return op if torch.equal(op(x, w, None, "none", [], ""), x @ w.T) else None
    except (AttributeError, RuntimeError, TypeError):
        return None


ONEDNN_LINEAR = _onednn_linear()


@functools.cache
def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks of up to 32 MB in the process. The oneDNN
    weight gradients are fresh fan_in x fan_out tensors every step; by default
    glibc returns such blocks to the OS when they are freed and page-faults them
    back in at the next allocation, which made that matmul 2.3x slower than
    torch.bmm into a fixed buffer, instead of 2.3x faster (width 1024, measured).
    Process-wide, once; a no-op where the C library has no mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20)    # M_MMAP_THRESHOLD: serve blocks up to 32 MB from the heap
        libc.mallopt(-1, 1 << 30)     # M_TRIM_THRESHOLD: do not hand the heap's top back to the OS
    except (OSError, AttributeError, TypeError):
        pass


# Layers with at least this many weights per replica go through one oneDNN call
# per replica (forward, input and weight gradient); smaller ones through one torch.bmm,
# where per-call overhead would dominate (crossover measured between 128^2 and 256^2).
ONEDNN_MIN_WEIGHTS = 256 * 256


def onednn_sized(fan_in: int, fan_out: int) -> bool:
    return ONEDNN_LINEAR is not None and fan_in * fan_out >= ONEDNN_MIN_WEIGHTS


def batched_matmul(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w for every replica: (R, B, k) x (R, k, m) -> (R, B, m)."""
    if not onednn_sized(w.shape[1], w.shape[2]):
        return torch.bmm(x, w, out=out)
    out = x.new_empty(x.shape[0], x.shape[1], w.shape[2]) if out is None else out
    for r, product in enumerate(per_replica_matmul(x, w)):
        out[r].copy_(product)
    return out


def per_replica_matmul(x: torch.Tensor, w: torch.Tensor):
    """x[r] @ w[r] through oneDNN, one fresh tensor per replica (a generator)."""
    return (ONEDNN_LINEAR(x[r], w[r].t(), None, "none", [], "") for r in range(x.shape[0]))


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mult: float,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """b + mult * x @ w for every replica (b: (R, 1, m))."""
    if not onednn_sized(w.shape[1], w.shape[2]):
        return torch.baddbmm(b, x, w, alpha=mult, out=out)
    product = batched_matmul(x, w, out=out)
    return torch.add(b, product, alpha=mult, out=product)


def in_shards(train: Callable, pairs: list, shards: int, on_step: Callable[[int], None] | None = None) -> list:
    """train(some_pairs, on_step) -> one result per pair, run as `shards`
    single-threaded shards side by side (shard k takes pairs k, k+shards, ...);
    the results in the order of `pairs`, on_step(t) once every shard has
    finished step t. On a few cores this beats one computation on all the
    threads, whose small operations split badly across them."""
    shards = max(1, min(shards, len(pairs)))
    if shards == 1:
        return train(pairs, on_step)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(shards) as pool:
            report = _when_all(on_step, shards)
            jobs = [pool.submit(train, pairs[k::shards], report) for k in range(shards)]
            parts = [job.result() for job in jobs]
    finally:
        torch.set_num_threads(threads)
    return [parts[i % shards][i // shards] for i in range(len(pairs))]


def _when_all(on_step: Callable[[int], None] | None, shards: int) -> Callable[[int], None] | None:
    """on_step(t) once every shard has finished step t."""
    if on_step is None:
        return None
    lock, finished = threading.Lock(), Counter()

    def report(t: int) -> None:
        with lock:
            finished[t] += 1
            last = finished[t] == shards
        if last:
            on_step(t)
    return report

"""Training-step time of the reference GPT (mupspec/empirical/gpt.py, tied
readout registered wte-first, the nanoGPT way) parametrized by the module
`mupspec codegen` generates from specs/mup_table8.mup, relative to the same
GPT in plain PyTorch with the same optimizer groups (same parameters in
each, same LRs: what any muP setup needs), and to an identical copy of the
plain model (the noise floor).

All variants run interleaved in one process: each round times a block of
steps of every variant, in a fresh random order. Time is the process's CPU
time (one torch thread), which a busy shared machine disturbs far less than
wall time. A ratio is the median over rounds of that round's ratio (paired,
so slow drift cancels). Denormal floats are flushed to zero by default (on
CPU a step that meets subnormal numbers is slower for reasons unrelated to
the code compared; --keep-denormals to keep them). Target: generated <=
1.03x plain with the same groups.

    .venv/bin/python benchmarks/bench_codegen.py [--rounds 20] [--steps 3] [--widths 256 1024]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mupspec.codegen import load_module  # noqa: E402
from mupspec.empirical.gpt import GPT, GPTConfig, batches, loss  # noqa: E402
from mupspec.resolve import load_spec  # noqa: E402

BASE, BATCH = 64, 8
CONFIG = dict(vocab=256, block_size=64, n_layers=2, tie="wte")


def gpt(d_model):
    torch.manual_seed(0)
    return GPT(GPTConfig(d_model=d_model, n_heads=d_model // 64, **CONFIG))


def same_groups(model, groups_of_generated, generated_model):
    """The plain model's parameters in the generated optimizer's groups, with the same LRs."""
    names = {id(p): n for n, p in generated_model.named_parameters()}
    params = dict(model.named_parameters())
    return [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[names[id(p)]] for p in g["params"]]}
            for g in groups_of_generated]


def variants(width, generated):
    model = gpt(width)
    plan = generated.parametrize(model, gpt(BASE), optimizer="adam")
    opt = generated.make_optimizer(model, plan, lr=1e-3)
    out = {"generated (hooks)": (model, opt)}
    for name in ("plain, same groups", "plain, same groups (copy)"):  # the second is the noise floor
        plain = gpt(width)
        groups = same_groups(plain, generated.param_groups(model, plan, lr=1e-3), model)
        out[name] = (plain, torch.optim.Adam(groups, lr=1e-3))
    return out, len(opt.param_groups)


def block_time(model, opt, x, y, steps):
    start = time.process_time()
    for _ in range(steps):
        value = loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return (time.process_time() - start) / steps


def bench(width, generated, rounds, steps):
    runs, n_groups = variants(width, generated)
    x, y = batches(GPTConfig(d_model=width, **CONFIG), BATCH, 1)[0]
    times = {name: [] for name in runs}
    for model, opt in runs.values():  # warm-up
        block_time(model, opt, x, y, steps)
    order = list(runs)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            times[name].append(block_time(*runs[name], x, y, steps))
    return times, n_groups


def paired_ratio(times, name, reference):
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: steadiest on a shared machine)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="do not flush subnormal floats to zero (see the module docstring)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    flushed = not args.keep_denormals and torch.set_flush_denormal(True)
    generated = load_module(load_spec(ROOT / "specs/mup_table8.mup"), "specs/mup_table8.mup")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; reference GPT ({CONFIG['n_layers']} layers, "
          f"d_head 64, vocab {CONFIG['vocab']}, T {CONFIG['block_size']}, tied), batch {BATCH}, Adam; "
          f"{args.rounds} interleaved rounds x {args.steps} steps, CPU time; "
          f"denormals {'flushed' if flushed else 'kept'}")
    for width in args.widths:
        times, n_groups = bench(width, generated, args.rounds, args.steps)
        print(f"\nd_model {width} (base {BASE}), {n_groups} optimizer groups")
        print(f"  {'variant':<26} {'CPU ms/step':>11} {'vs plain':>9}")
        for name, t in times.items():
            print(f"  {name:<26} {statistics.median(t) * 1e3:11.2f} "
                  f"{paired_ratio(times, name, 'plain, same groups'):8.3f}x", flush=True)
        print(f"  noise floor (copy vs plain): {paired_ratio(times, 'plain, same groups (copy)', 'plain, same groups'):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

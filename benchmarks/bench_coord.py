"""Cost of the coordinate check of any model (mupspec.empirical.coord).

1. Overhead: the coordinate check's training steps (steps + 1 forwards,
   `steps` backward + optimizer steps) with the recorder's hooks, against
   the same steps without hooks, on a small GPT and on an MLP, measuring:
   activations only (act: every site's RMS, attention logits), + the change
   since init (delta), + the own-update term (own), + the relative update
   (upd, = everything). Targets: everything <= 1.5x, activations only <= 1.1x.
2. Side by side with microsoft/mup's get_coord_data (mup 1.0.0, output l1
   of every module, its own cross-entropy loop): the same model
   (parametrized by specs/mup_table8.mup's generated module), widths, steps
   and seeds, Adam, float32, end to end (building, training, recording;
   ours also fits and compares). The same steps: mup's nsteps=3 records at
   t = 1, 2, 3, each before that step's update, i.e. after 0, 1 and 2
   updates (its third update is never measured); ours with steps=2 records
   after 0, 1 and 2 updates. Target: at least as fast.
3. `mupspec infer` on a 4-width GPT, the command end to end. Target: < 30 s.

Part 2 needs pandas: microsoft/mup's coord_check imports it (mup is installed
with --no-deps); `.venv/bin/pip install pandas` adds it (without it, part 2 is
skipped with a note).

Timing: process CPU time, one torch thread, denormals flushed; the variants
of a comparison run interleaved, in a fresh random order each round, and a
ratio is the median over rounds of that round's paired ratio (a shared,
loaded machine disturbs that far less than wall time).

    .venv/bin/python benchmarks/bench_coord.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data"))

import user_models  # noqa: E402
from mupspec.codegen import load_module  # noqa: E402
from mupspec.empirical import coord  # noqa: E402
from mupspec.resolve import load_spec  # noqa: E402

SPEC = load_spec(ROOT / "specs" / "mup_table8.mup")
P = load_module(SPEC, "mup_table8.mup")
STEPS = 3
LEVELS = {"act": ("act",), "act+delta": ("act", "delta"), "act+delta+own": ("act", "delta", "own"),
          "all": coord.QUANTITIES}


def cpu() -> float:
    return time.process_time()


# ---------------------------------------------------------------- 1. overhead


def gpt_run(width=256, batch=8, seq=64):
    torch.manual_seed(0)
    user_models.SEQ = seq  # the position table and tokens() follow SEQ
    model = user_models.gpt_mup_attention(width)
    plan = P.parametrize(model, P.base_shapes(user_models.gpt_mup_attention(64)), optimizer="adam",
                         widths={"n": width}, base_widths={"n": 64})
    idx = torch.randint(user_models.VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0))
    return model, plan, (idx,)


def mlp_run(width=1024, batch=256):
    torch.manual_seed(0)
    model = user_models.mlp(width)
    plan = P.parametrize(model, P.base_shapes(user_models.mlp(64)), optimizer="adam", widths={"n": width},
                         base_widths={"n": 64})
    return model, plan, (torch.randn(batch, 16),)


def sites_of(model, plan):
    roles = {r.name: r.role for r in plan}
    return coord.module_sites(model, roles)


def plain_steps(model, opt, inputs, steps):
    cotangent = None
    for step in range(steps + 1):
        out = model(*inputs)
        if step == steps:
            break
        if cotangent is None:
            cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out * cotangent).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def overhead(name, make, rounds):
    model, plan, inputs = make()
    # the optimizer coord_check builds (fused Adam): the same training steps with and without hooks
    opt = coord._fast(lambda **extra: P.make_optimizer(model, plan, lr=1e-5, **extra), "adam")
    sites = sites_of(model, plan)
    run = coord.Run(model, opt, inputs, {}, None, {}, sites)
    variants = {"no hooks": lambda: plain_steps(model, opt, inputs, STEPS)}
    for level, quantities in LEVELS.items():
        variants[level] = lambda q=quantities: coord.train_and_record(run, STEPS, q, seed=0)
    for fn in variants.values():  # warm up
        fn()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for k in order:
            t = cpu()
            variants[k]()
            times[k].append(cpu() - t)
    base = times["no hooks"]
    print(f"\n{name}: {len(sites)} parametrized modules, {STEPS} steps "
          f"(median of {rounds} rounds, CPU s per check; ratio = median of paired ratios)")
    print(f"  {'variant':16} {'time':>8} {'ratio':>7}  added by this level")
    previous = None
    for k, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        added = "" if previous is None else f"+{ratio - previous:.3f}x"
        print(f"  {k:16} {statistics.median(ts):8.4f} {ratio:6.3f}x  {added}")
        previous = ratio
    return {k: statistics.median(t / b for t, b in zip(ts, base)) for k, ts in times.items()}


# ---------------------------------------------------------------- 2. vs microsoft/mup


def versus_mup(rounds, widths=(64, 128, 256, 512), seeds=3):
    try:
        from mup.coord_check import get_coord_data  # imports pandas (its records are a DataFrame)
    except ImportError as err:
        print(f"\nvs microsoft/mup: skipped ({err}; `.venv/bin/pip install pandas` adds it)")
        return float("nan")

    user_models.SEQ = 16
    tokens = torch.randint(user_models.VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(user_models.VOCAB, (4 * 16,), generator=torch.Generator().manual_seed(1))

    base, delta = (P.base_shapes(user_models.gpt_mup_attention(w)) for w in (64, 128))

    def lazy(width):
        def build():
            model = user_models.gpt_mup_attention(width)
            P.parametrize(model, base, optimizer="adam", widths={"n": width}, base_widths={"n": 64}, delta=delta)
            return model
        return build

    def theirs():
        get_coord_data({w: lazy(w) for w in widths}, [(tokens, targets)], optimizer="adam", lr=1e-3, mup=False,
                       nsteps=STEPS, nseeds=seeds, cuda=False, flatten_output=True, show_progress=False)

    def ours():
        coord.coord_check(user_models.gpt_mup_attention, widths, spec=SPEC, make_input=lambda: tokens,
                          optimizer="adam", steps=STEPS - 1, seeds=seeds, dtype=torch.float32, generated=P)

    variants = {"microsoft/mup get_coord_data": theirs, "mupspec coord_check": ours}
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for k in order:
            t = cpu()
            variants[k]()
            times[k].append(cpu() - t)
    ratio = statistics.median(o / t for o, t in zip(times["mupspec coord_check"], times["microsoft/mup get_coord_data"]))
    print(f"\nvs microsoft/mup: GPT widths {list(widths)}, {seeds} seeds, sizes after 0..{STEPS - 1} updates "
          f"(mup nsteps={STEPS}, ours steps={STEPS - 1}), Adam, float32 "
          f"(median of {rounds} rounds, CPU s)")
    for k, ts in times.items():
        print(f"  {k:30} {statistics.median(ts):8.3f}")
    print(f"  mupspec / mup = {ratio:.3f}x  (target <= 1.0x; ours records act, delta, own and upd per module "
          f"and fits; mup records the output l1 of every module)")
    return ratio


# ---------------------------------------------------------------- 3. infer


def infer_time():
    cmd = [sys.executable, "-m", "mupspec", "infer", "--model", str(ROOT / "tests/data/user_models.py:hand_mup_gpt"),
           "--optimizer", str(ROOT / "tests/data/user_models.py:hand_mup_adamw"),
           "--input", str(ROOT / "tests/data/user_models.py:tokens"), "--widths", "64,128,256,512"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(f"\nmupspec infer, hand-written muP GPT at widths 64,128,256,512 (3 builds each), end to end: "
          f"{wall:.1f} s wall (target < 30 s), exit {done.returncode}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    random.seed(0)
    gpt = overhead("small GPT (width 256, 2 layers, batch 8 x 64 tokens)", gpt_run, args.rounds)
    mlp = overhead("MLP (width 1024, 3 hidden layers, batch 256)", mlp_run, args.rounds)
    ratio = versus_mup(max(3, args.rounds // 3))
    wall = infer_time()
    print("\nsummary: overhead all quantities GPT {:.2f}x, MLP {:.2f}x (<= 1.5x); activations only GPT {:.2f}x, "
          "MLP {:.2f}x (<= 1.1x); vs mup {:.2f}x (<= 1x); infer {:.1f} s (< 30 s)".format(
              gpt["all"], mlp["all"], gpt["act"], mlp["act"], ratio, wall))


if __name__ == "__main__":
    main()

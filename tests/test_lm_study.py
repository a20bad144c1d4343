"""The Transformer study: text data, the batched GPT engine (step by step
against nn.Module + torch.optim.AdamW), coordinate statistics, the resumable
run store, bad input, and (slow) `mupspec experiment transformer --quick`."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from mupspec.atomic import is_temporary
from mupspec.cli import main
from mupspec.empirical import lm_engine, lm_study
from mupspec.empirical.lm_engine import (LMTrainConfig, Shape, build, coordinate_stats, lr_scale, train_batched,
                                         train_reference, train_runs)
from mupspec.empirical.text import TextConfig, default_corpus, load_text, train_starts, windows
from mupspec.errors import MupError

DATA = load_text(TextConfig(context=16))
TINY = LMTrainConfig(steps=5, batch=3, warmup=2, log_every=2, eval_windows=3, probe_windows=2, weight_decay=0.1)
BASE = Shape(32, 2, 4, 16)


# ---------------------------------------------------------------- text

def test_default_corpus_is_real_prose_split_deterministically():
    raw = default_corpus()
    assert len(raw) > 400_000 and b"the" in raw
    again = load_text(TextConfig(context=16))
    assert torch.equal(again.train, DATA.train) and torch.equal(again.val, DATA.val)
    # contiguous split: train then validation, nothing lost, validation 10%
    assert torch.equal(torch.cat([DATA.train, DATA.val]), torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    assert abs(len(DATA.val) / len(raw) - 0.1) < 1e-3


def test_windows_predict_the_next_byte():
    starts = train_starts(DATA, steps=2, batch=3, seed=0)
    x, y = windows(DATA.train, starts, 16)
    assert x.shape == y.shape == (2, 3, 16)
    assert torch.equal(x[..., 1:], y[..., :-1])
    assert torch.equal(train_starts(DATA, 2, 3, 0), starts) and not torch.equal(train_starts(DATA, 2, 3, 1), starts)


def test_text_file_and_its_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world, " * 50)
    data = load_text(TextConfig(path=str(f), context=8))
    assert data.source == str(f) and len(data.train) + len(data.val) == 650
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(MupError, match="is empty"):
        load_text(TextConfig(path=str(tmp_path / "empty.txt")))
    with pytest.raises(MupError, match="cannot read"):
        load_text(TextConfig(path=str(tmp_path / "missing.txt")))
    with pytest.raises(MupError, match="fewer than a context of 100"):
        load_text(TextConfig(path=str(f), context=100))


# ---------------------------------------------------------------- engine

@pytest.mark.parametrize("spec", ["mup_table8", "completep", "umup", "completep_gpt"])
def test_batched_engine_equals_plain_adamw_step_by_step(spec):
    """Same init, same batches, float64: every step's loss of every replica equals
    the plain nn.Module + torch.optim.AdamW (+ LambdaLR) run. Width and depth
    differ from the base, so LR, eps and weight-decay factors, the readout and
    residual multipliers and the attention scale all differ from 1."""
    shape = Shape(48, 3, 4, 16)
    _, plan = build(spec, shape, BASE, 0)
    assert {r.lr_factor for r in plan} != {1.0} and any(r.mult != 1.0 for r in plan)
    results = train_batched(spec, shape, BASE, DATA, [1e-3, 3e-2], [0, 1], TINY, dtype=torch.float64)
    assert len(results) == 4
    for r in results:
        ref_losses, _ = train_reference(spec, shape, BASE, DATA, r["lr"], r["seed"], TINY, dtype=torch.float64)
        assert r["curves"]["batch_loss"] == pytest.approx(ref_losses, abs=1e-10, rel=1e-10)
    # replicas differ (LR and seed both matter)
    assert len({r["curves"]["batch_loss"][-1] for r in results}) == 4


def test_the_gpt_spec_family_zero_inits_query_and_readout():
    model, plan = build("gpt_mup", Shape(64, 2, 4, 16), BASE, 0)
    assert plan["blocks.0.attn.q.weight"].role == "query" and not model.blocks[0].attn.q.weight.any()
    assert not model.lm_head.weight.any() and plan["lm_head.weight"].mult == pytest.approx(0.5)
    assert lm_study.width_specs(lm_study.Grid(specs="gpt")) == {"SP": "sp", "muP": "gpt_mup"}


def test_completep_scales_eps_and_branches():
    _, plan = build("completep", Shape(64, 4, 4, 16), BASE, 0)
    assert plan.branch_mult == pytest.approx(0.5)                     # 1/L over 1/L0
    assert plan["blocks.0.mlp.fc.weight"].eps_factor == pytest.approx(0.5 * 0.5)   # 1/fan_in and 1/L


def test_a_diverging_replica_is_recorded_and_leaves_the_others_alone():
    shape = Shape(32, 2, 4, 16)
    alone = train_batched("sp", shape, BASE, DATA, [1e-3], [0], TINY)
    mixed = train_batched("sp", shape, BASE, DATA, [1e-3, 1e4], [0], TINY)
    assert mixed[1]["diverged"] and isinstance(mixed[1]["diverged_step"], int)
    assert mixed[1]["final"] == {"train_loss": None, "val_loss": None}
    assert not mixed[0]["diverged"]
    assert mixed[0]["curves"]["batch_loss"] == pytest.approx(alone[0]["curves"]["batch_loss"], rel=1e-5)
    json.dumps(mixed, allow_nan=False)    # what the store writes: no NaN/inf anywhere


def test_coordinate_stats_read_multipliers_wherever_the_hook_puts_them():
    """upd is the RMS of the change of a layer's output caused by W - W0, with the
    generated module's multiplier (a pre-hook on Linear, a hook on Embedding)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 4, bias=False))
    model[0].register_forward_hook(lambda m, a, out: out * 3.0)
    model[1].register_forward_pre_hook(lambda m, a: (a[0] * 0.5,))
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: p + 0.1 * torch.randn_like(p) for n, p in init.items()}
    x = torch.tensor([[1, 2, 3]])
    stats = coordinate_stats(model, params, init, x)
    emb = 3.0 * params["0.weight"][x]
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    dlin = 0.5 * emb @ (params["1.weight"] - init["1.weight"]).T
    assert stats["modules"]["1"]["upd"] == pytest.approx(rms(dlin), rel=1e-5)
    assert stats["modules"]["0"]["upd"] == pytest.approx(rms(3.0 * (params["0.weight"] - init["0.weight"])[x]),
                                                         rel=1e-5)
    assert stats["logits"] == pytest.approx(rms(0.5 * emb @ params["1.weight"].T), rel=1e-5)


def test_hypers_reach_the_plan_and_the_defaults_are_table8():
    shape = Shape(64, 2, 4, 16)
    table8, plan8 = build("mup_table8", shape, BASE, 0)
    default, plan = build("mup_table8_hp", shape, BASE, 0)
    for (n, p), q in zip(table8.named_parameters(), default.parameters()):
        assert torch.equal(p, q) and plan[n].mult == plan8[n].mult, n
    moved, plan_moved = build("mup_table8_hp", shape, BASE, 0, hypers={"alpha_out": 4.0, "sigma_hidden": 0.5})
    assert plan_moved["lm_head.weight"].mult == pytest.approx(4 * plan["lm_head.weight"].mult)
    assert torch.allclose(moved.blocks[1].mlp.fc.weight, 0.5 * default.blocks[1].mlp.fc.weight)
    assert torch.equal(moved.wte.weight, default.wte.weight)            # input: no hyperparameter
    assert torch.equal(moved.lm_head.weight, default.lm_head.weight)    # output init: untouched
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        build("mup_table8_hp", shape, BASE, 0, hypers={"alpha_in": 2.0})


def test_batched_engine_with_hypers_equals_plain_adamw():
    shape, hypers = Shape(48, 2, 4, 16), {"alpha_out": 4.0, "sigma_hidden": 0.5}
    results = train_batched("mup_table8_hp", shape, BASE, DATA, [3e-3, 3e-2], [1], TINY, dtype=torch.float64,
                            hypers=hypers)
    plain = train_batched("mup_table8_hp", shape, BASE, DATA, [3e-3], [1], TINY, dtype=torch.float64)
    assert results[0]["curves"]["batch_loss"] != pytest.approx(plain[0]["curves"]["batch_loss"], rel=1e-4)
    for r in results:
        ref, _ = train_reference("mup_table8_hp", shape, BASE, DATA, r["lr"], 1, TINY, torch.float64, hypers)
        assert r["curves"]["batch_loss"] == pytest.approx(ref, abs=1e-10, rel=1e-10)


def test_arch_strings_carry_hypers():
    assert lm_study.arch_hypers("gpt") == {}
    assert lm_study.arch_hypers("gpt+alpha_out=0.25+sigma_hidden=2") == {"alpha_out": 0.25, "sigma_hidden": 2.0}
    assert lm_study.arch_hypers(lm_study.hyper_arch("sigma_hidden", 1.414)) == {"sigma_hidden": 1.414}
    for bad in ("mlp+alpha_out=1", "gpt+alpha_out", "gpt+alpha_out=0", "gpt+alpha_out=x", "gpt+a=1+a=2",
                "gpt+=1", "gpt+alpha_out=inf"):
        with pytest.raises(MupError, match="cell arch"):
            lm_study.arch_hypers(bad)


def test_transfer_part_sweeps_each_hyper_at_two_widths_with_the_lr_fixed(tmp_path):
    grid = dataclasses.replace(GRID, transfer_widths=(32, 64), transfer_seeds=(0, 1),
                               transfer_hypers=(("alpha_out", (0.25, 1.0, 4.0)), ("sigma_hidden", (0.5, 2.0))))
    cells = lm_study.transfer_cells(grid)
    assert len(cells) == (3 + 2) * 2 and {c.lrs for c in cells} == {(grid.transfer_lr,)}
    store = lm_study.RunStore(tmp_path, lm_study.settings_of(grid, DATA))
    assert lm_study.train_cells(store, cells, grid, DATA, "cpu", None, False) == (20, 0)
    runs = [r for _, r in store.all_runs()]
    assert all(r["cell"]["hypers"] == lm_study.arch_hypers(r["cell"]["arch"]) != {} for r in runs)
    assert len({r["final"]["val_loss"] for r in runs if r["cell"]["width"] == 64 and r["seed"] == 0}) == 5
    hp = lm_study.hp_transfer(store, grid, np.random.default_rng(0))
    assert set(hp) == {"alpha_out", "sigma_hidden"}
    for name, values in grid.transfer_hypers:
        optima = hp[name]["optima"]["val_loss"]
        assert [o["width"] for o in optima] == [32, 64]
        assert all(min(values) <= o["value"] <= max(values) for o in optima)
        assert math.isfinite(hp[name]["shift"]["val_loss"]["per_doubling"])
        assert len(hp[name]["curves"]["train_loss"][32]) == len(values)
    assert "| alpha_out | val_loss | 32: " in lm_study.markdown({"fixed_lr": 0.01, "settings": {},
                                                                 "hp_transfer": hp})


def test_schedule_warms_up_then_decays_to_a_tenth():
    cfg = LMTrainConfig(steps=100, warmup=10)
    assert lr_scale(0, cfg) == pytest.approx(0.1) and lr_scale(9, cfg) == pytest.approx(1.0)
    assert lr_scale(99, cfg) == pytest.approx(0.1, abs=1e-3)


# ---------------------------------------------------------------- the run store and the command

GRID = lm_study.Grid(widths=(32, 64), depths=(2,), depth_width=32, lrs=(1e-3, 1e-2), seeds=(0,), coord_seeds=(),
                     fixed_lr=1e-2, steps=4, batch=2, context=16, warmup=1, log_every=2)


def test_store_resumes_without_redoing_and_refuses_other_settings(tmp_path):
    store = lm_study.RunStore(tmp_path, lm_study.settings_of(GRID, DATA))
    cells = lm_study.width_cells(GRID)
    trained, skipped = lm_study.train_cells(store, cells[:1], GRID, DATA, "cpu", None, False)
    assert (trained, skipped) == (2, 0)
    first = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*.json")}
    # a run lost (a kill before its write) is the only thing trained again
    lost = next(iter(first))
    lost.unlink()
    assert lm_study.train_cells(store, cells, GRID, DATA, "cpu", None, False)[0] == 1 + 6
    assert all(p.read_bytes() == b for p, b in first.items() if p != lost)
    assert lm_study.train_cells(store, cells, GRID, DATA, "cpu", None, False) == (0, 0)
    # a damaged run file (zero bytes, truncated) is not finished: it is trained again
    lost.write_bytes(b"")
    other = next(p for p in first if p != lost)
    other.write_text(other.read_text()[:50])
    assert lm_study.train_cells(store, cells, GRID, DATA, "cpu", None, False)[0] == 2
    assert json.loads(other.read_text())["final"]["val_loss"] > 0
    assert not [p for p in tmp_path.rglob(".*") if is_temporary(p)]
    with pytest.raises(MupError, match="other settings"):
        lm_study.RunStore(tmp_path, lm_study.settings_of(lm_study.Grid(steps=5), DATA))


def test_one_writer_per_out_folder(tmp_path):
    store = lm_study.RunStore(tmp_path, lm_study.settings_of(GRID, DATA))
    with store.lock():
        other = lm_study.RunStore(tmp_path, lm_study.settings_of(GRID, DATA))
        with pytest.raises(MupError, match="being written by another sweep"):
            lm_study.train_cells(other, lm_study.width_cells(GRID), GRID, DATA, "cpu", None, False)


def test_budget_reached_starts_no_new_cell(tmp_path):
    store = lm_study.RunStore(tmp_path, lm_study.settings_of(GRID, DATA))
    cells = lm_study.width_cells(GRID)
    assert lm_study.train_cells(store, cells, GRID, DATA, "cpu", deadline=0.0, progress=False) == (0, len(cells))


@pytest.mark.parametrize("extra, message", [
    (["--text", "{tmp}/empty.txt"], "is empty"),
    (["--text", "{tmp}/missing.txt"], "cannot read"),
    (["--text", "{tmp}/short.txt"], "fewer than a context"),
    (["--lrs", "1e-3,0"], "positive"),
    (["--lrs", "1e-3,abc"], "comma-separated numbers"),
    (["--budget-minutes", "-1"], "minutes >= 0"),
    (["--runs-per-task", "0"], "runs >= 1"),
    (["--memory-gib", "0"], "GiB > 0"),
    (["--memory-gib", "nan"], "GiB > 0"),
    (["--memory-gib", "0.001"], "GiB, more than --memory-gib (0.001 GiB)"),
    (["--hyper", "alpha_outt=1,2"], "has no hyperparameter `alpha_outt`"),
    (["--hyper", "alpha_out=0,1"], "every value a positive number"),
    (["--hyper", "alpha_out"], "expected NAME=V1,V2"),
    (["--hyper", "alpha_out=1", "--hyper", "alpha_out=2"], "given twice"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_text("too short for a context of 32")
    out = tmp_path / "out"
    argv = ["experiment", "transformer", "--quick", "--out", str(out), "--no-progress"]
    assert main(argv + [a.format(tmp=tmp_path) for a in extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_budget_zero_trains_nothing_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lm_study, "QUICK", GRID)
    assert main(["experiment", "transformer", "--quick", "--out", str(tmp_path), "--no-progress",
                 "--budget-minutes", "0", "--part", "width"]) == 0
    assert "trained 0 runs" in capsys.readouterr().out and not list(tmp_path.rglob("lr*.json"))
    assert json.loads((tmp_path / "summary.json").read_text())["timing"]["cells_not_started"] == 4


@pytest.mark.parametrize("split", [[], ["--runs-per-task", "1"]])
def test_a_failing_cell_is_recorded_the_others_go_on_and_the_command_exits_1(tmp_path, capsys, monkeypatch, split):
    """Also with each shape split into tasks of one run: the shape's error file
    then lists the runs of both its failed tasks."""
    real = lm_engine.train_runs

    def fails_at_width_64(spec, shape, *args, **kwargs):
        if shape.width == 64:
            raise MemoryError("out of memory at d_model 64")
        return real(spec, shape, *args, **kwargs)

    monkeypatch.setattr(lm_study, "QUICK", GRID)
    monkeypatch.setattr(lm_engine, "train_runs", fails_at_width_64)
    argv = ["experiment", "transformer", "--quick", "--out", str(tmp_path), "--no-progress", "--part", "width"] + split
    assert main(argv) == 1
    assert "4 runs failed" in capsys.readouterr().err
    errors = sorted(p.name for p in (tmp_path / "errors").glob("*.json"))
    assert errors == ["mup_table8-gpt-w64-d2.json", "sp-gpt-w64-d2.json"]
    assert sorted(json.loads((tmp_path / "errors" / errors[0]).read_text())["runs"]) == [[1e-3, 0], [1e-2, 0]]
    assert "out of memory at d_model 64" in json.loads((tmp_path / "errors" / errors[0]).read_text())["error"]
    assert len(list((tmp_path / "runs").glob("*-w32-d2/*.json"))) == 4       # the other cells finished
    assert json.loads((tmp_path / "summary.json").read_text())["failed"]["runs"] == 4
    monkeypatch.setattr(lm_engine, "train_runs", real)                    # fixed: a rerun trains just those
    assert main(argv) == 0 and "trained 4 runs" in capsys.readouterr().out
    assert not list((tmp_path / "errors").glob("*.json"))


def test_runs_per_task_splits_shapes_and_changes_no_run(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_study, "QUICK", GRID)
    argv = ["experiment", "transformer", "--quick", "--no-progress", "--part", "width"]
    assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
    assert main(argv + ["--out", str(tmp_path / "split"), "--runs-per-task", "1"]) == 0

    def runs(out):
        return {p.relative_to(out).as_posix(): json.loads(p.read_text())["curves"]
                for p in sorted((out / "runs").glob("*/*.json"))}
    assert len(runs(tmp_path / "whole")) == 8 and runs(tmp_path / "split") == runs(tmp_path / "whole")
    shape = lm_study.by_shape(lm_study.width_cells(GRID))[0]
    parts = lm_study.split_runs(shape, 1)
    assert [p.runs() for p in parts] == [[r] for r in shape.runs()] and {p.key for p in parts} == {shape.key}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["experiment", "transformer", "--quick", "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_quick_grid_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "transformer", "--quick",
                          "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["width"]["transfer"]) == {"SP", "muP"}
    assert set(summary["depth"]["transfer"]) == {"muP (no depth rule)", "CompleteP"}
    assert set(summary["hp_transfer"]) == {"alpha_out", "sigma_hidden"}
    for variant in ("SP", "muP"):
        shift = summary["width"]["transfer"][variant]["shift"]["val_loss"]
        assert math.isfinite(shift["per_doubling"]) and shift["lo"] <= shift["hi"]
    assert summary["width"]["coordinates"]["muP"]["widths"] == [32, 64, 128]
    for name in ("width_transfer", "width_best_loss", "depth_transfer", "coordinates_width",
                 "exponents_over_training", "hp_transfer"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    runs = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(runs) - 1 == len(list((tmp_path / "runs").glob("*/*.json")))
    again = subprocess.run([sys.executable, "-m", "mupspec", "experiment", "transformer", "--quick",
                            "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "trained 0 runs" in again.stdout
    assert math.isfinite(summary["width"]["transfer"]["muP"]["best"]["val_loss"][0]["loss"])


def test_the_cells_of_one_shape_train_as_one_computation():
    """The coordinate seeds at the fixed LR join the LR sweep of their shape:
    one task per shape, every run once, and a run trained among the others
    equals the run trained alone."""
    grid = lm_study.Grid(widths=(32, 64), lrs=(1e-3, 1e-2), seeds=(0, 1), coord_seeds=(2, 3), fixed_lr=1e-2)
    cells = lm_study.width_cells(grid)
    shapes = lm_study.by_shape(cells)
    assert len(cells) == 8 and len(shapes) == 4
    assert {s.key for s in shapes} == {c.key for c in cells}
    for s in shapes:
        assert s.runs() == [(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1), (1e-2, 2), (1e-2, 3)]
    assert lm_study.by_shape(shapes) == shapes
    shape = Shape(32, 2, 4, 16)
    together = train_runs("sp", shape, BASE, DATA, [(1e-3, 0), (1e-2, 2)], TINY, dtype=torch.float64)
    alone = train_runs("sp", shape, BASE, DATA, [(1e-2, 2)], TINY, dtype=torch.float64)
    assert together[1]["seed"] == 2 and together[1]["lr"] == 1e-2
    assert together[1]["curves"]["batch_loss"] == pytest.approx(alone[0]["curves"]["batch_loss"], abs=1e-12)


def test_shards_train_each_run_exactly_as_one_computation():
    """Split over two single-threaded shards, every run's losses equal the
    unsplit computation's, bit for bit, in the caller's order; the progress
    callback sees each step once, after every shard finished it."""
    shape = Shape(48, 2, 4, 16)
    pairs = [(1e-3, 0), (1e-2, 0), (1e-3, 1), (3e-2, 1), (1e-2, 2)]
    one = train_runs("mup_table8", shape, BASE, DATA, pairs, TINY, shards=1)
    steps: list[int] = []
    two = train_runs("mup_table8", shape, BASE, DATA, pairs, TINY, shards=2, on_step=steps.append)
    assert [(r["lr"], r["seed"]) for r in two] == pairs
    assert [r["curves"] for r in two] == [r["curves"] for r in one]
    assert steps == list(range(1, TINY.steps + 1))


def test_runs_trained_in_groups_equal_one_computation():
    """Groups of two (the memory limit's way) give every run's losses bit for
    bit, in order; progress runs once through the steps."""
    shape = Shape(48, 2, 4, 16)
    pairs = [(1e-3, 0), (1e-2, 0), (1e-3, 1), (3e-2, 1), (1e-2, 2)]
    whole = train_runs("mup_table8", shape, BASE, DATA, pairs, TINY, shards=1)
    steps: list[int] = []
    grouped = train_runs("mup_table8", shape, BASE, DATA, pairs, TINY, shards=2, max_replicas=2,
                         on_step=steps.append)
    assert [(r["lr"], r["seed"]) for r in grouped] == pairs
    assert [r["curves"] for r in grouped] == [r["curves"] for r in whole]
    assert steps == sorted(steps) and steps[-1] == TINY.steps


def test_a_group_out_of_gpu_memory_is_retried_in_halves():
    tried = []

    def train(group, on_step):
        tried.append(len(group))
        if len(group) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [f"run {p}" for p in group]
    assert lm_engine.in_groups(train, list(range(7)), 7, None, 10) == [f"run {p}" for p in range(7)]
    assert tried == [7, 4, 2, 2, 2, 1]   # 7 and 4 do not fit; groups of 2 (and the last run) do


def test_one_run_that_cannot_fit_raises_the_gpu_error():
    def train(group, on_step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        lm_engine.in_groups(train, [0, 1], 2, None, 10)


def test_replicas_that_fit_the_memory_budget(monkeypatch):
    cell = lm_study.Cell("mup_table8", "gpt", 256, 4, (1e-3,), (0,))
    one = lm_engine.replica_bytes(lm_study.shape_of(cell, lm_study.DEFAULT), lm_study.DEFAULT.batch)
    assert lm_study.replicas_that_fit(cell, lm_study.DEFAULT, "cpu", 5.5 * one / 2 ** 30) == 5
    with pytest.raises(MupError, match="needs about"):
        lm_study.replicas_that_fit(cell, lm_study.DEFAULT, "cpu", 0.5 * one / 2 ** 30)
    monkeypatch.setattr(lm_engine, "available_bytes", lambda device: 10 * 2 ** 30)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    threads = torch.get_num_threads()
    try:   # four cores: a process of two threads takes half of 70% (a Ray node runs two such side by side)
        torch.set_num_threads(2)
        assert lm_study.default_budget("cpu") == 0.7 * 0.5 * 10 * 2 ** 30
        torch.set_num_threads(4)
        assert lm_study.default_budget("cpu") == 0.7 * 10 * 2 ** 30
    finally:
        torch.set_num_threads(threads)
    tied = dataclasses.replace(cell, arch=lm_study.TIED_ARCH)
    assert lm_engine.replica_bytes(lm_study.shape_of(tied, lm_study.DEFAULT), 16) < \
        lm_engine.replica_bytes(lm_study.shape_of(cell, lm_study.DEFAULT), 16)


MEASURE_PEAK = """
import sys
from pathlib import Path
import torch
from mupspec.empirical.lm_engine import LMTrainConfig, Shape, train_runs
from mupspec.empirical.text import TextConfig, load_text

def status(field):
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith(field + ":"))
torch.set_num_threads(1)
data = load_text(TextConfig(context=128))
base = Shape(32, 2, 4, 128)
train_runs("mup_table8", base, base, data, [(1e-3, 0)], LMTrainConfig(steps=1, batch=2, warmup=1), shards=1)
try:
    Path("/proc/self/clear_refs").write_text("5")   # resets the peak, VmHWM
except OSError:
    sys.exit(3)
before = status("VmRSS")
pairs = [(1e-3, s) for s in range(int(sys.argv[1]))]
train_runs("mup_table8", Shape(128, 4, 4, 128), base, data, pairs, LMTrainConfig(steps=3, batch=16, warmup=1,
           log_every=3), shards=1)
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_replica_bytes_is_above_the_measured_peak_and_not_far_above():
    """The estimate that sizes the groups, against the peak resident set each
    replica adds (fresh processes, one and three replicas)."""
    def peak(replicas):
        out = subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(replicas)], capture_output=True, text=True,
                             env=os.environ | {"OMP_NUM_THREADS": "1"})
        if out.returncode == 3:
            pytest.skip("this kernel does not let a process reset its peak resident set")
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])
    measured = (peak(3) - peak(1)) / 2
    estimate = lm_engine.replica_bytes(Shape(128, 4, 4, 128), 16)
    assert measured < estimate < 2 * measured, (measured, estimate)


@pytest.mark.parametrize("spec", ["mup_table8", "sp_tied"])
def test_tied_readout_trains_batched_exactly_as_the_plain_loop(spec):
    """--tied: the readout is the token embedding, one tensor in the stacks
    and in the plain model; every step's loss equals the plain AdamW loop's,
    and the readout's coordinate statistics are read from the shared tensor."""
    shape = Shape(48, 2, 4, 16, tied=True)
    model, _ = build(spec, shape, BASE, 0)
    assert model.lm_head.weight is model.wte.weight
    results = train_batched(spec, shape, BASE, DATA, [1e-3, 3e-2], [0], TINY, dtype=torch.float64)
    for r in results:
        ref_losses, _ = train_reference(spec, shape, BASE, DATA, r["lr"], r["seed"], TINY, dtype=torch.float64)
        assert r["curves"]["batch_loss"] == pytest.approx(ref_losses, abs=1e-10, rel=1e-10)
        last = r["coords"][-1]["modules"]
        assert last["lm_head"]["dw"] == pytest.approx(last["wte"]["dw"]) and last["lm_head"]["dw"] > 0


def test_tied_cells_are_their_own_and_a_spec_that_cannot_tie_is_exit_2(tmp_path, capsys):
    grid = lm_study.Grid(tied=True)
    assert {c.spec for c in lm_study.width_cells(grid)} == {"sp_tied", "mup_table8"}
    assert {c.arch for c in lm_study.width_cells(grid) + lm_study.transfer_cells(grid)} >= {"gpt_tied"}
    assert lm_study.arch_tied("gpt_tied+alpha_out=0.25") and not lm_study.arch_tied("gpt+alpha_out=0.25")
    assert lm_study.arch_hypers("gpt_tied+alpha_out=0.25") == {"alpha_out": 0.25}
    out = tmp_path / "out"
    assert main(["experiment", "transformer", "--quick", "--tied", "--specs", "gpt", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--tied: spec `" in err and "cannot parametrize a GPT whose readout is its token embedding" in err
    assert not out.exists()


def test_a_replica_that_starts_above_the_divergence_limit_is_not_frozen_for_it():
    """SP tied at width 128: the readout keeps the embedding's N(0, 1) entries,
    so the loss at init is far above 10 ln 256; the run trains (and falls)
    instead of being recorded as diverged at step 0 (or at the next batch
    whose loss is a few per cent higher)."""
    shape = Shape(128, 1, 4, 16, tied=True)
    (run,) = train_batched("sp_tied", shape, BASE, DATA, [1e-2], [0], TINY)
    losses = run["curves"]["batch_loss"]
    assert losses[0] > lm_engine.DIVERGED_LOSS and not run["diverged"]
    assert losses[-1] < losses[0]

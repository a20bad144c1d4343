"""The batched engine against a plain sequential loop (nn.Module + torch.optim),
the spec-to-plan numbers, and divergence handling."""

import math

import pytest

from mupspec.empirical.data import SpiralConfig, make_spiral  # first: sets OMP_WAIT_POLICY before torch loads
from mupspec.empirical import kernels
from mupspec.empirical.engine import TrainConfig, train_batched, train_reference
from mupspec.empirical.netplan import plan_from_codegen, plan_from_spec
from mupspec.ir import optimizers
from mupspec.resolve import load_spec

import torch  # noqa: E402

DATA = make_spiral(SpiralConfig(points_per_class=100))


def _plan(name, arch="mlp", width=96, depth=4, base_width=32, base_depth=2):
    return plan_from_spec(load_spec(f"specs/{name}.mup"), arch=arch, width=width, depth=depth,
                          d_in=2, d_out=3, base_width=base_width, base_depth=base_depth)


@pytest.mark.parametrize("name,arch,depth,optimizer", [
    ("sp", "mlp", 4, "adam"),
    ("mup_table8", "mlp", 3, "adam"),
    ("mup_table8", "mlp", 3, "sgd"),
    ("depth_mup", "resmlp", 3, "adam"),
    ("completep", "resmlp", 4, "adam"),
])
def test_batched_equals_sequential_loop(name, arch, depth, optimizer):
    """Same init tensors, same mini-batches: every replica's per-step losses and
    final weights match one-at-a-time training with torch.optim to float32 tolerance."""
    plan = plan_from_spec(load_spec(f"specs/{name}.mup"), arch=arch, width=96, depth=depth,
                          d_in=2, d_out=3, optimizer=optimizer, base_width=32, base_depth=2)
    cfg = TrainConfig(steps=40, batch=16, optimizer=optimizer, log_every=1)
    lrs, seeds = ([3e-3, 3e-2], [0, 5]) if optimizer == "adam" else ([0.05, 0.2], [0, 5])
    results = train_batched(plan, DATA, lrs, seeds, cfg)
    assert [(r["lr"], r["seed"]) for r in results] == [(lr, s) for lr in lrs for s in seeds]
    for res in results:
        losses, net = train_reference(plan, DATA, res["lr"], res["seed"], cfg)
        # the engine logs the mean loss of each window; with log_every=1 that is every step
        batched = res["curves"]["train_loss"][1:]
        assert batched == pytest.approx(losses, rel=2e-4, abs=2e-5)
        with torch.no_grad():
            ref_val = torch.nn.functional.cross_entropy(net(DATA.x_val), DATA.y_val).item()
        assert res["final"]["val_loss"] == pytest.approx(ref_val, rel=1e-3, abs=1e-4)
    # each replica really used its own LR: the two LRs give different curves
    assert results[0]["curves"]["train_loss"][-1] != results[2]["curves"]["train_loss"][-1]


def test_plan_anchored_at_base_width():
    """At the base width muP equals SP; away from it the spec's ratios apply."""
    sp, mup = _plan("sp", width=32), _plan("mup_table8", width=32)
    numbers = lambda plan: [x for l in plan.layers for x in (l.init_std, l.mult, l.lr, l.bias_lr)]
    assert numbers(sp) == pytest.approx(numbers(mup))
    wide = _plan("mup_table8", width=128)
    hidden, out = wide.layers[1], wide.layers[-1]
    assert hidden.lr == pytest.approx(32 / 128)           # Adam hidden LR 1/fan_in
    assert hidden.init_std == pytest.approx(1 / math.sqrt(128))
    assert out.mult == pytest.approx(32 / 128)            # output multiplier 1/fan_in
    assert out.init_std == pytest.approx(1 / math.sqrt(32))
    assert _plan("sp", width=128).layers[1].lr == 1.0


def test_plan_depth_rules():
    dmup = _plan("depth_mup", arch="resmlp", depth=8, base_depth=2)
    assert dmup.branch_mult == pytest.approx(math.sqrt(2 / 8))
    assert dmup.layers[1].branch and dmup.layers[1].lr == pytest.approx(32 / 96 * math.sqrt(2 / 8))
    cp = _plan("completep", arch="resmlp", depth=8, base_depth=2)
    assert cp.branch_mult == pytest.approx(2 / 8)
    assert cp.layers[1].lr == pytest.approx(32 / 96)
    none = _plan("mup_table8", arch="resmlp", depth=8)
    assert none.branch_mult == 1.0


def test_diverged_replica_is_recorded_and_others_continue():
    plan = _plan("sp")
    cfg = TrainConfig(steps=30, batch=16, log_every=10)
    results = train_batched(plan, DATA, [1e-2, 1e9], [0], cfg)
    ok, bad = results
    assert not ok["diverged"] and math.isfinite(ok["final"]["val_loss"])
    assert bad["diverged"] and bad["diverged_step"] is not None and bad["final"] == {}
    # the healthy replica is bit-identical to training it alone
    alone = train_batched(plan, DATA, [1e-2], [0], cfg)[0]
    assert alone["final"]["val_loss"] == pytest.approx(ok["final"]["val_loss"], rel=1e-5)


def test_spiral_data_is_deterministic_and_split():
    a, b = make_spiral(SpiralConfig(points_per_class=50)), make_spiral(SpiralConfig(points_per_class=50))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert len(a.y_train) + len(a.y_val) == 150 and len(a.y_val) == round(0.25 * 150)
    assert set(a.y_train.tolist()) == {0, 1, 2}
    c = make_spiral(SpiralConfig(points_per_class=50, seed=1))
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", ["sp", "mup_table8", "mup_table3", "mup_table9", "umup", "ntk", "mean_field"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_codegen_plan_agrees_with_numeric_plan(name, optimizer):
    """The sweep takes per-layer factors from the generated module; they must be
    the numbers the spec gives (numeric.layer_value, anchored at the base width)."""
    spec = load_spec(f"specs/{name}.mup")
    if optimizer not in optimizers(spec):
        with pytest.raises(ValueError, match="no .* LR rules"):   # codegen refuses an uncovered family
            plan_from_codegen(spec, arch="mlp", width=16, depth=3, d_in=2, d_out=3, optimizer=optimizer)
        return
    for width in (16, 64, 256):
        kw = dict(arch="mlp", width=width, depth=5, d_in=2, d_out=3, optimizer=optimizer, base_width=64)
        _assert_same_plan(plan_from_codegen(spec, **kw), plan_from_spec(spec, **kw))


@pytest.mark.parametrize("name", ["mup_table8", "depth_mup", "completep"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_codegen_plan_agrees_for_residual_mlps(name, optimizer):
    """Residual MLPs too: every hidden Linear is a residual branch of the
    generated module, whose branch multiplier and factors match the spec's."""
    spec = load_spec(f"specs/{name}.mup")
    for width, depth in ((16, 2), (64, 4), (256, 16)):
        kw = dict(arch="resmlp", width=width, depth=depth, d_in=2, d_out=3, optimizer=optimizer,
                  base_width=64, base_depth=4)
        generated, numeric = plan_from_codegen(spec, **kw), plan_from_spec(spec, **kw)
        _assert_same_plan(generated, numeric)
        assert generated.branch_mult == pytest.approx(numeric.branch_mult, rel=1e-12)
    if name != "mup_table8":   # depth rules in play: the comparison above is not between 1s
        assert generated.branch_mult < 1.0 and generated.layers[1].branch


def _assert_same_plan(generated, numeric):
    for g, n in zip(generated.layers, numeric.layers, strict=True):
        assert (g.kind, g.fan_in, g.fan_out, g.branch) == (n.kind, n.fan_in, n.fan_out, n.branch)
        assert [g.init_std, g.mult, g.lr, g.bias_lr, g.eps] == \
            pytest.approx([n.init_std, n.mult, n.lr, n.bias_lr, n.eps], rel=1e-12)


def test_shards_do_not_change_results():
    """Splitting the replicas over threads is invisible: each replica's curves
    and final losses are the same whether it trains in one batch or in three."""
    plan = _plan("mup_table8", width=64)
    cfg = TrainConfig(steps=20, batch=16, log_every=5)
    one = train_batched(plan, DATA, [1e-3, 1e-2, 1e-1], [0, 1], cfg, shards=1)
    three = train_batched(plan, DATA, [1e-3, 1e-2, 1e-1], [0, 1], cfg, shards=3)
    assert [(r["lr"], r["seed"]) for r in one] == [(r["lr"], r["seed"]) for r in three]
    for a, b in zip(one, three):
        assert b["curves"]["train_loss"] == pytest.approx(a["curves"]["train_loss"], rel=1e-5)
        flat = lambda rows: [x for row in rows for x in row]
        assert flat(b["curves"]["upd"]) == pytest.approx(flat(a["curves"]["upd"]), rel=1e-4, abs=1e-9)
        assert b["final"]["val_loss"] == pytest.approx(a["final"]["val_loss"], rel=1e-5)


@pytest.mark.skipif(kernels.ONEDNN_LINEAR is None, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("name,arch,optimizer", [("mup_table8", "mlp", "adam"), ("mup_table8", "mlp", "sgd"),
                                                 ("depth_mup", "resmlp", "adam")])
def test_onednn_path_equals_sequential_loop(monkeypatch, name, arch, optimizer):
    """Large layers go through per-replica oneDNN calls (forward, input and weight
    gradients, measurements); forced on for every layer here, the replicas
    still match torch.optim one run at a time."""
    monkeypatch.setattr(kernels, "ONEDNN_MIN_WEIGHTS", 0)
    plan = plan_from_spec(load_spec(f"specs/{name}.mup"), arch=arch, width=96, depth=3, d_in=2, d_out=3,
                          optimizer=optimizer, base_width=32, base_depth=2)
    cfg = TrainConfig(steps=30, batch=16, optimizer=optimizer, log_every=1)
    lrs = [3e-3, 3e-2] if optimizer == "adam" else [0.05, 0.2]
    results = train_batched(plan, DATA, lrs, [0, 5], cfg)
    for res in results:
        losses, _ = train_reference(plan, DATA, res["lr"], res["seed"], cfg)
        assert res["curves"]["train_loss"][1:] == pytest.approx(losses, rel=2e-4, abs=2e-5)
    monkeypatch.setattr(kernels, "ONEDNN_MIN_WEIGHTS", 10 ** 12)   # everything on torch.bmm
    plain = train_batched(plan, DATA, lrs, [0, 5], cfg)
    for a, b in zip(results, plain):
        flat = lambda rows: [x for row in rows for x in row]
        assert flat(a["curves"]["upd"]) == pytest.approx(flat(b["curves"]["upd"]), rel=1e-3, abs=1e-7)

"""The generated module at run time: roles, anchoring, errors, torch.compile
(fullgraph), LR schedulers, and a state_dict round trip."""

import copy
import gc
import math

import pytest
import torch

from mupspec.codegen import load_module
from mupspec.resolve import load_spec, parse_and_resolve


@pytest.fixture(scope="module")
def table8(tmp_path_factory):
    return load_module(load_spec("specs/mup_table8.mup"), "specs/mup_table8.mup", str(tmp_path_factory.mktemp("t8")))


@pytest.fixture(scope="module")
def umup(tmp_path_factory):
    return load_module(load_spec("specs/umup.mup"), "specs/umup.mup", str(tmp_path_factory.mktemp("umup")))


class Net(torch.nn.Module):
    """Embedding -> LayerNorm -> FFN with d_ff != d_model -> readout; a scalar."""

    def __init__(self, d_model, d_ff, vocab=11, d_out=3):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.norm = torch.nn.LayerNorm(d_model)
        self.up = torch.nn.Linear(d_model, d_ff)
        self.down = torch.nn.Linear(d_ff, d_model)
        self.readout = torch.nn.Linear(d_model, d_out)
        self.temperature = torch.nn.Parameter(torch.ones(()))

    def forward(self, tokens):
        h = self.norm(self.embed(tokens))
        h = h + self.down(torch.relu(self.up(h)))
        return self.readout(h).mean(1) * self.temperature


def test_roles_by_shape_with_unequal_widths(table8):
    torch.manual_seed(0)
    plan = table8.parametrize(Net(128, 512), Net(32, 64))
    roles = {r.name: r.role for r in plan}
    assert roles == {"embed.weight": "input", "norm.weight": "norm", "norm.bias": "norm", "up.weight": "hidden",
                     "up.bias": "bias", "down.weight": "hidden", "down.bias": "bias", "readout.weight": "output",
                     "readout.bias": "scalar", "temperature": "scalar"}
    up, down, readout = plan["up.weight"], plan["down.weight"], plan["readout.weight"]
    assert (up.fan_in, up.fan_out, up.base_fan_in, up.base_fan_out) == (128, 512, 32, 64)
    assert up.lr_factor == 32 / 128 and down.lr_factor == 64 / 512  # Adam hidden LR ~ 1/fan_in, anchored
    assert readout.mult == 32 / 128 and plan["embed.weight"].lr_factor == 1.0
    assert plan["norm.weight"].init_ratio is None  # norm gains keep their ones


def test_base_model_is_the_standard_model(table8):
    """At the base sizes nothing changes: same tensors, no hooks, one LR; the
    roles come from the delta model, as at every other width."""
    torch.manual_seed(0)
    model = Net(32, 64)
    before = copy.deepcopy(model.state_dict())
    plan = table8.parametrize(model, Net(32, 64), delta=Net(64, 128))
    assert plan["up.weight"].role == "hidden" and plan["readout.weight"].role == "output"
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=1e-6, atol=0)
    assert not plan.hooks and {g["lr"] for g in table8.param_groups(model, plan, lr=1e-3)} == {1e-3}


def test_name_patterns_and_clear_errors(table8):
    model, base = Net(128, 512), Net(32, 64)
    plan = table8.parametrize(model, base, roles={"readout.*": "output", "temperature": "scalar"}, init="none")
    assert plan["readout.bias"].role == "output"
    del base.temperature
    with pytest.raises(ValueError, match=r"cannot place these parameters:\n  temperature: not in the base model"):
        table8.parametrize(Net(128, 512), base, init="none")
    with pytest.raises(ValueError, match="unknown role"):
        table8.parametrize(model, Net(32, 64), roles={"*": "matrix"})
    conv = torch.nn.Conv2d(4, 64, 3)
    with pytest.raises(ValueError, match="only fan_in and fan_out may grow"):
        table8.parametrize(conv, torch.nn.Conv2d(4, 32, 5))


def test_width_symbols_and_hypers_are_checked(tmp_path):
    spec = parse_and_resolve("parametrization w\nwidth n\nhyper alpha = 2\n"
                             "hidden { mult = alpha/n  lr.adam = 1/fan_in }\n", "w.mup")
    module = load_module(spec, "w.mup", str(tmp_path))
    model, base = torch.nn.Linear(64, 64), torch.nn.Linear(16, 16)
    with pytest.raises(ValueError, match=r"rule hidden.mult uses `n`: pass widths="):
        module.parametrize(model, base, roles={"*": "hidden"})
    plan = module.parametrize(model, base, roles={"*": "hidden"}, widths={"n": 64}, base_widths={"n": 16},
                              hypers={"alpha": 6.0}, init="none")
    assert plan["weight"].mult == pytest.approx(6 / 64 / (2 / 16))  # hypers move the target, not the anchor
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        module.parametrize(model, base, hypers={"beta": 1.0})


class ResMLP(torch.nn.Module):
    def __init__(self, width, depth, d_in=6, d_out=2):
        super().__init__()
        self.inp = torch.nn.Linear(d_in, width)
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                                                              torch.nn.Linear(width, width)) for _ in range(depth))
        self.out = torch.nn.Linear(width, d_out)

    def forward(self, x, branch_mult=1.0):
        h = self.inp(x)
        for block in self.blocks:
            h = h + branch_mult * block(h)
        return self.out(h)


def test_depth_mup_residual_branches(tmp_path):
    """Depth-muP: branch output x sqrt(L_base/L), branch Adam LR x sqrt(L_base/L)
    on top of the width rules; the base model has the target's depth."""
    module = load_module(load_spec("specs/depth_mup.mup"), "specs/depth_mup.mup", str(tmp_path))
    torch.manual_seed(0)
    model, base = ResMLP(64, 8), ResMLP(16, 8)
    reference = copy.deepcopy(model)
    with pytest.raises(ValueError, match=r"has a residual block: pass residual="):
        module.parametrize(model, base, depth=8, base_depth=2)
    with pytest.raises(ValueError, match="uses `L`: pass depth="):
        module.parametrize(model, base, residual=["blocks.*"])
    with pytest.raises(ValueError, match="cannot be folded"):
        module.parametrize(model, base, residual=["blocks.*"], depth=8, base_depth=2, multipliers="fold")
    plan = module.parametrize(model, base, residual=["blocks.*"], depth=8, base_depth=2, init="none")
    x = torch.randn(3, 6)
    expected = torch.nn.functional.linear(
        (16 / 64) * _res_hidden(reference, x, 0.5), reference.out.weight, reference.out.bias)
    torch.testing.assert_close(model(x), expected)
    assert plan["blocks.3.0.weight"].branch == "blocks.3"
    assert plan["blocks.3.0.weight"].lr_factor == pytest.approx(16 / 64 * 0.5)
    assert plan["blocks.3.0.bias"].lr_factor == pytest.approx(0.5) and plan["inp.weight"].lr_factor == 1.0
    assert "hidden (res)" in plan.table()


def _res_hidden(model, x, branch_mult):
    h = model.inp(x)
    for block in model.blocks:
        h = h + branch_mult * block(h)
    return h


def test_umup_multipliers_on_embedding_and_hidden(umup):
    torch.manual_seed(0)
    model, base = Net(64, 128), Net(16, 32)
    reference = copy.deepcopy(model)
    plan = umup.parametrize(model, base, init="none")
    tokens = torch.randint(0, 11, (2, 5))
    # by hand: hidden mult sqrt(base_fan_in/fan_in), output base/fan_in, embedding (input) 1
    m_up, m_down, m_out = math.sqrt(16 / 64), math.sqrt(32 / 128), 16 / 64
    h = reference.norm(reference.embed(tokens))
    h = h + torch.nn.functional.linear(m_down * torch.relu(torch.nn.functional.linear(m_up * h, reference.up.weight,
                                       reference.up.bias)), reference.down.weight, reference.down.bias)
    expected = torch.nn.functional.linear(m_out * h, reference.readout.weight, reference.readout.bias).mean(1)
    torch.testing.assert_close(model(tokens), expected * reference.temperature)
    assert plan["up.bias"].init_ratio == 0.0  # umup: biases start at 0
    with pytest.raises(ValueError, match="umup has no sgd LR rules"):
        umup.parametrize(model, base, optimizer="sgd", init="none")
    model = Net(64, 128)
    umup.parametrize(model, base, multipliers="fold")
    assert float(model.up.bias.detach().abs().sum()) == 0.0 and float(model.up.weight.detach().abs().sum()) > 0


def _train(model, opt, sched, x, y, steps):
    out = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        out.append(loss.item())
    return out


def _setup(module, seed=0, init="rescale"):
    torch.manual_seed(seed)
    model = Net(64, 256)
    plan = module.parametrize(model, Net(16, 32), optimizer="adamw", init=init)
    opt = module.make_optimizer(model, plan, lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.8 ** step)
    return model, plan, opt, sched


def test_scheduler_keeps_per_role_ratios(table8):
    model, plan, opt, sched = _setup(table8)
    ratios = [g["lr"] / 1e-2 for g in opt.param_groups]
    x, y = torch.randint(0, 11, (8, 5)), torch.randint(0, 3, (8,))
    _train(model, opt, sched, x, y, 3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-2 * r * 0.8 ** 3 for r in ratios])
    assert sorted(set(ratios)) == [32 / 256, 16 / 64, 1.0]  # down, up (Adam hidden LR ~ 1/fan_in), the rest


def test_state_dict_round_trip_resumes_exactly(table8):
    x, y = torch.randint(0, 11, (8, 5)), torch.randint(0, 3, (8,))
    model, _, opt, sched = _setup(table8)
    straight = _train(model, opt, sched, x, y, 6)
    model, _, opt, sched = _setup(table8)
    first = _train(model, opt, sched, x, y, 3)
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    assert set(saved["model"]) == set(Net(8, 8).state_dict())  # plain keys: nothing attached
    resumed, _, opt2, sched2 = _setup(table8, seed=123, init="none")  # fresh process: parametrize, then load
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert first + _train(resumed, opt2, sched2, x, y, 3) == straight


@pytest.mark.parametrize("multipliers", ["hooks", "fold"])
def test_torch_compile_fullgraph(table8, multipliers):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    table8.parametrize(model, torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)),
                       multipliers=multipliers)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 8)
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()
    assert model[2].weight.grad is not None


@pytest.mark.slow
def test_torch_compile_fullgraph_inductor(table8):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    table8.parametrize(model, torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(4, 8)
    torch.testing.assert_close(compiled(x), model(x))


def test_ddp_wraps_the_hooked_model(table8, tmp_path):
    """A one-process gloo group: DDP over the parametrized model gives the
    plain model's outputs and gradients (nothing on parameters to lose)."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    table8.parametrize(model, torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)))
    twin = copy.deepcopy(model)  # deepcopy keeps the hooks
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        x = torch.randn(5, 8)
        out = wrapped(x)
        torch.testing.assert_close(out, twin(x))
        out.sum().backward()
        twin(x).sum().backward()
        torch.testing.assert_close(model[2].weight.grad, twin[2].weight.grad)
        # DDP's reducer holds the group: released after destroy_process_group, the group's
        # destructor joined a gloo thread that never ended (one CI run hung there)
        del wrapped, out
        gc.collect()
    finally:
        dist.destroy_process_group()

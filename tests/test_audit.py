"""The live audit (runtime part `audit` of the generated module, wrapped by
mupspec.audit): each classic way a training script departs from its spec."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import mupspec
from mupspec.codegen import load_module
from mupspec.resolve import load_spec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
import user_models  # noqa: E402

SPEC = load_spec(ROOT / "specs" / "mup_table8.mup")


@pytest.fixture(scope="module")
def P():
    return load_module(SPEC, "mup_table8.mup")


def build(P, factory=user_models.gpt_untied, width=128, optimizer="adamw", **kwargs):
    torch.manual_seed(0)
    model = factory(width)
    plan = P.parametrize(model, P.base_shapes(factory(64)), optimizer=optimizer, widths={"n": width},
                         base_widths={"n": 64}, **kwargs)
    return model, plan


def problems(P, model, optimizer, plan, **kwargs) -> str:
    with pytest.raises(P.AuditError) as err:
        P.audit(model, optimizer, plan, **kwargs)
    return str(err.value)


def test_the_generated_setup_passes(P):
    model, plan = build(P)
    opt = P.make_optimizer(model, plan, lr=1e-3, weight_decay=0.1)
    assert len(P.audit(model, opt, plan, example=user_models.tokens())) == len(plan)
    # the wrapper, planning the model again from the base model
    mupspec.audit(model, opt, SPEC, base_model=user_models.gpt_untied(64), widths={"n": 128},
                  base_widths={"n": 64}, example=user_models.tokens())


def test_one_global_group_is_caught(P):
    model, plan = build(P)
    text = problems(P, model, torch.optim.AdamW(model.parameters(), lr=1e-3), plan)
    assert "lr: " in text and "one group" in text
    assert "blocks.0.attn.qkv.weight (hidden): lr 0.001, spec 0.0005" in text  # 1/fan_in: 64/128 of the base LR


def test_one_cycle_scheduler_flattening_the_ratios_is_caught(P):
    model, plan = build(P)
    opt = P.make_optimizer(model, plan, lr=1e-3)
    P.audit(model, opt, plan)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    opt.step()
    sched.step()
    assert "OneCycleLR" in problems(P, model, opt, plan)
    # with one max_lr per group the ratios survive
    opt = P.make_optimizer(model, plan, lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[10 * g["lr"] for g in opt.param_groups], total_steps=10)
    opt.step()
    sched.step()
    P.audit(model, opt, plan)


class _ScaledReadout(user_models.GPT):
    """A hand-written μP readout multiplier (base/width) kept on top of the
    generated module's hook."""

    def forward(self, idx):
        return super().forward(idx) * (64 / self.ln_f.normalized_shape[0])


class _MuReadoutLike(torch.nn.Linear):
    def __init__(self, width, vocab):
        super().__init__(width, vocab, bias=False)
        self.mult = 64 / width

    def forward(self, x):
        return super().forward(x * self.mult)


def test_a_multiplier_applied_twice_is_caught(P):
    model, plan = build(P, factory=lambda w: _ScaledReadout(w, tied=False))
    text = problems(P, model, P.make_optimizer(model, plan, lr=1e-3), plan, example=user_models.tokens())
    assert "multiplies the readout's output by 0.5 on top of the spec's multiplier 0.5" in text

    def inside(width):
        gpt = user_models.GPT(width, tied=False)
        gpt.lm_head = _MuReadoutLike(width, user_models.VOCAB)
        return gpt
    model, plan = build(P, factory=inside)
    text = problems(P, model, P.make_optimizer(model, plan, lr=1e-3), plan, example=user_models.tokens())
    assert "lm_head.weight (output): effective forward multiplier 0.25, the spec's 0.5 (x0.5) (applied twice?)" in text


def test_a_tied_readout_without_its_multiplier_is_caught(P):
    model, plan = build(P, factory=user_models.gpt)
    assert plan["lm_head.weight"].tied_to == "wte.weight"
    P.audit(model, P.make_optimizer(model, plan, lr=1e-3), plan, example=user_models.tokens())
    # re-tying code replaces the readout after parametrize (as HF's tie_weights / resize can): its hook is gone
    model.lm_head = torch.nn.Linear(128, user_models.VOCAB, bias=False)
    model.lm_head.weight = model.wte.weight
    text = problems(P, model, P.make_optimizer(model, plan, lr=1e-3), plan, example=user_models.tokens())
    assert "lm_head.weight (output): effective forward multiplier 1, the spec's 0.5 (x2)" in text


def test_a_readout_untied_after_parametrize_is_caught(P):
    """The plan ties lm_head to wte (one init, one LR group); a script that
    gives lm_head a tensor of its own leaves that tensor out of every group."""
    model, plan = build(P, factory=user_models.gpt)
    model.lm_head.weight = torch.nn.Parameter(model.wte.weight.detach().clone())
    opt = P.make_optimizer(model, plan, lr=1e-3)
    text = problems(P, model, opt, plan, example=user_models.tokens())
    assert "lm_head.weight: the plan ties it to wte.weight, but the model now holds a separate tensor" in text


@pytest.fixture(scope="module")
def with_readout(tmp_path_factory):
    """Table 8 with a `readout` sub-role block (the same rules): lm_head's role is `readout`, not `output`."""
    from mupspec.resolve import parse_and_resolve

    spec = parse_and_resolve("parametrization t8r extends mup_table8\nreadout {\n  mult = 1/fan_in\n}\n", "t8r.mup")
    return load_module(spec, "t8r.mup", str(tmp_path_factory.mktemp("t8r")))


def test_a_multiplier_applied_twice_on_a_readout_subrole_is_caught(with_readout):
    model, plan = build(with_readout, factory=lambda w: _ScaledReadout(w, tied=False))
    assert plan["lm_head.weight"].role == "readout"
    text = problems(with_readout, model, with_readout.make_optimizer(model, plan, lr=1e-3), plan,
                    example=user_models.tokens())
    assert "lm_head.weight (readout): the model multiplies the readout's output by 0.5 on top of the spec's " \
           "multiplier 0.5" in text


def test_a_folded_multiplier_applied_again_in_the_forward_is_caught(with_readout):
    def inside(width):
        gpt = user_models.GPT(width, tied=False)
        gpt.lm_head = _MuReadoutLike(width, user_models.VOCAB)
        return gpt
    model, plan = build(with_readout, factory=inside, multipliers="fold")
    assert plan["lm_head.weight"].folded
    text = problems(with_readout, model, with_readout.make_optimizer(model, plan, lr=1e-3), plan,
                    example=user_models.tokens())
    assert "lm_head.weight (readout): effective forward multiplier 0.5, the spec's 1 (x0.5) (its multiplier 0.5 " \
           "is folded into the weight and applied in the forward too?)" in text
    # and on top of the readout's output, with the fold named
    model, plan = build(with_readout, factory=lambda w: _ScaledReadout(w, tied=False), multipliers="fold")
    text = problems(with_readout, model, with_readout.make_optimizer(model, plan, lr=1e-3), plan,
                    example=user_models.tokens())
    assert "lm_head.weight (readout): the model multiplies the readout's output by 0.5 on top of the spec's " \
           "multiplier 0.5 (folded into its weight)" in text


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate parameters")
def test_a_tie_the_plan_does_not_know_is_caught(P):
    """Tied after parametrize: the plan saw two tensors, the model has one."""
    model, plan = build(P)
    model.lm_head.weight = model.wte.weight
    text = problems(P, model, P.make_optimizer(model, plan, lr=1e-3), plan, example=user_models.tokens())
    assert "lm_head.weight: the same tensor as wte.weight, but the plan gives them separate init" in text


def test_an_uncovered_parameter_is_caught(P):
    model, plan = build(P)
    model.extra = torch.nn.Parameter(torch.zeros(3))  # added after parametrize
    opt = P.make_optimizer(model, plan, lr=1e-3)
    text = problems(P, model, opt, plan)
    assert "extra: a parameter the spec's plan does not cover" in text


def test_a_reinitialized_model_is_caught(P):
    model, plan = build(P, init="normal")
    model.apply(lambda m: torch.nn.init.normal_(m.weight, std=0.02) if isinstance(m, torch.nn.Linear) else None)
    text = problems(P, model, P.make_optimizer(model, plan, lr=1e-3), plan)
    assert "init std 0.02" in text and "re-initialized after parametrize" in text


def test_a_parameter_left_out_of_the_optimizer_is_caught(P):
    model, plan = build(P)
    groups = P.param_groups(model, plan, lr=1e-3)
    groups[0]["params"] = groups[0]["params"][1:]
    text = problems(P, model, torch.optim.Adam(groups), plan)
    assert "in no optimizer group" in text

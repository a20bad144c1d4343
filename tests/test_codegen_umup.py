"""The modules generated from specs/umup.mup and specs/umup_gpt.mup against
graphcore's unit-scaling 0.3.5 (u-muP as its authors set it up): an MLP
built from unit_scaling layers (Embedding -> Linear -> ReLU -> Linear ->
ReLU -> LinearReadout) and the same MLP in plain torch.nn, parametrized with
parametrize(..., anchor="absolute", init="normal"). Checked: every weight
starts N(0, 1) on both sides, the forward outputs agree given the same
tensors, every parameter's Adam LR agrees, and 20 Adam steps give the same
losses. Where unit-scaling departs from the spec (docs/codegen.md, "u-muP
and unit-scaling") the departure itself is measured and asserted.

`.venv/bin/python tests/test_codegen_umup.py` prints the measured figures
quoted in docs/codegen.md."""

import math
from pathlib import Path

import pytest
import torch

uu = pytest.importorskip("unit_scaling")

from mupspec.codegen import load_module  # noqa: E402
from mupspec.resolve import load_spec, parse_and_resolve  # noqa: E402

SPECS = Path(__file__).resolve().parents[1] / "specs"
# unit-scaling's bias, (W x + b)/sqrt(fan_in), in the language: for a square
# hidden layer the bias's own fan_out is the weight's fan_in
UNIT_SCALING_BIAS = """
parametrization umup_unit_scaling_bias extends umup
bias { mult = 1/sqrt(fan_out) }
"""

VOCAB, D_OUT, BATCH, STEPS, LR = 50, 7, 32, 20, 0.1
BASE = 64
WIDTHS = [64, 96, 256]  # the base width itself, one that is not a power of 2, a larger one


@pytest.fixture(scope="module", params=["umup", "umup_gpt"])
def spec_module(request, tmp_path_factory):
    path = f"specs/{request.param}.mup"
    return load_module(load_spec(path), path, str(tmp_path_factory.mktemp(request.param)))


@pytest.fixture(scope="module")
def umup(tmp_path_factory):
    return load_module(load_spec("specs/umup.mup"), "specs/umup.mup", str(tmp_path_factory.mktemp("umup1")))


def unit_scaled_mlp(width, first=None, bias=False):
    first = first or uu.Embedding(VOCAB, width)
    return torch.nn.Sequential(first, uu.Linear(width, width, bias=bias), torch.nn.ReLU(),
                               uu.Linear(width, width, bias=bias), torch.nn.ReLU(), uu.LinearReadout(width, D_OUT))


def plain_mlp(width, first=None, bias=False):
    first = first or torch.nn.Embedding(VOCAB, width)
    return torch.nn.Sequential(first, torch.nn.Linear(width, width, bias=bias), torch.nn.ReLU(),
                               torch.nn.Linear(width, width, bias=bias), torch.nn.ReLU(),
                               torch.nn.Linear(width, D_OUT, bias=False))


def parametrized(module, width, *, optimizer="adam", generator=None, init="normal", bias=False):
    """The plain MLP at `width`, set up as unit-scaling does (absolute anchor);
    at the base width the delta model tells what grows."""
    model = plain_mlp(width, bias=bias)
    delta = plain_mlp(2 * BASE, bias=bias) if width == BASE else None
    plan = module.parametrize(model, plain_mlp(BASE, bias=bias), optimizer=optimizer, delta=delta, init=init,
                              anchor="absolute", generator=generator)
    return model, plan


def pair(module, width, optimizer="adam", bias=False):
    """(unit-scaling MLP, our MLP holding the same tensors, our plan), in float64
    so that differences are the setups', not rounding's."""
    torch.manual_seed(0)
    reference = unit_scaled_mlp(width, bias=bias)
    ours, plan = parametrized(module, width, optimizer=optimizer, init="none", bias=bias)
    ours.load_state_dict(reference.state_dict())
    return reference.double(), ours.double(), plan


def batch(first_is_embedding=True, d_in=None):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randint(0, VOCAB, (BATCH,), generator=gen) if first_is_embedding
         else torch.randn(BATCH, d_in, generator=gen, dtype=torch.float64))
    return x, torch.randint(0, D_OUT, (BATCH,), generator=gen)


def losses(model, optimizer, x, y):
    out = []
    for _ in range(STEPS):  # one fixed batch: the loss must fall
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return torch.tensor(out, dtype=torch.float64)


def per_param_lr(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}


def train_both(module, width, *, eps, weight_decay=0.0, fix_decay=False, bias=False):
    """(unit-scaling's losses, ours) over 20 steps of AdamW from the same tensors;
    fix_decay: each group's weight decay divided by its LR, as unit-scaling does."""
    reference, ours, plan = pair(module, width, optimizer="adamw", bias=bias)
    x, y = batch()
    ref_opt = uu.optim.AdamW(reference.parameters(), lr=LR, eps=eps, weight_decay=weight_decay)
    groups = module.param_groups(ours, plan, lr=LR, eps=eps, weight_decay=weight_decay)
    for group in groups if fix_decay else ():
        group["weight_decay"] = weight_decay / group["lr"]
    return losses(reference, ref_opt, x, y), losses(ours, torch.optim.AdamW(groups), x, y)


# ---- equivalence ----


@pytest.mark.parametrize("width", WIDTHS)
def test_every_weight_starts_unit_normal_as_in_unit_scaling(spec_module, width):
    torch.manual_seed(0)
    reference = unit_scaled_mlp(width)
    ours, plan = parametrized(spec_module, width, generator=torch.Generator().manual_seed(1))
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert plan[name].init_std == 1.0  # the spec's init.var = 1, absolute: N(0, 1)
        se = 1.0 / math.sqrt(2 * p.numel())  # the standard error of a sample std of N(0, 1)
        ours_std, ref_std = float(p.detach().std()), float(ref_params[name].detach().std())
        assert abs(ours_std - 1.0) < 5 * se and abs(ref_std - 1.0) < 5 * se
        assert abs(ours_std - ref_std) < 5 * math.sqrt(2) * se


@pytest.mark.parametrize("width", WIDTHS)
def test_forward_equals_unit_scaling_given_the_same_tensors(spec_module, width):
    reference, ours, plan = pair(spec_module, width)
    x, _ = batch()
    assert (ours(x) - reference(x)).abs().max() <= 1e-12 * reference(x).abs().max()
    assert plan["1.weight"].mult == pytest.approx(1 / math.sqrt(width), rel=1e-15)  # unit-scaling's 1/sqrt(fan_in)
    assert plan["5.weight"].mult == pytest.approx(1 / width, rel=1e-15)  # LinearReadout's 1/fan_in
    assert plan["0.weight"].mult == 1.0  # an embedding lookup is unit-scaled as it is


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_per_parameter_lr_equals_unit_scaling(spec_module, width, optimizer):
    reference, ours, plan = pair(spec_module, width, optimizer=optimizer)
    ref_opt = (uu.optim.Adam if optimizer == "adam" else uu.optim.AdamW)(reference.parameters(), lr=LR)
    expected = per_param_lr(reference, ref_opt)
    got = per_param_lr(ours, spec_module.make_optimizer(ours, plan, lr=LR))
    assert got.keys() == expected.keys()
    for name, lr in expected.items():
        assert got[name] == pytest.approx(lr, rel=1e-12), name


@pytest.mark.parametrize("width", [96, 256])
def test_twenty_adam_steps_equal_unit_scaling(spec_module, width):
    ref_losses, our_losses = train_both(spec_module, width, eps=1e-12)
    assert ref_losses[-1] < ref_losses[0] - 0.3  # it trains
    assert (ref_losses - our_losses).abs().max() < 1e-6


def test_attention_logit_scale_is_unit_scalings(tmp_path):
    gpt = load_module(load_spec("specs/umup_gpt.mup"), "specs/umup_gpt.mup", str(tmp_path))
    q, k, v = torch.randn(3, 2, 4, 8, 64, dtype=torch.float64).unbind(0)
    for alpha in (1.0, 2.0):
        scale = gpt.attention_logit_scale(64, 64, hypers={"alpha_attn": alpha}, anchor="absolute")
        assert scale == pytest.approx(alpha / 64, rel=1e-15)  # unit-scaling: mult/d_head
        ratio = uu.functional.scaled_dot_product_attention(q, k, v, mult=alpha) / \
            torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
        # the same softmax: unit-scaling only multiplies the output by one number (its unit-scale factor)
        assert float(ratio.max() - ratio.min()) < 1e-12 * float(ratio.abs().max())


def test_anchor_argument_is_checked(umup):
    with pytest.raises(ValueError, match="anchor must be 'base' or 'absolute'"):
        umup.parametrize(plain_mlp(96), plain_mlp(BASE), anchor="unit")
    with pytest.raises(ValueError, match="init='normal'"):  # absolute variances cannot come from rescaling
        umup.parametrize(plain_mlp(96), plain_mlp(BASE), anchor="absolute")


def test_absolute_anchor_folds_like_hooks(umup):
    """multipliers="fold" (TP5 Lemma J.1) under the absolute anchor: the
    multiplier moves into the N(0, 1) draw, the LR and eps, and training
    is unchanged."""
    x, y = batch()
    runs = []
    for multipliers in ("hooks", "fold"):
        model = plain_mlp(256)
        plan = umup.parametrize(model, plain_mlp(BASE), optimizer="adamw", anchor="absolute", init="normal",
                                multipliers=multipliers, generator=torch.Generator().manual_seed(1))
        model.double()
        runs.append(losses(model, umup.make_optimizer(model, plan, lr=LR, eps=1e-12), x, y))
        if multipliers == "fold":
            assert plan["1.weight"].init_std == pytest.approx(1 / 16) and plan["1.weight"].folded
    assert runs[0][-1] < runs[0][0] - 0.3
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-9, atol=0)


def test_absolute_anchor_applies_depth_rules_absolutely(tmp_path):
    """The residual block follows the anchor: depth_mup's branch multiplier
    1/sqrt(L) and Adam LR factor 1/sqrt(L) themselves, not their ratio to
    the base depth."""
    depth = load_module(load_spec("specs/depth_mup.mup"), "specs/depth_mup.mup", str(tmp_path))
    def net(width, layers):
        return torch.nn.Sequential(torch.nn.Linear(8, width), *(torch.nn.Sequential(torch.nn.Linear(width, width))
                                                                for _ in range(layers)))
    for anchor, expected in (("base", math.sqrt(2 / 8)), ("absolute", 1 / math.sqrt(8))):
        plan = depth.parametrize(net(128, 8), net(64, 8), residual=[str(i) for i in range(1, 9)],
                                 depth=8, base_depth=2, init="none", anchor=anchor)
        assert plan.branch_mult == pytest.approx(expected, rel=1e-12)
        assert plan["1.0.bias"].lr_factor == pytest.approx(expected, rel=1e-12)  # bias: lr.adam 1, times the branch's


# ---- departures of unit-scaling from the spec, measured ----


def test_adam_eps_is_the_one_difference_in_training(umup):
    """unit-scaling rescales gradients in its backward (weights by
    1/sqrt(batch), the readout's input gradient by 1/sqrt(fan_out)): Adam
    ignores a gradient's scale only where eps is negligible beside it."""
    ref_tiny, ours_tiny = train_both(umup, 256, eps=1e-12)
    ref_eps, ours_eps = train_both(umup, 256, eps=1e-8)
    tiny, default = float((ref_tiny - ours_tiny).abs().max()), float((ref_eps - ours_eps).abs().max())
    assert default > 1e-5 and default > 100 * tiny


def test_linear_input_layer_departure(umup):
    """unit-scaling's Linear reads fan_in from weight.shape[1] whatever the
    layer: an input Linear (d_in fixed) gets LR lr/sqrt(d_in) and forward
    1/sqrt(d_in); the spec's input rules (an embedding's) give lr/sqrt(width)
    and 1. Declaring the layer `hidden` reproduces unit-scaling exactly."""
    d_in, width = 16, 256
    torch.manual_seed(0)
    reference = unit_scaled_mlp(width, first=uu.Linear(d_in, width)).double()
    ref_lr = per_param_lr(reference, uu.optim.Adam(reference.parameters(), lr=LR))
    x, _ = batch(False, d_in)
    for roles, lr_ratio, forward_ratio in ((None, math.sqrt(d_in / width), math.sqrt(d_in)),
                                           ({"0.weight": "hidden"}, 1.0, 1.0)):  # the hidden role matches it
        ours = plain_mlp(width, first=torch.nn.Linear(d_in, width, bias=False))
        base = plain_mlp(BASE, first=torch.nn.Linear(d_in, BASE, bias=False))
        plan = umup.parametrize(ours, base, roles=roles, init="none", anchor="absolute")
        ours.load_state_dict(reference.state_dict())
        ours.double()
        our_lr = per_param_lr(ours, umup.make_optimizer(ours, plan, lr=LR))
        assert our_lr["0.weight"] / ref_lr["0.weight"] == pytest.approx(lr_ratio, rel=1e-12)
        assert {n: our_lr[n] for n in our_lr if n != "0.weight"} == \
            pytest.approx({n: ref_lr[n] for n in ref_lr if n != "0.weight"}, rel=1e-12)
        torch.testing.assert_close(ours[0](x), reference[0](x) * forward_ratio, rtol=1e-12, atol=0)


def test_bias_departure(umup, tmp_path):
    """unit-scaling scales a Linear's output after adding the bias,
    (W x + b)/sqrt(fan_in): the bias enters 1/sqrt(fan_in) times as strongly
    as the spec's (bias mult 1). Both start at 0, so only training shows it."""
    width = 256
    reference, ours, plan = pair(umup, width, bias=True)
    assert plan["1.bias"].mult == 1.0 and float(ours[1].bias.detach().abs().max()) == 0.0
    with torch.no_grad():
        for model in (reference, ours):
            model[1].weight.zero_()
            model[1].bias.fill_(1.0)
    h = torch.randn(3, width, dtype=torch.float64)
    assert float((ours[1](h) / reference[1](h)).detach().mean()) == pytest.approx(math.sqrt(width), rel=1e-12)
    ref_losses, our_losses = train_both(umup, width, eps=1e-12, bias=True)
    assert float((ref_losses - our_losses).abs().max()) > 1e-2  # the spec's biases learn sqrt(fan_in) times faster
    # stated in the language, unit-scaling's bias trains the same
    spec = parse_and_resolve(UNIT_SCALING_BIAS, str(SPECS / "umup_unit_scaling_bias.mup"))
    module = load_module(spec, "umup_unit_scaling_bias.mup", str(tmp_path))
    ref_losses, our_losses = train_both(module, width, eps=1e-12, bias=True)
    assert float((ref_losses - our_losses).abs().max()) < 1e-6


def test_adamw_weight_decay_departure_and_its_fix(umup):
    """unit-scaling's AdamW divides each group's weight decay by its LR
    (`independent_weight_decay`): the per-step decay is weight_decay itself.
    Setting each group's weight_decay to weight_decay/lr does the same."""
    naive_ref, naive = train_both(umup, 96, eps=1e-12, weight_decay=1e-3)
    fixed_ref, fixed = train_both(umup, 96, eps=1e-12, weight_decay=1e-3, fix_decay=True)
    assert float((naive_ref - naive).abs().max()) > 1e-4
    assert float((fixed_ref - fixed).abs().max()) < 1e-6


# ---- unit-scaling's TransformerLayer: the parametrization of its weights ----


def plain_transformer_layer(width):
    """The parameters of unit_scaling.TransformerLayer (fused QKV, SwiGLU MLP;
    its RMSNorms have no gain) as plain Linears under the same names. Only
    the layers are compared: the residual split/add, the attention output
    scale and silu_glu are unit-scaling's model code, not its parametrization."""
    layer, mhsa, mlp = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
    mhsa.linear_qkv = torch.nn.Linear(width, 3 * width, bias=False)
    mhsa.linear_o = torch.nn.Linear(width, width, bias=False)
    mlp.linear_1 = torch.nn.Linear(width, 4 * width, bias=False)
    mlp.linear_gate = torch.nn.Linear(width, 4 * width, bias=False)
    mlp.linear_2 = torch.nn.Linear(4 * width, width, bias=False)
    layer.mhsa, layer.mlp = mhsa, mlp
    return layer


@pytest.mark.parametrize("width", [128, 192])
def test_transformer_layer_weights_as_unit_scaling(tmp_path, width):
    gpt = load_module(load_spec("specs/umup_gpt.mup"), "specs/umup_gpt.mup", str(tmp_path))
    torch.manual_seed(0)
    reference = uu.TransformerLayer(width, heads=width // 64, mhsa_tau=0.5, mlp_tau=0.5, is_causal=True).double()
    ours = plain_transformer_layer(width)
    plan = gpt.parametrize(ours, plain_transformer_layer(64), anchor="absolute", init="normal",
                           generator=torch.Generator().manual_seed(1))
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in reference.named_parameters()}
    assert all(r.role == "hidden" and r.init_std == 1.0 for r in plan)
    for name, p in ours.named_parameters():
        assert abs(float(p.detach().std()) - 1.0) < 5 / math.sqrt(2 * p.numel()), name
    expected = per_param_lr(reference, uu.optim.Adam(reference.parameters(), lr=LR))
    assert per_param_lr(ours, gpt.make_optimizer(ours, plan, lr=LR)) == pytest.approx(expected, rel=1e-12)
    ours.load_state_dict(reference.state_dict())
    ours.double()
    theirs = dict(reference.named_modules())
    for name, module in ours.named_modules():
        if isinstance(module, torch.nn.Linear):  # each layer's forward: its multiplier 1/sqrt(fan_in)
            x = torch.randn(2, 5, module.in_features, dtype=torch.float64)
            torch.testing.assert_close(module(x), theirs[name](x), rtol=1e-12, atol=1e-14)


def test_transformer_stack_depth_lr_departure(tmp_path):
    """In a DepthSequential (its TransformerStack and TransformerDecoder)
    unit-scaling multiplies every LR by layers^-1/2; umup_gpt has no depth
    rule (no residual block)."""
    gpt = load_module(load_spec("specs/umup_gpt.mup"), "specs/umup_gpt.mup", str(tmp_path))
    layers, width = 4, 128
    reference = uu.DepthSequential(*(uu.TransformerLayer(width, heads=2, mhsa_tau=0.5, mlp_tau=0.5, is_causal=True)
                                     for _ in range(layers)))
    ours = torch.nn.Sequential(*(plain_transformer_layer(width) for _ in range(layers)))
    plan = gpt.parametrize(ours, torch.nn.Sequential(*(plain_transformer_layer(64) for _ in range(layers))),
                           anchor="absolute", init="none")
    expected = per_param_lr(reference, uu.optim.Adam(reference.parameters(), lr=LR))
    got = per_param_lr(ours, gpt.make_optimizer(ours, plan, lr=LR))
    assert got.keys() == expected.keys()
    for name, lr in expected.items():
        assert got[name] / lr == pytest.approx(math.sqrt(layers), rel=1e-12), name


def measured():
    """The figures quoted in docs/codegen.md."""
    spec = load_module(load_spec("specs/umup.mup"), "specs/umup.mup")
    bias_spec = load_module(parse_and_resolve(UNIT_SCALING_BIAS, str(SPECS / "umup_unit_scaling_bias.mup")),
                            "umup_unit_scaling_bias.mup")
    out = {}
    for width in WIDTHS:
        torch.manual_seed(0)
        reference = unit_scaled_mlp(width)
        ours, _ = parametrized(spec, width, generator=torch.Generator().manual_seed(1))
        ref_params = dict(reference.named_parameters())
        out[f"init std |ours - unit-scaling| max, width {width}"] = max(
            abs(float(p.detach().std()) - float(ref_params[n].detach().std())) for n, p in ours.named_parameters())
        reference, ours, plan = pair(spec, width)
        x, _ = batch()
        out[f"forward max |delta|, width {width}"] = float((ours(x) - reference(x)).detach().abs().max())
        ref_lr = per_param_lr(reference, uu.optim.AdamW(reference.parameters(), lr=LR))
        our_lr = per_param_lr(ours, spec.make_optimizer(ours, plan, lr=LR))
        out[f"per-parameter lr max |delta|, width {width}"] = max(abs(our_lr[n] - v) for n, v in ref_lr.items())
    for width in (96, 256):
        for eps in (1e-12, 1e-8):
            a, b = train_both(spec, width, eps=eps)
            out[f"20 AdamW steps max |delta loss|, width {width}, eps {eps:g}"] = float((a - b).abs().max())
        for fix in (False, True):
            a, b = train_both(spec, width, eps=1e-12, weight_decay=1e-3, fix_decay=fix)
            out[f"... weight_decay 1e-3{' divided by the group lr' if fix else ''}, width {width}"] = \
                float((a - b).abs().max())
        a, b = train_both(spec, width, eps=1e-12, bias=True)
        out[f"... hidden layers with biases, width {width}"] = float((a - b).abs().max())
        a, b = train_both(bias_spec, width, eps=1e-12, bias=True)
        out[f"... with biases, spec with bias mult = 1/sqrt(fan_out), width {width}"] = float((a - b).abs().max())
    return out


if __name__ == "__main__":
    for key, value in measured().items():
        print(f"{key}: {value:.3g}")

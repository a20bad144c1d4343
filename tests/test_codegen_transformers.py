"""The generated module on Transformers written the nanoGPT / HF GPT-2 way:
each silent failure of issue 11 is either right now or a clear error.

Ties (MuSharedReadout semantics, either registration order), raw parameters
(fan axes from growth, fan_axes=), rules at the base width (delta=), a second
parametrize, unmatched patterns, pickling, the model's own init law,
zero-init of the query (fused c_attn included), the attention helper and
schedulers that take one max_lr."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from mupspec.check import check_spec
from mupspec.codegen import load_module
from mupspec.empirical.gpt import GPT, GPTConfig
from mupspec.resolve import load_spec, parse_and_resolve


def _load(tmp_path_factory, name):
    return load_module(load_spec(f"specs/{name}.mup"), f"specs/{name}.mup", str(tmp_path_factory.mktemp(name)))


@pytest.fixture(scope="module")
def table8(tmp_path_factory):
    return _load(tmp_path_factory, "mup_table8")


def gpt(d_model, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("n_heads", 2)
    return GPT(GPTConfig(d_model=d_model, vocab=32, block_size=8, **kw))


# ------------------------------------------------------------------ ties


@pytest.mark.parametrize("tie", ["wte", "lm_head"])
def test_tied_readout_gets_its_multiplier_in_either_registration_order(table8, tie):
    model, base = gpt(64, tie=tie), gpt(16, tie=tie)
    reference = copy.deepcopy(model)
    plan = table8.parametrize(model, base)
    wte, head = plan["transformer.wte.weight"], plan["lm_head.weight"]
    assert (wte.role, wte.tied_to, head.role, head.tied_to) == ("input", None, "output", "transformer.wte.weight")
    assert head.mult == 16 / 64 and wte.mult == 1.0
    # the shared tensor keeps the embedding's init (N(0, 1), untouched) and its LR group (Adam: 1)
    torch.testing.assert_close(model.transformer.wte.weight, reference.transformer.wte.weight, rtol=0, atol=0)
    groups = table8.param_groups(model, plan, lr=1.0)
    in_groups = [p for g in groups for p in g["params"]]
    assert sum(p is model.transformer.wte.weight for p in in_groups) == 1
    assert next(g["lr"] for g in groups if any(p is model.lm_head.weight for p in g["params"])) == 1.0
    # the multiplier applies in the readout's forward only: logits = W (x / width_mult)
    idx = torch.randint(0, 32, (2, 8))
    hidden = {}
    model.transformer.ln_f.register_forward_hook(lambda m, a, out: hidden.setdefault("h", out))
    logits = model(idx)
    torch.testing.assert_close(logits, F.linear(hidden["h"] * 16 / 64, model.lm_head.weight))
    assert "lm_head.weight" in plan.table() and "tied to transformer.wte.weight" in plan.table()


def test_roles_accepts_either_name_of_a_tied_tensor(table8):
    plan = table8.parametrize(gpt(64), gpt(16), roles={"lm_head.weight": "output", "transformer.wte.weight": "input"})
    assert plan["lm_head.weight"].mult == 0.25 and plan["transformer.wte.weight"].role == "input"


def test_a_tied_multiplier_cannot_be_folded(table8):
    with pytest.raises(ValueError, match="tied to transformer.wte.weight.*use multipliers='hooks'"):
        table8.parametrize(gpt(64), gpt(16), multipliers="fold")


def test_the_module_knows_which_ties_its_rules_allow(tmp_path_factory, table8):
    """SHAREABLE_TIES: the (embedding, readout) blocks whose rules can share
    one tensor as written (check.tie_between): Table 8's can, gpt_mup's
    (zero-init readout), u-μP's (input LR 1/sqrt(fan_out)) and SP's
    (readout init 1/fan_in) cannot."""
    assert table8.SHAREABLE_TIES == (("input", "output"),) and table8.TIES == ()
    for name in ("gpt_mup", "umup_gpt", "sp"):
        assert _load(tmp_path_factory, name).SHAREABLE_TIES == ()
    tied = _load(tmp_path_factory, "gpt_table8_tied")
    assert tied.TIES == (("token_embedding", "readout"),) and tied.SHAREABLE_TIES == (("input", "output"),)


@pytest.mark.parametrize(("name", "blocks"), [("gpt_mup", "`input` and `output`"), ("umup_gpt", "`input` and `output`"),
                                              ("sp", "`input` and `output`")])
def test_an_undeclared_tie_the_rules_cannot_share_is_refused(tmp_path_factory, name, blocks):
    module = _load(tmp_path_factory, name)
    with pytest.raises(ValueError, match=rf"lm_head.weight \(output\) is the same tensor as transformer.wte.weight "
                                         rf"\(input\), but {name}'s {blocks} rules cannot share one tensor.*"
                                         r"declare the tie in the spec, `tie input, output`.*or untie the model"):
        module.parametrize(gpt(64), gpt(16), optimizer="adam")
    module.parametrize(gpt(64, tie=None), gpt(16, tie=None), optimizer="adam")  # untied: as before


def test_declaring_the_tie_is_the_fix_the_error_names(tmp_path):
    """specs/sp_tied.mup (`extends sp`, `tie input, output`), the SP
    spec of docs/coord-check.md's tied GPT: planned as before the refusal
    existed, the readout reading the embedding's tensor and LR group."""
    spec = load_spec("specs/sp_tied.mup")
    module = load_module(spec, "specs/sp_tied.mup", str(tmp_path))
    plan = module.parametrize(gpt(64), gpt(16))
    head = plan["lm_head.weight"]
    assert (head.tied_to, head.mult, head.lr_factor) == ("transformer.wte.weight", 1.0, 1.0)
    assert not check_spec(spec).tie.shareable  # SP's readout rule is replaced by the embedding's, declared


def test_a_declared_tie_plans_the_tied_model_as_mu_shared_readout(tmp_path):
    """gpt_mup with the tie declared: the shared tensor keeps the embedding's
    N(0, 1) (the readout's zero init cannot apply to it), the readout keeps
    its alpha_out/fan_in multiplier; the check sees the tied readout."""
    text = open("specs/gpt_mup.mup").read().replace("hyper alpha_in", "tie input, output\nhyper alpha_in")
    spec = parse_and_resolve(text, "gpt_mup_tied.mup")
    module = load_module(spec, "gpt_mup_tied.mup", str(tmp_path))
    model = gpt(64)
    plan = module.parametrize(model, gpt(16), optimizer="adam")
    head = plan["lm_head.weight"]
    assert (head.tied_to, head.mult, head.init_ratio) == ("transformer.wte.weight", 16 / 64, None)
    assert model.lm_head.weight.abs().sum() > 0  # the embedding's init, not the readout's zero
    result = check_spec(spec)
    assert result.tie is not None and not result.tie.shareable and result.ok  # tied, it is still μP


def test_a_declared_tie_refuses_an_untied_model(tmp_path_factory):
    tied = _load(tmp_path_factory, "gpt_table8_tied")
    with pytest.raises(ValueError, match=r"declares `tie token_embedding, readout`.*the model's transformer.wte.weight "
                                         r"and lm_head.weight are separate tensors: tie them"):
        tied.parametrize(gpt(64, tie=None), gpt(16, tie=None), widths={"d_model": 64}, base_widths={"d_model": 16})
    plan = tied.parametrize(gpt(64), gpt(16), widths={"d_model": 64}, base_widths={"d_model": 16})
    assert plan["lm_head.weight"].tied_to == "transformer.wte.weight"


def test_a_declared_tie_accepts_only_the_named_pair(tmp_path):
    text = ("parametrization t extends mup_table8\ntie input, output\n"
            "readout {\n  mult = 1/fan_in\n}\n")
    module = load_module(parse_and_resolve(text, "t.mup"), "t.mup", str(tmp_path))
    with pytest.raises(ValueError, match=r"lm_head.weight \(readout\) is the same tensor as transformer.wte.weight "
                                         r"\(input\), but t declares `tie input, output`.*read `input` and `readout`: "
                                         r"give them the declared roles, roles=\{'transformer.wte.weight': 'input', "
                                         r"'lm_head.weight': 'output'\}"):
        module.parametrize(gpt(64), gpt(16))
    plan = module.parametrize(gpt(64), gpt(16), roles={"lm_head.weight": "output"})
    assert plan["lm_head.weight"].tied_to == "transformer.wte.weight"


def test_other_ties_must_share_one_rule(table8):
    class Shared(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.a, self.b = torch.nn.Linear(n, n), torch.nn.Linear(n, n)
            self.b.weight = self.a.weight  # one layer applied twice (ALBERT-style sharing)
    plan = table8.parametrize(Shared(64), Shared(16))
    assert plan["b.weight"].tied_to == "a.weight" and plan["b.weight"].role == "hidden"
    with pytest.raises(ValueError, match=r"b.weight \(hidden\) is the same tensor as a.weight \(input\): a spec "
                                         r"can tie only an embedding to a readout"):
        table8.parametrize(Shared(64), Shared(16), roles={"a.weight": "input"})


# ------------------------------------------------------------------ raw parameters and fan axes


class Raw(torch.nn.Module):
    """Parameters without a module that tells their layout."""

    def __init__(self, d, d_ff, experts=4, t=8, pos_shape=None):
        super().__init__()
        self.pos = torch.nn.Parameter(torch.randn(*(pos_shape or (t, d))))
        self.w_xw = torch.nn.Parameter(torch.randn(d, d_ff) / math.sqrt(d))  # used as x @ W: (fan_in, fan_out)
        self.experts = torch.nn.Parameter(torch.randn(experts, d_ff, d) / math.sqrt(d))  # MoE stack


@pytest.mark.parametrize("pos_shape", [lambda d: (8, d), lambda d: (1, 8, d)])
def test_a_raw_position_embedding_is_vector_like(table8, pos_shape):
    model, base = Raw(64, 64, pos_shape=pos_shape(64)), Raw(16, 16, pos_shape=pos_shape(16))
    plan = table8.parametrize(model, base, init="none", fan_axes={"w_xw": ("in", "out"),
                                                                  "experts": ("stack", "out", "in")})
    pos = plan["pos"]
    assert pos.role == "input" and (pos.fan_in, pos.fan_out) == (8, 64) and pos.mult == 1.0 and pos.lr_factor == 1.0


def test_ambiguous_fan_axes_are_an_error_that_says_how_to_declare_them(table8):
    model, base = Raw(64, 256), Raw(16, 32)  # d and d_ff grow by different factors: the layout matters
    with pytest.raises(ValueError, match=r"w_xw: .* does not tell which growing dimension is fan_in.*"
                                         r"fan_axes=\{'w_xw': \('out', 'in'\)\}.*W @ x.*\('in', 'out'\) if as x @ W"):
        table8.parametrize(model, base)
    plan = table8.parametrize(model, base, init="none", fan_axes={"w_xw": ("in", "out"),
                                                                  "experts": ("stack", "out", "in")})
    w, experts = plan["w_xw"], plan["experts"]
    assert (w.role, w.fan_in, w.fan_out, w.lr_factor) == ("hidden", 64, 256, 16 / 64)  # Adam hidden LR ~ 1/fan_in
    assert (experts.fan_in, experts.fan_out, experts.lr_factor) == (64, 256, 16 / 64)  # E is no fan


def test_equal_growth_reads_either_layout_the_same(table8):
    model, base = Raw(64, 64), Raw(16, 16)
    plan = table8.parametrize(model, base, init="none")
    assert plan["w_xw"].role == "hidden" and plan["w_xw"].lr_factor == 0.25 and plan["experts"].lr_factor == 0.25


def test_three_growing_dimensions_or_a_bad_declaration_are_errors(table8):
    class Cube(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(n, n, n))
    with pytest.raises(ValueError, match="3 dimensions grow with width; declare"):
        table8.parametrize(Cube(8), Cube(4))
    with pytest.raises(ValueError, match="must label each of its 3 dimensions"):
        table8.parametrize(Cube(8), Cube(4), fan_axes={"w": ("in", "out")})


def test_a_multiplier_on_a_raw_parameter_folds_correctly(tmp_path):
    spec = parse_and_resolve("parametrization m\nwidth n\ninput { mult = 1/fan_out  lr.adam = 1 }\n"
                             "hidden { lr.adam = 1/fan_in }\n", "m.mup")
    module = load_module(spec, "m.mup", str(tmp_path))
    model = Raw(64, 64)
    with pytest.raises(ValueError, match="pos: multiplier 0.25 on a Raw cannot be applied by a hook"):
        module.parametrize(model, Raw(16, 16), init="none")
    before = model.pos.detach().clone()
    plan = module.parametrize(model, Raw(16, 16), multipliers="fold")
    torch.testing.assert_close(model.pos, before * 0.25)  # mult 1/fan_out folded into the stored tensor
    assert plan["pos"].lr_factor == 0.25 and plan["pos"].eps_factor == 4.0


class HFConv1D(torch.nn.Module):
    """Hugging Face's Conv1D as transformers defines it: weight (nx, nf) = (fan_in, fan_out), y = x @ W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)


HFConv1D.__name__ = "Conv1D"


def test_hf_conv1d_is_read_as_fan_in_by_fan_out(table8):
    model = torch.nn.Sequential(torch.nn.Linear(5, 64), HFConv1D(256, 64), HFConv1D(3, 256))
    base = torch.nn.Sequential(torch.nn.Linear(5, 16), HFConv1D(32, 16), HFConv1D(3, 32))
    plan = table8.parametrize(model, base)
    hidden, out = plan["1.weight"], plan["2.weight"]
    assert (hidden.role, hidden.fan_in, hidden.fan_out, hidden.lr_factor) == ("hidden", 64, 256, 0.25)
    assert (out.role, out.mult) == ("output", 32 / 256) and plan.hooks  # the readout multiplier's hook
    assert hidden.init_law == "constant" and model[1].weight.std().item() == pytest.approx(0.01, rel=0.05)


# ------------------------------------------------------------------ the base width


ZERO_READOUT = """
parametrization zr
width n
hyper alpha = 1
input  { init.var = 1/fan_in  lr.adam = 1 }
hidden { init.var = 1/fan_in  lr.adam = 1/fan_in }
output { init.var = 0  mult = alpha/fan_in  lr.adam = 1 }
bias   { init.var = 1/fan_in  lr.adam = 1 }
"""


def test_rules_apply_at_the_base_width_as_at_every_other(tmp_path):
    module = load_module(parse_and_resolve(ZERO_READOUT, "zr.mup"), "zr.mup", str(tmp_path))
    mlp = lambda n: torch.nn.Sequential(torch.nn.Linear(4, n), torch.nn.ReLU(), torch.nn.Linear(n, n),  # noqa: E731
                                        torch.nn.ReLU(), torch.nn.Linear(n, 3, bias=False))
    with pytest.raises(ValueError, match="every parameter has the base model's shape.*pass delta="):
        module.parametrize(mlp(32), mlp(32))
    for width in (32, 64, 128):  # a sweep whose first member is the base
        model = mlp(width)
        plan = module.parametrize(model, mlp(32), delta=mlp(64), hypers={"alpha": 2.0})
        assert [r.role for r in plan] == ["input", "bias", "hidden", "bias", "output"]
        assert float(model[4].weight.detach().abs().sum()) == 0.0  # the readout is zeroed at every width
        assert plan["4.weight"].mult == pytest.approx(2.0 * 32 / width)  # alpha = 2 doubles it at the base too


# ------------------------------------------------------------------ misuse


def test_a_second_parametrize_is_refused(table8):
    model = gpt(64, tie=None)
    plan = table8.parametrize(model, gpt(16, tie=None))
    with pytest.raises(ValueError, match="already parametrized"):
        table8.parametrize(model, gpt(16, tie=None))
    plan.remove_hooks()
    with pytest.raises(ValueError, match="already parametrized"):
        table8.parametrize(model, gpt(16, tie=None))  # a second init rescale is never allowed
    again = table8.parametrize(model, gpt(16, tie=None), init="none")
    assert len(again.hooks) == 1


def test_a_pattern_that_matches_nothing_is_an_error(table8):
    with pytest.raises(ValueError, match="roles pattern 'lm_haed.weight' matches no parameter"):
        table8.parametrize(gpt(64), gpt(16), roles={"lm_haed.weight": "output"})
    with pytest.raises(ValueError, match="fan_axes pattern 'nope' matches no parameter"):
        table8.parametrize(gpt(64), gpt(16), fan_axes={"nope": ("in", "out")})


def test_a_hooked_model_pickles(table8):
    model = gpt(64, tie="wte")
    assert table8.parametrize(model, gpt(16, tie="wte")).hooks  # the readout multiplier is a hook
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    idx = torch.randint(0, 32, (2, 8))
    torch.testing.assert_close(loaded(idx), model(idx), rtol=0, atol=0)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


# ------------------------------------------------------------------ the model's own init


def test_constant_std_init_is_learned_not_assumed(table8):
    """GPT-2's init (std 0.02 everywhere, c_proj 0.02/sqrt(2 n_layers)):
    Table 8's hidden init var ~ 1/fan_in is applied relative to it."""
    model, base = gpt(256, init_std=0.02, tie=None), gpt(64, init_std=0.02, tie=None)
    before = copy.deepcopy(model)
    plan = table8.parametrize(model, base)
    fc = plan["transformer.h.0.mlp.c_fc.weight"]
    assert fc.init_law == "constant"
    ratio = model.transformer.h[0].mlp.c_fc.weight / before.transformer.h[0].mlp.c_fc.weight
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5))  # sqrt(64/256), not 1 as the 1/fan_in guess gave
    proj = model.transformer.h[0].attn.c_proj.weight / before.transformer.h[0].attn.c_proj.weight
    torch.testing.assert_close(proj, torch.full_like(proj, 0.5))
    assert plan["transformer.wte.weight"].init_law == "constant"  # input var 1/fan_in with vocab fixed: kept
    torch.testing.assert_close(model.transformer.wte.weight, before.transformer.wte.weight)


def test_pytorch_default_init_is_still_rescaled_as_before(table8):
    model, base = gpt(256, tie=None), gpt(64, tie=None)
    before = copy.deepcopy(model)
    plan = table8.parametrize(model, base)
    assert plan["transformer.h.0.mlp.c_fc.weight"].init_law == "1/fan_in"
    torch.testing.assert_close(model.transformer.h[0].mlp.c_fc.weight, before.transformer.h[0].mlp.c_fc.weight)
    torch.testing.assert_close(model.lm_head.weight, before.lm_head.weight * 2.0)  # output var 1/fan_in^2: x sqrt(4)


def test_an_init_law_that_fits_nothing_is_refused(table8):
    model, base = gpt(256, tie=None), gpt(64, tie=None)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(7.0)
    with pytest.raises(ValueError, match="c_fc.weight: its own init changes the mean square by .* fits none"):
        table8.parametrize(model, base)
    raw, raw_base = Raw(64, 64), Raw(16, 16)
    with pytest.raises(ValueError, match="needs the base model itself"):
        table8.parametrize(raw, table8.base_shapes(raw_base))


# ------------------------------------------------------------------ sub-roles: zero-init query


@pytest.fixture
def with_query_rule(tmp_path):
    """Table 8 plus a `query` sub-role of hidden with init.var = 0, as the
    language half of issue 11 will emit it (SUBROLES, RULES per sub-role)."""
    module = load_module(load_spec("specs/mup_table8.mup"), "specs/mup_table8.mup", str(tmp_path))
    module.SUBROLES = {"query": "hidden", "key": "hidden", "value": "hidden", "readout": "output"}
    module.RULES = {**module.RULES, ("query", "init.var"): lambda fan_in, fan_out, dims, hypers: 0.0}
    return module


def test_zero_init_query_in_a_fused_c_attn(with_query_rule):
    model = gpt(64, tie=None)
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    plan = with_query_rule.parametrize(model, gpt(16, tie=None))
    record = plan["transformer.h.0.attn.c_attn.weight"]
    assert [s["role"] for s in record.slices] == ["query", "key", "value"]
    q, k, v = model.transformer.h[0].attn.c_attn.weight.detach().chunk(3, dim=0)
    assert float(q.abs().sum()) == 0.0
    torch.testing.assert_close(torch.cat([k, v]), before[64:])
    row = next(line for line in plan.table().splitlines() if line.startswith("transformer.h.0.attn.c_attn.weight"))
    assert "hidden [query|key|value]" in row and " 0|" in row
    assert plan["lm_head.weight"].role == "readout"  # default name pattern -> the spec's sub-role


def test_zero_init_query_with_separate_projections(with_query_rule):
    model = gpt(64, tie=None, fused_qkv=False)
    plan = with_query_rule.parametrize(model, gpt(16, tie=None, fused_qkv=False))
    assert plan["transformer.h.1.attn.q_proj.weight"].role == "query"
    assert float(model.transformer.h[1].attn.q_proj.weight.detach().abs().sum()) == 0.0
    assert float(model.transformer.h[1].attn.k_proj.weight.detach().abs().sum()) > 0.0
    plan = with_query_rule.parametrize(gpt(64, tie=None, fused_qkv=False), gpt(16, tie=None, fused_qkv=False),
                                       roles={"*.q_proj.weight": "query"})
    assert plan["transformer.h.0.attn.q_proj.weight"].role == "query"


# ------------------------------------------------------------------ attention and schedulers


def test_attention_helper_applies_the_logit_rule_in_d_head(table8):
    scale = table8.attention_logit_scale(32, 8)  # Table 8: logit 1/n, n read as d_head
    assert scale == pytest.approx(1 / math.sqrt(8) * 8 / 32)
    q, k, v = (torch.randn(2, 3, 5, 32) for _ in range(3))
    torch.testing.assert_close(table8.attention(q, k, v, scale, causal=True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale))


def test_one_cycle_needs_the_group_lrs(table8):
    model = gpt(64, tie=None)
    plan = table8.parametrize(model, gpt(16, tie=None))
    opt = table8.make_optimizer(model, plan, lr=3e-3)
    ratios = [g["lr"] / 3e-3 for g in opt.param_groups]
    assert len(set(ratios)) > 1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=table8.group_lrs(opt), total_steps=10)
    for _ in range(4):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert [lr / lrs[0] for lr in lrs] == pytest.approx([r / ratios[0] for r in ratios])
    flat = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=10)  # the trap group_lrs avoids
    assert len({g["lr"] for g in opt.param_groups}) == 1 and flat is not None


def test_zero_init_needs_no_init_law(tmp_path):
    """A rule that zeroes a raw parameter applies even where its own init law
    could not be learned (a {name: shape} base)."""
    spec = parse_and_resolve("parametrization z\nwidth n\ninput { init.var = 0  lr.adam = 1 }\n"
                             "hidden { lr.adam = 1/fan_in }\n", "z.mup")
    module = load_module(spec, "z.mup", str(tmp_path))
    model = Raw(64, 64)
    del model.w_xw, model.experts
    module.parametrize(model, {"pos": (8, 16)})
    assert float(model.pos.detach().abs().sum()) == 0.0

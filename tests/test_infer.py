"""`mupspec infer`: the spec a model's code implements, on the five cases of
issue 12 (plain SP, hand-written μP GPT, microsoft/mup, mupspec's own
codegen, Hugging Face GPT-2), and the rational rounding rules."""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from mupspec.check import check_spec
from mupspec.commands import equiv
from mupspec.empirical.infer import Exponent, fit_exponent, infer, nearest_rational, to_spec_text
from mupspec.resolve import load_spec, parse_and_resolve

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
MODELS = ROOT / "tests" / "data" / "user_models.py"
sys.path.insert(0, str(MODELS.parent))
import user_models  # noqa: E402

WIDTHS = [64, 128, 256, 512]


def inferred_spec(make_model, optimizer, make_input=None, widths=WIDTHS):
    result = infer(make_model, widths, optimizer=optimizer, make_input=make_input, seeds=2)
    return result, parse_and_resolve(to_spec_text(result), "<inferred>")


def equivalent_core(a, b, kinds=("input", "hidden", "output")) -> list:
    diffs, compared, _ = equiv.compare(a, b)
    assert set(kinds) <= set(compared)
    return [d for d in diffs if d.where in kinds + ("attention",) and not d.strict]


# ---------------------------------------------------------------- rounding


def test_rounding_to_quarters_and_unclean_fits():
    assert nearest_rational(-0.49) == Fraction(-1, 2)
    assert nearest_rational(0.74) == Fraction(3, 4)
    assert nearest_rational(0.33) == Fraction(1, 3)
    xs = [64, 128, 256, 512]
    assert fit_exponent(xs, [x ** -0.5 for x in xs]).text() == "-1/2"
    unclean = fit_exponent(xs, [x ** 0.41 for x in xs])  # 0.077 from 1/3, 0.09 from 1/2: not rounded
    assert not unclean.clean and "unclean" in unclean.text()
    curved = fit_exponent(xs, [f / x for x, f in zip(xs, (1, 1.3, 1.3, 1))])  # slope -1, but no power law
    assert not curved.clean
    assert fit_exponent(xs, [0.0] * 4).zero


def test_an_unclean_rule_is_written_unrounded_with_a_comment():
    result = infer(user_models.mlp, WIDTHS, seeds=1)
    result.exponents["2.weight"]["init.var"] = Exponent(-0.63, Fraction(-2, 3), 0.0)  # 0.037 from 2/3: clean
    result.classes["hidden"] = dict(result.exponents["2.weight"], lr=Exponent(-0.41, Fraction(-1, 3), 0.0))
    text = to_spec_text(result)
    assert "init.var = 1/n^(2/3)" in text
    assert "lr.adam = 1/n^(0.41)  # UNCLEAN fit: slope -0.410" in text
    parse_and_resolve(text, "<inferred>")


# ---------------------------------------------------------------- the five cases


def test_plain_sp_mlp_with_one_adamw_group_infers_sp():
    result, spec = inferred_spec(user_models.mlp, user_models.adamw_one_group)
    assert not equivalent_core(spec, load_spec(SPECS / "sp.mup"))
    assert not check_spec(spec).ok
    assert any("one global LR" in n for n in result.notes)


def test_hand_written_mup_gpt_infers_mup():
    result, spec = inferred_spec(user_models.hand_mup_gpt, user_models.hand_mup_adamw, user_models.tokens)
    assert result.classes["output"]["mult"].rational == -1  # the x / width_mult before lm_head
    assert check_spec(spec).ok, to_spec_text(result)
    assert not equivalent_core(spec, load_spec(SPECS / "mup_table8.mup"))
    assert "wd.adam = 0" in to_spec_text(result)  # norms and biases are not decayed


class _MupMLP(torch.nn.Module):
    def __init__(self, width):
        from mup import MuReadout

        super().__init__()
        self.inp = torch.nn.Linear(16, width, bias=False)
        self.hid = torch.nn.Linear(width, width, bias=False)
        self.out = MuReadout(width, 4, bias=False)

    def forward(self, x):
        return self.out(torch.relu(self.hid(torch.relu(self.inp(x)))))


def test_microsoft_mup_infers_table8():
    from mup import MuAdam, set_base_shapes

    def make(width):
        model = _MupMLP(width)
        set_base_shapes(model, _MupMLP(64), delta=_MupMLP(128))
        return model

    result, spec = inferred_spec(make, lambda m: MuAdam(m.parameters(), lr=1e-3))
    assert not equivalent_core(spec, load_spec(SPECS / "mup_table8.mup"))
    assert check_spec(spec).ok


def test_mupspec_codegen_module_infers_its_source():
    from mupspec.codegen import load_module

    source = load_spec(SPECS / "mup_table8.mup")
    P = load_module(source, "mup_table8.mup")

    def make(width):
        model = user_models.gpt_mup_attention(width)
        model.plan = P.parametrize(model, P.base_shapes(user_models.gpt_mup_attention(64)), optimizer="adam",
                                   widths={"n": width}, base_widths={"n": 64},
                                   delta=P.base_shapes(user_models.gpt_mup_attention(128)))
        return model

    result, spec = inferred_spec(make, lambda m: P.make_optimizer(m, m.plan, lr=1e-3), user_models.tokens)
    assert not equivalent_core(spec, source, ("input", "hidden", "output", "bias")), to_spec_text(result)
    assert check_spec(spec).ok


@pytest.mark.slow  # importing transformers takes most of it
def test_hugging_face_gpt2_says_what_it_is():
    pytest.importorskip("transformers")
    result, spec = inferred_spec(user_models.hf_gpt2, user_models.adamw_one_group, user_models.tokens)
    notes = " ".join(result.notes)
    assert "constant-std init" in notes
    assert "lm_head.weight is tied to transformer.wte.weight and read without a width-dependent multiplier" in notes
    assert "one global LR" in notes
    report = check_spec(spec)
    assert not report.ok
    assert report.results["adam"].regime == "unstable"


# ---------------------------------------------------------------- sub-role blocks


@pytest.fixture(scope="module")
def zero_query():
    return infer(user_models.hand_mup_gpt_zero_query, WIDTHS, optimizer=user_models.hand_mup_adamw,
                 make_input=user_models.tokens, seeds=2)


def test_a_part_with_its_own_rule_gets_a_sub_role_block(zero_query):
    """Hand-written μP whose query starts at zero: the query's init differs
    from the key's (and every other hidden weight's); infer writes a `query`
    block rather than folding it into the hidden rule or a comment."""
    from mupspec import ir

    text = to_spec_text(zero_query)
    assert "query {  # from: blocks.0.attn.q_proj.weight, blocks.1.attn.q_proj.weight\n  init.var = 0\n}" in text
    assert "# differs" not in text and "key {" not in text
    spec = parse_and_resolve(text, "<inferred>")
    query = ir.role_rule(spec, "query", "init.var")
    assert (query.kind, query.numerator) == ("num", 0)  # zero init
    assert ir.role_rule(spec, "key", "init.var") == ir.role_rule(spec, "hidden", "init.var")  # the key follows
    assert zero_query.classes["hidden"]["init.var"].rational == -1
    assert check_spec(spec).ok, text


def test_a_part_whose_members_disagree_stays_a_comment(zero_query):
    """One rule per part: when the two queries differ from each other too
    (here one layer's LR made n^-1/2), no block is written for them."""
    import dataclasses

    from mupspec.empirical import infer as infer_module

    exponents = {n: dict(f) for n, f in zero_query.exponents.items()}
    exponents["blocks.1.attn.q_proj.weight"]["lr"] = Exponent(-0.5, Fraction(-1, 2), 0.0)
    changed = dataclasses.replace(zero_query, exponents=exponents, classes={}, members={}, dissent={}, parts={},
                                  notes=[])
    infer_module._classes(changed)
    text = to_spec_text(changed)
    assert "query {" not in text
    assert "# differs: blocks.0.attn.q_proj.weight: init.var zero" in text
    assert "# differs: blocks.1.attn.q_proj.weight" in text and "lr n^-1/2" in text
    parse_and_resolve(text, "<inferred>")


# ---------------------------------------------------------------- the command


def run_cli(capsys, *args):
    from mupspec.cli import main

    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_a_spec_that_check_reads(tmp_path, capsys):
    target = tmp_path / "inferred.mup"
    code, out, err = run_cli(capsys, "infer", "--model", f"{MODELS}:mlp", "--widths", "64,128,256,512",
                             "-o", str(target))
    assert code == 0, out + err
    assert "one global LR" in out and f"wrote {target}" in out
    assert "hidden {  # from: 2.weight, 4.weight" in target.read_text()
    code, out, err = run_cli(capsys, "check", str(target))
    assert code == 1 and "NOT μP" in out


@pytest.mark.parametrize("args, message", [
    (["--model", f"{MODELS}:fails_at_large_width"], "fails_at_large_width(width=512) failed"),
    (["--model", f"{MODELS}:mlp", "--optimizer", f"{MODELS}:tokens"], "optimizer factory failed"),
    (["--model", f"{MODELS}:mlp", "--widths", "64,128"], "at least 3 widths"),
])
def test_cli_bad_input_exit_2(args, message, capsys):
    code, out, err = run_cli(capsys, "infer", *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_fused_c_attn_is_read_part_by_part(tmp_path):
    """nanoGPT's fused c_attn (query | key | value rows of one Linear) with
    the query rows started at zero: infer reads each part's init as the
    generated module splits it and writes a `query` block; the module
    generated from the inferred spec zeroes exactly those rows again."""
    from mupspec.codegen import load_module

    result = infer(user_models.hand_mup_gpt_zero_query_fused, WIDTHS[:3], optimizer=user_models.hand_mup_adamw,
                   make_input=user_models.tokens, seeds=2)
    text = to_spec_text(result)
    assert ("query {  # from: blocks.0.attn.c_attn.weight[query], blocks.1.attn.c_attn.weight[query]\n"
            "  init.var = 0\n}") in text
    assert "key {" not in text and "# differs" not in text
    assert result.classes["hidden"]["init.var"].rational == -1
    spec = parse_and_resolve(text, "<inferred>")
    assert check_spec(spec).ok, text
    P = load_module(spec, "inferred.mup", str(tmp_path))
    model = user_models.hand_mup_gpt_fused(128)
    P.parametrize(model, user_models.hand_mup_gpt_fused(64), optimizer="adam", widths={"n": 128},
                  base_widths={"n": 64})
    rows = model.blocks[0].attn.c_attn.weight.detach()
    assert rows[:128].abs().max() == 0 and rows[128:].std() > 0


def test_a_fused_c_attn_whose_parts_agree_is_one_hidden_matrix():
    result = infer(user_models.hand_mup_gpt_fused, WIDTHS[:3], optimizer=user_models.hand_mup_adamw,
                   make_input=user_models.tokens, seeds=2)
    text = to_spec_text(result)
    assert "query {" not in text and "# differs" not in text
    assert "blocks.0.attn.c_attn.weight" in result.members["hidden"]

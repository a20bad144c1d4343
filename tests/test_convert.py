"""`mupspec convert` and `mupspec equiv` on the bundled specs, and a numeric
check that the Lemma J.1 rewrite (wd and eps included) leaves training unchanged."""

from pathlib import Path

import numpy as np
import pytest

from mupspec.check import check_spec
from mupspec.cli import main
from mupspec.commands.equiv import compare
from mupspec.convert import FORMS, convert, parse_setting
from mupspec.errors import MupError
from mupspec.numeric import layer_value
from mupspec.printer import format_expr, format_spec
from mupspec.resolve import load_spec, parse_and_resolve, parse_and_validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    """Paths below are relative to the repository root, wherever pytest runs."""
    monkeypatch.chdir(ROOT)


def spec(name):
    return load_spec(f"specs/{name}.mup")


def equivalent(a, b, strict=False):
    diffs, _, _ = compare(a, b)
    return not [d for d in diffs if strict or not d.strict_only]


def rules(s, kind):
    return {r.field: format_expr(r.value) for r in s.block(kind).rules}


@pytest.mark.parametrize("src,form,ref", [
    ("mup_table3", "table8", "mup_table8"), ("mup_table3", "table9", "mup_table9"),
    ("mup_table8", "table3", "mup_table3"), ("mup_table9", "table8", "mup_table8"),
    ("mup_table9", "table3", "mup_table3"), ("mup_table8", "table9", "mup_table9"),
])
def test_tables_convert_into_each_other(src, form, ref):
    result = convert(spec(src), form)
    assert equivalent(result.spec, spec(ref))
    assert equivalent(result.spec, spec(src), strict=True)  # eps and wd moved: exact
    assert result.exact


@pytest.mark.parametrize("src", ["mup_table3", "mup_table8", "mup_table9", "umup", "sp", "ntk", "mean_field",
                                 "completep", "depth_mup"])
def test_every_spec_has_a_unit_form(src):
    result = convert(spec(src), "unit")
    for kind in ("input", "hidden", "output", "bias"):
        block = result.spec.block(kind)
        if block is not None and rules(spec(src), kind).get("init.var") != "0":
            assert rules(result.spec, kind)["init.var"] == "1"
    assert equivalent(result.spec, spec(src), strict=True)


def test_table3_to_table8_gives_the_paper_output_column():
    out = rules(convert(spec("mup_table3"), "table8").spec, "output")
    assert (out["init.var"], out["mult"], out["lr.sgd"], out["lr.adam"]) == ("1", "1/fan_in", "fan_in", "1")
    # the derived eps / weight-decay moves (docs/converting.md): θ = 1/fan_in
    assert (out["eps.adam"], out["wd.adam"], out["wd.sgd"]) == ("1/fan_in", "1/fan_in", "1/fan_in^2")


def test_table3_to_table9_output_and_input():
    result = convert(spec("mup_table3"), "table9")
    assert {k: format_expr(t) for k, t in result.thetas.items()} == {
        "input": "sqrt(fan_out)", "output": "1/sqrt(fan_in)", "bias": "sqrt(fan_out)"}
    out = rules(result.spec, "output")
    assert (out["init.var"], out["mult"], out["lr.sgd"], out["lr.adam"]) == (
        "1/fan_in", "1/sqrt(fan_in)", "1", "1/sqrt(fan_in)")


def test_sp_to_table8_form_stays_sp():
    result = convert(spec("sp"), "table8")
    assert result.thetas  # it did move (output: θ = 1/sqrt(fan_in))
    assert equivalent(result.spec, spec("sp"), strict=True)
    assert not equivalent(result.spec, spec("mup_table8"))
    before, after = check_spec(spec("sp")), check_spec(result.spec)
    for opt in ("sgd", "adam"):
        assert after.results[opt].regime == before.results[opt].regime == "unstable"
        assert after.results[opt].names == before.results[opt].names == ["sp"]
        assert after.results[opt].desiderata == before.results[opt].desiderata


def test_fixed_eps_is_only_equivalent_up_to_eps():
    result = convert(spec("mup_table3"), "table8", fixed_eps=True)
    assert not result.exact and "up to eps" in result.notes[0]
    diffs, _, _ = compare(result.spec, spec("mup_table3"))
    assert diffs and all(d.invariant.startswith("e_eps") and d.where == "output" for d in diffs)


BUNDLED = sorted(p.stem for p in (ROOT / "specs").glob("*.mup"))
# the tied specs' conversions that would move the embedding and the readout by different θ
# (gpt_table8_tied is already Table 8; sp_tied is already Tables 3 and 9, and moves as one into unit scaling)
MOVES_A_TIE_APART = {("gpt_table8_tied", f) for f in ("table3", "table9", "unit")} | \
    {("sp_tied", "table8")}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("src", BUNDLED)
def test_every_bundled_spec_converts_to_every_form(src, form):
    if (src, form) in MOVES_A_TIE_APART:
        with pytest.raises(MupError, match="share one tensor, so they must move by one θ"):
            convert(spec(src), form)
        return
    result = convert(spec(src), form)
    text = format_spec(result.spec)
    assert format_spec(parse_and_validate(text)) == text
    assert format_spec(parse_and_resolve(text, "specs/x.mup")) == text  # no `extends`: self-contained
    assert equivalent(result.spec, spec(src), strict=True)
    before, after = check_spec(spec(src)), check_spec(result.spec)
    assert {o: (r.regime, r.names, r.desiderata, r.depth_class) for o, r in after.results.items()} == \
        {o: (r.regime, r.names, r.desiderata, r.depth_class) for o, r in before.results.items()}


def test_set_pins_one_field_and_solves_the_rest():
    s = spec("mup_table3")
    result = convert(s, settings=(parse_setting("output.mult=1/fan_in", s),))
    assert rules(result.spec, "output") == rules(convert(s, "table8").spec, "output")
    hidden = convert(s, settings=(parse_setting("hidden.init.var=1", s),)).spec
    assert rules(hidden, "hidden")["mult"] == "1/sqrt(fan_in)"
    assert rules(hidden, "hidden")["lr.sgd"] == "fan_in"
    # --set overrides the form for its class only
    mixed = convert(s, "table8", (parse_setting("output.theta=1", s),))
    assert "output" not in mixed.thetas


def test_depth_and_hyper_symbols_survive(tmp_path):
    text = ("parametrization h\nwidth n\ndepth L\nhyper alpha = 2\n"
            "output {\n  init.var = alpha/fan_in^2\n  lr.adam = 1/fan_in\n}\n")
    s = parse_and_resolve(text)
    out = rules(convert(s, settings=(parse_setting("output.theta=sqrt(L)/fan_in", s),)).spec, "output")
    assert out["init.var"] == "alpha/L" and out["mult"] == "sqrt(L)/fan_in" and out["lr.adam"] == "1/sqrt(L)"


@pytest.mark.parametrize("setting,message", [
    ("output.mult=1/fan_inn", "unknown symbol `fan_inn`"),
    ("output.mul=1", "not a field"),
    ("outptu.mult=1", "cannot be converted"),
    ("norm.mult=2", "cannot be converted"),
    ("output.mult", "cannot read --set"),
    ("output.mult=1/(fan_in", "unexpected"),
    ("bias.init.var=1", None),  # fine on table3
])
def test_bad_settings_are_diagnostics(setting, message):
    s = spec("mup_table3")
    if message is None:
        parse_setting(setting, s)
        return
    with pytest.raises(MupError) as err:
        parse_setting(setting, s)
    assert message in str(err.value)


def test_unsolvable_pins():
    u = spec("umup")
    with pytest.raises(MupError, match="zero"):
        convert(u, settings=(parse_setting("bias.init.var=1", u),))
    with pytest.raises(MupError, match="covers no `sgd`"):
        convert(u, settings=(parse_setting("hidden.lr.sgd=1", u),))
    s = spec("sp")
    with pytest.raises(MupError, match="both pin"):
        convert(s, settings=(parse_setting("hidden.mult=2", s), parse_setting("hidden.theta=3", s)))


def test_cli_convert_writes_valid_spec(tmp_path, capsys):
    out = tmp_path / "t8.mup"
    assert main(["convert", "specs/mup_table3.mup", "--to", "table8", "-o", str(out)]) == 0
    assert "theta per class: output 1/fan_in" in capsys.readouterr().err
    assert main(["fmt", "--check", str(out)]) == 0
    assert main(["equiv", str(out), "specs/mup_table8.mup"]) == 0
    assert main(["equiv", "--strict", str(out), "specs/mup_table3.mup"]) == 0


def test_cli_errors_exit_2(capsys):
    assert main(["convert", "specs/sp.mup"]) == 2
    assert "nothing to convert to" in capsys.readouterr().err
    assert main(["convert", "specs/sp.mup", "--set", "output.mult=1/fan_inn"]) == 2
    err = capsys.readouterr().err
    assert "--set:1:15: error: unknown symbol `fan_inn`" in err and "did you mean `fan_in`" in err


def test_cli_equiv_reports_what_differs(capsys):
    assert main(["equiv", "specs/mup_table8.mup", "specs/sp.mup"]) == 1
    out = capsys.readouterr().out
    assert "not equivalent" in out
    line = next(l for l in out.splitlines() if l.split()[:3] == ["output", "-", "e_init"])
    assert line.split()[3:] == ["1", "1/2", "-1/2"]
    assert main(["equiv", "specs/sp.mup", "specs/seed_mlp.mup"]) == 0  # the original "muP_MLP" is SP
    assert main(["equiv", "--strict", "specs/mup_table3.mup", "specs/mup_table8.mup"]) == 1  # fixed eps, wd


# ---------------------------------------------------------------- numeric check of Lemma J.1


def _train(values, optimizer, steps=6, seed=0):
    """W_eff = mult * w for a 3x4 weight, loss |W_eff x - y|^2; torch semantics:
    SGD with coupled weight_decay, AdamW with decoupled p <- p(1 - lr*wd)."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(4, 5)), rng.normal(size=(3, 5))
    w = rng.normal(size=(3, 4)) * np.sqrt(values["init.var"])
    m, v, trajectory = np.zeros_like(w), np.zeros_like(w), []
    lr, wd = values[f"lr.{optimizer}"], values[f"wd.{optimizer}"]
    for t in range(1, steps + 1):
        grad = values["mult"] * 2 * (values["mult"] * w @ x - y) @ x.T
        if optimizer == "sgd":
            w = w - lr * (grad + wd * w)
        else:
            w = w * (1 - lr * wd)
            m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
            mhat, vhat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            w = w - lr * mhat / (np.sqrt(vhat) + values["eps.adam"])
        trajectory.append(values["mult"] * w)
    return np.array(trajectory)


def _values(s, kind="hidden", width=64.0):
    fields = ("init.var", "mult", "lr.sgd", "lr.adam", "wd.sgd", "wd.adam", "eps.adam")
    return {f: layer_value(s, kind, f, fan_in=width, fan_out=width, width=width) for f in fields}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_converted_spec_trains_identically(optimizer):
    base = parse_and_resolve("parametrization p\nwidth n\nhidden {\n  init.var = 1/fan_in\n"
                             "  lr.sgd = 0.05\n  lr.adam = 0.01\n  wd.sgd = 0.1\n  wd.adam = 0.1\n"
                             "  eps.adam = 0.1\n}\n")
    moved = convert(base, settings=(parse_setting("hidden.theta=sqrt(n)/3", base),)).spec
    a, b = _values(base), _values(moved)
    assert b["mult"] == pytest.approx(8 / 3) and a["mult"] == 1.0  # θ = 8/3 at width 64
    np.testing.assert_allclose(_train(a, optimizer), _train(b, optimizer), rtol=1e-9, atol=1e-12)
    if optimizer == "adam":  # with eps held fixed the trajectories part: eps matters
        fixed = convert(base, settings=(parse_setting("hidden.theta=n", base),), fixed_eps=True).spec
        assert not np.allclose(_train(a, "adam"), _train(_values(fixed), "adam"), rtol=1e-6)

"""Regression tests for the reliability campaign (issue "Reliability"): each
test pins one bug the fuzzing campaign found -- a traceback, a generated
module that does not compile, quadratic time, an error without a usable
position, lost data -- and fails on the code before its fix."""

from __future__ import annotations

import ast
import errno
import gc
import json
import os
import re
import time
from pathlib import Path

import pytest

from mupspec.cli import EXIT_INTERNAL, main
from mupspec.codegen import generate
from mupspec.errors import MupError, render_all
from mupspec.resolve import parse_and_resolve

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str, name: str = "x.mup") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def located(err: str, path: str, line: int, column: int | None = None) -> bool:
    where = f"{path}:{line}:" + (f"{column}:" if column else "")
    return where in err


# ---------------------------------------------------------------- codegen


def test_codegen_of_a_spec_without_blocks_compiles(tmp_path, capsys):
    path = write(tmp_path, "parametrization x\n")
    out = tmp_path / "x.py"
    code, _, err = run(capsys, "codegen", path, "-o", out)
    assert code == 0, err
    source = out.read_text(encoding="utf-8")
    ast.parse(source)  # was `BLOCKS = (,)`: a SyntaxError
    assert "BLOCKS = ()" in source


@pytest.mark.parametrize("text,where", [
    ("hyper a = (-8)^(1/3)\nhidden { mult = a }", (2, 11)),
    ("hyper a = (-1)^(1/2)\nhidden { mult = a }", (2, 11)),
    ("hidden { mult = (-2)^(3/2) * n }", (2, 17)),
])
def test_negative_base_to_a_fractional_power_is_a_located_error(tmp_path, capsys, text, where):
    path = write(tmp_path, "parametrization p\n" + text + "\n")
    for command in ("check", "codegen", "parse"):
        code, _, err = run(capsys, command, path)
        assert code == 2, err
        assert "negative number raised to a fractional power" in err
        assert located(err, path, *where)


def test_integer_powers_of_negative_constants_still_fold():
    spec = parse_and_resolve("parametrization p\nhyper a = (-2)^2\nhidden { mult = a }\n")
    assert "HYPER_DEFAULTS = {\"a\": 4.0}" in generate(spec, "p.mup")


@pytest.mark.parametrize("value", ["(10^64)^64", "10^64*10^64*10^64*10^64*10^64*10^64", "10^(-64)^64",
                                   "(10^(-60))^6"])
def test_huge_constants_are_located_errors_not_overflow(tmp_path, capsys, value):
    path = write(tmp_path, f"parametrization h\nhyper a = {value}\nhidden {{ mult = a }}\n")
    for command in ("check", "codegen"):
        code, _, err = run(capsys, command, path)
        assert code == 2, err
        assert "out of range" in err and located(err, path, 2)


def test_convert_refuses_numbers_it_cannot_write_at_the_users_rule(tmp_path, capsys):
    path = write(tmp_path, "parametrization big\nhidden { mult = (10^50*n)^64 }\n")
    code, out, err = run(capsys, "convert", path, "--to", "table3")
    assert code == 2, err  # was: ValueError (int-to-str digit limit) or an unparsable output
    assert "convert cannot write" in err and located(err, path, 2)
    assert out == ""


@pytest.mark.parametrize("text,form,where,exponent", [
    ("output { lr.sgd = fan_in^64 }", "table8", (2, 10), "65"),
    ("output { lr.sgd = fan_in^64 }", "table9", (2, 1), "65"),
    ("output { lr.sgd = fan_in^64 }", "unit", (2, 10), "65"),
    ("depth L\ninput { init.std = sqrt(fan_in) / (sqrt(n) / L)^64 }", "unit", (3, 1), "128"),
])
def test_convert_refuses_exponents_beyond_the_parsers_limit_at_the_users_rule(tmp_path, capsys, text, form,
                                                                              where, exponent):
    path = write(tmp_path, "parametrization p\n" + text + "\n")
    code, out, err = run(capsys, "convert", path, "--to", form)
    assert code == 2, err  # was: exit 70, "convert wrote a spec that does not parse: exponent 65 is out of range"
    assert f"exponent {exponent} is out of range" in err and "magnitude <= 64" in err
    assert located(err, path, *where) and out == ""


# ---------------------------------------------------------------- zero and non-real scales


@pytest.mark.parametrize("text,line", [
    ("hidden { mult = n - n }", 2),
    ("hidden { mult = sqrt(n-n) }", 2),
    ("hidden { lr.adam = n*0 }", 2),
    ("depth L\nhidden { init.var = 1/fan_in }\nresidual { mult = 0*n }", 4),
])
def test_rules_that_vanish_at_scale_are_located_errors(tmp_path, capsys, text, line):
    path = write(tmp_path, "parametrization z\n" + text + "\n")
    for fmt in ("text", "json", "markdown"):
        code, _, err = run(capsys, "check", path, "--format", fmt)
        assert code == 2, err  # was: OverflowError in the report's power printer
        assert "zero at every" in err and located(err, path, line)


def test_zero_init_is_still_allowed(tmp_path, capsys):
    path = write(tmp_path, "parametrization z\nhidden { init.var = n - n }\noutput { init.var = 0 }\n")
    code, _, err = run(capsys, "check", path)
    assert code == 1 and "error" not in err


@pytest.mark.parametrize("text", ["depth L\nhidden { init.std = -(--fan_out - n) }",
                                  "depth L\nhidden { init.var = 0 }\nresidual { layers = 2 }"])
def test_a_zero_init_branch_in_depth_is_reported_in_every_format(tmp_path, capsys, text):
    path = write(tmp_path, "parametrization z\n" + text + "\n")
    for fmt in ("text", "json", "markdown"):
        code, out, err = run(capsys, "check", path, "--format", fmt)
        assert code == 1, err  # was: OverflowError / ValueError (an infinite exponent into Fraction)
        assert "no power of L fixes that" in out + err
    depth = json.loads(run(capsys, "check", path, "--format", "json")[1])["reports"][0]["depth"]
    assert depth["alpha"] == "oo"  # the branches start at exactly zero


def test_a_negative_init_std_at_scale_is_refused_like_a_negative_literal(tmp_path, capsys):
    path = write(tmp_path, "parametrization p\nhidden { init.std = -(0 - -n) }\n")
    for argv in (("check", path), ("convert", path, "--to", "unit")):
        code, out, err = run(capsys, *argv)
        assert code == 2, err  # convert was: exit 70, "convert wrote a spec that does not parse: `init.std` is negative"
        assert "negative at large width" in err and located(err, path, 2, 21)
    literal = write(tmp_path, "parametrization p\nhidden { init.std = -1 }\n", "lit.mup")
    code, _, err = run(capsys, "check", literal)
    assert code == 2 and "`init.std` is negative" in err


@pytest.mark.parametrize("text", ["hidden { mult = sqrt(1 - n) }", "hidden { mult = (1 - n^2)^(1/2) }",
                                  "hidden { lr.adam = (2 - n)^(3/2) }"])
def test_a_scale_negative_under_a_root_is_located(tmp_path, capsys, text):
    path = write(tmp_path, "parametrization s\n" + text + "\n")
    code, _, err = run(capsys, "check", path)
    assert code == 2, err  # was accepted (an imaginary scale), or an error at no position
    assert "not a real number" in err and located(err, path, 2)


def test_convert_of_a_sign_changing_std_is_a_located_error_not_recursion(tmp_path, capsys):
    path = write(tmp_path, "parametrization r\nbias { init.std = 1 - fan_in }\n")
    code, _, err = run(capsys, "convert", path, "--to", "unit")
    assert code == 2, err  # was RecursionError in convert.to_ir
    assert "not a positive scale" in err and located(err, path, 2)


# ---------------------------------------------------------------- internal names


def test_a_hyper_named_like_converts_internal_symbol_is_its_own_symbol(tmp_path, capsys):
    path = write(tmp_path, "parametrization u\nhyper _u_n = 2\nhidden { mult = _u_n * sqrt(n) + n }\n")
    out = tmp_path / "t3.mup"
    code, _, err = run(capsys, "convert", path, "--to", "table3", "-o", out)
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    assert "theta per class: hidden 1/(2*n)" not in text  # was: _u_n read as sqrt(n)
    assert "lr.adam = sqrt(n)*_u_n + n" in text
    code, stdout, _ = run(capsys, "equiv", "--strict", path, out)
    assert code == 0 and "exactly equivalent" in stdout


def test_hypers_named_like_reserved_symbols_do_not_collide():
    from mupspec.symbolic import class_exponents

    spec = parse_and_resolve("parametrization c\nwidth d\nhyper n = 2\nhyper n_ = 3\n"
                             "hidden { mult = (n - n_)*d }\n")
    assert class_exponents(spec, "hidden", exact=True).a == -1  # n - n_ is a nonzero constant, not 0


def test_equiv_compares_values_where_it_claims_exact_equivalence(tmp_path, capsys):
    a = write(tmp_path, "parametrization a\nhidden { mult = 2*sqrt(n) + n }\n", "a.mup")
    b = write(tmp_path, "parametrization b\nhidden { mult = n }\n", "b.mup")
    code, out, _ = run(capsys, "equiv", a, b)
    assert code == 0 and "values of these invariants differ" in out and "exactly" not in out
    code, out, _ = run(capsys, "equiv", "--strict", a, b)
    assert code == 1 and "not equivalent" in out
    code, out, _ = run(capsys, "equiv", "--strict", a, a)
    assert code == 0 and "exactly equivalent" in out


# ---------------------------------------------------------------- positions


def test_invalid_utf8_is_reported_at_its_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.mup"
    path.write_bytes(b"parametrization x\nhidden { mult = 1 }\n  \xff\n")
    code, _, err = run(capsys, "check", path)
    assert code == 2 and located(err, str(path), 3, 3) and "not UTF-8" in err
    code, _, err = run(capsys, "codegen", path)  # load_spec reads files itself
    assert code == 2 and located(err, str(path), 3, 3)


def test_an_unreadable_base_is_reported_at_its_extends(tmp_path, capsys):
    (tmp_path / "base.mup").write_bytes(b"parametrization base\n\xff\n")
    path = write(tmp_path, 'parametrization d extends "base.mup"\n', "d.mup")
    code, _, err = run(capsys, "check", path)
    assert code == 2 and located(err, path, 1, 27), err
    assert 'extends "base.mup"' in err  # the source line under the caret


def test_a_long_sum_is_blamed_at_its_own_span(tmp_path, capsys):
    path = write(tmp_path, "parametrization s\nhidden {\n  mult = " + "+".join(["n"] * 2000) + "\n}\n")
    code, _, err = run(capsys, "check", path)
    assert code == 2 and located(err, path, 3, 10), err  # was 1:1
    assert "nested more than 1000 levels" in err


def test_expressions_1000_levels_deep_go_through_every_command(tmp_path, capsys):
    path = write(tmp_path, "parametrization deep\nhidden { mult = " + "+".join(["n"] * 999) + " }\n")
    for argv in (["check", path], ["parse", "--json", path], ["table", path], ["codegen", path],
                 ["convert", path, "--to", "table3"], ["fmt", "--check", path]):
        code, _, err = run(capsys, *argv)
        assert code in (0, 1), (argv, err)


# ---------------------------------------------------------------- output paths and atomic writes


@pytest.mark.parametrize("target", ["/nonexistent-dir/x.mup", "/dev/full", "DIR"])
def test_convert_refuses_a_bad_output_before_working(tmp_path, capsys, target):
    target = str(tmp_path) if target == "DIR" else target
    code, out, err = run(capsys, "convert", ROOT / "specs/sp.mup", "--to", "table3", "-o", target)
    assert code == 2 and "cannot write" in err and "Traceback" not in err
    assert out == ""


def test_verify_checks_its_outputs_before_training(capsys):
    for flag, target in (("--csv", "/nonexistent-dir/x.csv"), ("--plot", "/etc/passwd"), ("--csv", "/dev/full")):
        start = time.perf_counter()
        code, _, err = run(capsys, "verify", ROOT / "specs/sp.mup", flag, target)
        assert code == 2 and flag in err
        assert time.perf_counter() - start < 5  # refused before any network was built


def test_experiment_out_that_is_a_file_is_a_clear_error(capsys):
    pytest.importorskip("torch")
    code, _, err = run(capsys, "experiment", "spiral", "--out", "/etc/passwd")
    assert code == 2 and "--out /etc/passwd" in err and "not a folder" in err


def _full_disk(monkeypatch):
    """Every file mupspec's writer opens takes 100 characters, then fails
    with ENOSPC: what a full disk does to a write."""
    from mupspec import atomic

    real_open = open

    class FullDisk:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[:100])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            self.file.flush()

    monkeypatch.setattr(atomic, "open", FullDisk, raising=False)


def test_fmt_on_a_full_disk_leaves_the_spec_intact(tmp_path, capsys, monkeypatch):
    original = (ROOT / "specs/mup_table8.mup").read_text(encoding="utf-8")
    messy = original.replace("  ", "      ")  # not canonical: fmt will rewrite it
    path = tmp_path / "t8.mup"
    path.write_text(messy, encoding="utf-8")
    _full_disk(monkeypatch)
    code, _, err = run(capsys, "fmt", path)
    assert code == 2 and "No space left" in err, err
    assert path.read_text(encoding="utf-8") == messy  # was: truncated in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t8.mup"]  # no temporary file left behind


def test_writes_are_atomic_against_an_injected_failure(tmp_path, monkeypatch):
    from mupspec.commands import _io

    target = tmp_path / "out.py"
    target.write_text("old\n", encoding="utf-8")

    def boom(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_io.os, "fsync", boom)
    with pytest.raises(MupError, match="Input/output error"):
        _io.write_atomic(target, "new\n" * 1000)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.py"]


def test_fmt_keeps_the_files_permissions(tmp_path, capsys):
    path = tmp_path / "sp.mup"
    path.write_text((ROOT / "specs/sp.mup").read_text(encoding="utf-8").replace("  ", "    "), encoding="utf-8")
    path.chmod(0o640)
    code, _, err = run(capsys, "fmt", path)
    assert code == 0, err
    assert path.stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------- verify's sizes


@pytest.mark.parametrize("args,message", [
    (["--widths", "64,1000000000"], "largest network"),
    (["--widths", "64,12345678901234567890123"], "largest network"),
    (["--depths", "1000000"], "largest network"),
    (["--steps", "1000000000"], "hours of compute"),
    (["--seeds", "1000000000"], "hours of compute"),
    (["--tol", "nan"], "--tol must be a finite number"),
    (["--tol", "-1"], "--tol must be a finite number"),
])
def test_verify_refuses_absurd_sizes_up_front_with_the_estimate(capsys, args, message):
    start = time.perf_counter()
    code, _, err = run(capsys, "verify", ROOT / "specs/sp.mup", *args)
    assert code == 2 and message in err, err
    assert time.perf_counter() - start < 5


def test_the_default_verify_grid_is_not_refused():
    from mupspec.commands.verify import estimate

    memory, seconds = estimate((64, 128, 256, 512, 1024), (3, 4, 6), 3, 2)
    assert memory < 1e9 and seconds < 60


# ---------------------------------------------------------------- exit codes


def test_an_internal_error_exits_70_and_asks_for_a_report(capsys, monkeypatch):
    import mupspec.commands.check as check_command

    def crash(args):
        raise KeyError("boom")

    monkeypatch.setattr(check_command, "run", crash)
    code, _, err = run(capsys, "check", ROOT / "specs/sp.mup")
    assert code == EXIT_INTERNAL == 70
    assert "internal error" in err and "report" in err and "Traceback" not in err


def test_exit_codes_distinguish_verdicts_usage_and_bad_input(tmp_path, capsys):
    assert run(capsys, "check", ROOT / "specs/sp.mup")[0] == 1          # a verdict
    assert run(capsys, "check", tmp_path / "missing.mup")[0] == 2       # bad input
    with pytest.raises(SystemExit) as usage:
        main(["check", "--format", "yaml", str(ROOT / "specs/sp.mup")])
    assert usage.value.code == 2


# ---------------------------------------------------------------- linear time


def _growth(parse, small: str, large: str) -> float:
    """How many times longer `large` takes to parse than `small`: the least
    CPU time of this thread over five parses of each, garbage collection off.
    Thread time leaves out the time another process held the core, which made
    a wall-clock ratio of 4x read as 8x on a busy CI machine."""
    def least(text):
        times = []
        for i in range(5):
            variant = text + "#\n" * (i + 1)  # distinct texts: parses are cached
            gc.collect()
            gc.disable()
            try:
                start = time.thread_time()
                parse(variant)
                times.append(time.thread_time() - start)
            finally:
                gc.enable()
        return min(times)
    parse(small)  # warm
    return least(large) / least(small)


def test_parse_time_is_linear_in_declarations():
    """4,000 hypers took 20 s (line starts recomputed per declaration): 8x
    the declarations must take about 8x the time, not 64x."""
    def spec(k):
        return "parametrization h\n" + "".join(f"hyper h{i} = {i + 1}\n" for i in range(k)) + "hidden { mult = h1 }\n"
    growth = _growth(parse_and_resolve, spec(500), spec(4000))
    assert growth < 20, growth  # 8x the declarations: linear 8x, the old quadratic code ~64x


def test_comment_attachment_is_linear():
    """Each comment was matched against every node (10,000 commented
    declarations: minutes); it is now looked up by line."""
    def spec(k):
        return "parametrization c\n" + "".join(f"# lead {i}\nhyper h{i} = {i + 1}  # note {i}\n" for i in range(k)) + \
            "hidden { mult = h1 }  # block\n"
    growth = _growth(parse_and_resolve, spec(300), spec(2400))
    assert growth < 20, growth  # 8x the declarations: linear 8x, matching every node ~64x
    parsed = parse_and_resolve(spec(2400))
    assert parsed.hyper("h2399").comments == (" lead 2399",) and parsed.hyper("h2399").note == " note 2399"
    assert parsed.block("hidden").note == " block"


def test_rendering_many_diagnostics_reads_the_source_once(tmp_path, monkeypatch):
    path = write(tmp_path, "parametrization d\nhidden {\n" + "  mult = 1\n" * 3000 + "}\n")
    with pytest.raises(MupError) as err:
        parse_and_resolve(Path(path).read_text(encoding="utf-8"), path)
    reads = []
    real = Path.read_bytes

    def counting(self):
        reads.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    text = render_all(err.value, color=False)
    assert text.count("duplicate rule") == 2999
    assert len(reads) == 1


def test_max_and_min_of_terms_of_either_sign_take_the_term_that_wins_at_large_width(tmp_path, capsys):
    """max(-4.5, n - 1238) reached sympy's limit, which raised a TypeError
    inside itself (exit 70, found by benchmarks/fuzz.py); at large width the
    second term wins: a verdict, like any spec."""
    import sympy

    from mupspec.symbolic import leading_term
    n = sympy.Symbol("n", positive=True)
    assert leading_term(sympy.Max(sympy.Rational(-9, 2), n - 1238), n) == (1, 1)
    assert leading_term(sympy.Min(sympy.Rational(-9, 2), n - 1238), n) == (sympy.Rational(-9, 2), 0)
    assert leading_term(sympy.Max(-n, -n ** 2), n) == (-1, 1)
    assert leading_term(sympy.Min(2 * n, 3 * n, n ** 2), n) == (2, 1)
    path = write(tmp_path, "parametrization m\nhidden {\n  lr.adam = max(-4.5, n - 1238)\n}\n")
    code, _, err = run(capsys, "check", path)
    assert code == 1 and "internal error" not in err


def test_sympy_failing_inside_its_limit_is_a_located_error(monkeypatch):
    import sympy

    from mupspec.symbolic import leading_term

    def broken(*args, **kwargs):
        raise TypeError("Expr._eval_nseries() missing 1 required positional argument: 'cdir'")
    monkeypatch.setattr(sympy, "limit", broken)
    n = sympy.Symbol("n", positive=True)
    with pytest.raises(MupError, match="cannot find the width/depth exponent"):
        leading_term(sympy.log(n) + n ** 3 + 1, n)


def test_cancelling_high_powers_are_fast(tmp_path, capsys):
    path = write(tmp_path, "parametrization p\nhidden { mult = (n+1)^64 - n^64 }\n")
    start = time.perf_counter()
    code, out, _ = run(capsys, "check", path)
    assert time.perf_counter() - start < 5  # was 15 s in sympy's limit
    assert code == 1
    from mupspec.symbolic import class_exponents
    from mupspec.resolve import load_spec
    assert class_exponents(load_spec(path), "hidden", exact=True).a == -63


def test_cancelling_radicals_are_fast_and_exact(tmp_path, capsys):
    # sympy's limit of log|f|/log(n) ran for minutes on these; the series in 1/n is instant
    path = write(tmp_path, "parametrization p\nhidden { init.var = sqrt(n^2 + 2*n + 1) - n }\n")
    code, out, _ = run(capsys, "check", path)
    assert code == 1 and "found 0, needed 1/2" in out
    from mupspec import symbolic
    import sympy
    n = symbolic._constants()["N"]
    assert symbolic.leading_term(sympy.sqrt(n**2 + 1) - n) == (sympy.Rational(1, 2), -1)
    assert symbolic.leading_term(sympy.sqrt(n**2 + 2*n + 1) - n - 1)[1] == -sympy.oo   # exactly zero
    assert symbolic.leading_term(sympy.sqrt(n**2 + 2*n + 1) - n - 1 + n**-40) == (1, -40)


def test_a_scale_that_cancels_beyond_every_order_tried_is_refused():
    import sympy

    from mupspec import symbolic
    from mupspec.errors import MupError

    n = symbolic._constants()["N"]
    with pytest.raises(MupError, match="cancels to every order"):   # differs only at n^-101
        symbolic.leading_term(sympy.sqrt(n**2 + 1) - sympy.sqrt(n**2 + 1 - n**-100))


def test_fmt_through_a_symlink_keeps_the_link(tmp_path, capsys):
    real = tmp_path / "real.mup"
    real.write_text((ROOT / "specs/sp.mup").read_text(encoding="utf-8").replace("  ", "    "), encoding="utf-8")
    link = tmp_path / "link.mup"
    link.symlink_to(real)
    code, _, err = run(capsys, "fmt", link)
    assert code == 0, err
    assert link.is_symlink() and real.read_text(encoding="utf-8") == (ROOT / "specs/sp.mup").read_text(encoding="utf-8")


def test_convert_and_codegen_refuse_a_scale_negative_through_a_hyper(tmp_path, capsys):
    """Found by the campaign (benchmarks/fuzz.py, minimized): a rule negative
    only through a hyperparameter passed validation, and `convert --to table9`
    wrote a spec with a negative init.var (caught by convert's self-check: exit 70)."""
    path = write(tmp_path, "parametrization z\nhyper u = 4\nbias { init.var = -(u/2); lr.sgd = u }\n")
    for argv in (["convert", path, "--to", "table9"], ["codegen", path]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and "negative" in err and located(err, path, 3), err


# Every line break of str.splitlines but "\n": a comment runs to the next
# "\n", so the parser keeps them in its text; an editor or a universal-newline
# reader breaks the line there and reads the comment's tail as spec text.
LINE_BREAKS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def _every_comment_broken(brk: str) -> str:
    return (f"# lead{brk}more\nparametrization p  # head{brk}er\nwidth n  # wid{brk}th\n"
            f"hidden {{  # blo{brk}ck\n  # ru{brk}le\n  mult = 1  # no{brk}te\n  # clo{brk}se\n}}\n# en{brk}d\n")


@pytest.mark.parametrize("brk", LINE_BREAKS)
def test_fmt_splits_comments_at_every_line_break(tmp_path, capsys, brk):
    """Found by the campaign: a carriage return in a comment was printed as
    is, so the written file read back line by line (an editor, Python's
    text mode) had spec text where the comment went on. The printer writes
    each piece of such a comment as a comment of its own."""
    path = tmp_path / "x.mup"
    path.write_bytes(_every_comment_broken(brk).encode("utf-8"))
    code, _, err = run(capsys, "fmt", path)
    assert code == 0, err
    written = path.read_bytes().decode("utf-8")
    assert written.splitlines() == written.split("\n")[:-1]  # no line break but "\n" left
    for word in ("lead", "more", "head", "er", "wid", "th", "blo", "ck", "ru", "le", "no", "te", "clo", "se",
                 "en", "d"):
        assert re.search(rf"# {word}$", written, re.MULTILINE), word  # every piece kept, as a comment
    assert open(path, encoding="utf-8").read() == written  # a universal-newline reader sees the same text
    assert run(capsys, "fmt", "--check", path)[0] == 0  # one fmt is enough: the second changes nothing
    assert run(capsys, "parse", path)[0] == 0


def test_fmt_of_the_campaigns_carriage_return_reproducer(tmp_path, capsys):
    data = (ROOT / "tests/data/fmt_cr_comment.mup").read_bytes()
    assert b"\r" in data
    path = tmp_path / "x.mup"
    path.write_bytes(data)
    code, _, err = run(capsys, "fmt", path)
    assert code == 0, err  # was: left as it was, or (before the guard) a file that breaks in an editor
    written = path.read_bytes()
    assert b"\r" not in written and b"Prog\n# rams IV" in written
    assert open(path, encoding="utf-8").read() == written.decode("utf-8")


def test_fmt_refuses_to_write_text_that_does_not_parse(tmp_path, capsys, monkeypatch):
    """The guard kept from the carriage-return finding: whatever the printer
    writes must parse back, or fmt exits 70 and leaves the file as it was."""
    import mupspec.commands.fmt as fmt_command
    text = "parametrization p\nhidden {\n    mult = 1\n}\n"
    path = write(tmp_path, text)
    monkeypatch.setattr(fmt_command, "format_spec", lambda spec: "parametrization p\nhidden {\n")
    code, _, err = run(capsys, "fmt", path)
    assert code == EXIT_INTERNAL and "does not parse" in err
    assert Path(path).read_text(encoding="utf-8") == text


@pytest.mark.parametrize("brk", LINE_BREAKS)
@pytest.mark.parametrize("quoted", ['parametrization p "my{}title"\n', 'parametrization p extends "base{}.mup"\n',
                                    'parametrization p "esc\\{}aped"\n'])
def test_a_line_break_in_a_quoted_string_is_an_unclosed_quote(tmp_path, capsys, brk, quoted):
    """A title or path may not hold a line break of any kind: the printer
    could not write it on one line. Refused at the opening quote."""
    text = quoted.format(brk)
    path = tmp_path / "q.mup"
    path.write_bytes(text.encode("utf-8"))
    code, _, err = run(capsys, "parse", path)
    assert code == 2, err
    assert "unclosed quote" in err and located(err, str(path), 1, text.index('"') + 1)

"""mupspec.testing: scaling-law property tests for your own test suite.

Hypothesis strategies and assertions (public API; imports torch and sympy):

    from hypothesis import given, settings
    from mupspec.testing import scaling_specs, assert_scaling

    @settings(max_examples=5, deadline=None)
    @given(scaling_specs(optimizers=("adam",)))
    def test_drawn_specs_scale_as_predicted(spec):
        assert_scaling(spec, optimizers=("adam",))

- `scaling_specs()`   specs drawn around known parametrizations (SP, μP, NTK,
                      mean-field, SP with LR 1/n): a random Lemma J.1 shift
                      per class (same invariants, different table) and,
                      optionally, a smaller LR for one class (leaves μP);
                      by default only specs the checker calls stable.
- `widths()`, `seeds()`  grids for a measurement.
- `assert_scaling(spec, ...)`  measure real networks built from the spec and
                      assert every fitted width exponent is within `tol` of
                      the checker's prediction (or of `expect`'s).
- `assert_exponent(xs, values, expected, tol)`  the log-log slope of your own
                      measurements (e.g. your model's activations vs width).
- `assert_coord_check(make_model, spec, ...)`  the coordinate check of your
                      own model (`make_model(width) -> nn.Module`, see
                      docs/coord-check.md): every role's fitted width exponent
                      agrees with check's prediction for the spec (or `expect`).

`expect` (both assertions): a parametrization class by name (`"muP"`, `"SP"`,
`"NTK"`, `"mean-field"`, `"Depth-muP"`, `"CompleteP"`, `"u-muP"`; any case:
mupspec.bundled.CLASSES), a spec file, or an ir.Spec.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from hypothesis import strategies as st

from mupspec import ir
from mupspec.bundled import DIR as SPECS_DIR
from mupspec.resolve import load_expected, load_spec, parse_and_resolve

BASES = ("sp", "mup_table3", "ntk", "mean_field", "sp_lr_inv_width")
_SHIFTS = tuple(Fraction(k, 2) for k in range(-2, 3))  # J.1 exponents t in {-1, -1/2, 0, 1/2, 1}
_LR_CUTS = (Fraction(0), Fraction(1, 2), Fraction(1))


def widths(min_size: int = 3, max_size: int = 5, smallest: int = 32, largest: int = 1024):
    """Sorted powers of two spanning at least a factor 8 (slopes need range)."""
    pool = [w for w in (2 ** k for k in range(4, 13)) if smallest <= w <= largest]
    return (st.lists(st.sampled_from(pool), min_size=min_size, max_size=max_size, unique=True)
            .map(sorted).filter(lambda ws: ws[-1] >= 8 * ws[0]).map(tuple))


def seeds(min_size: int = 2, max_size: int = 4):
    return st.lists(st.integers(0, 2 ** 16), min_size=min_size, max_size=max_size, unique=True).map(tuple)


def _exponents(name: str) -> dict:
    from mupspec import symbolic

    return symbolic.spec_exponents(load_spec(SPECS_DIR / f"{name}.mup"))


def _power(exponent) -> str:
    """`n^k` as spec text for a rational k (decimal literal, never eval'd)."""
    k = Fraction(str(exponent))
    if k == 0:
        return "1"
    text = f"{float(abs(k)):g}"
    return f"n^{text}" if k > 0 else f"1/n^{text}"


def spec_text(name: str, exponents: dict, optimizers: tuple[str, ...]) -> str:
    """A spec whose class `k` has multiplier n^-a, init std n^-b, LRs n^-c."""
    lines = [f'parametrization {name} "drawn by mupspec.testing"', "", "width n", ""]
    for kind, e in exponents.items():
        rules = [f"init.var = {_power(-2 * e.b)}", f"mult = {_power(-e.a)}"]
        rules += [f"lr.{opt} = {_power(-e.c(opt))}" for opt in optimizers]
        lines += [f"{kind} {{"] + [f"  {r}" for r in rules] + ["}", ""]
    return "\n".join(lines)


@st.composite
def scaling_specs(draw, bases=BASES, optimizers=("sgd", "adam"), stable_only: bool = True,
                  leave_mup: bool = True) -> ir.Spec:
    """A resolved spec near a known parametrization (see module doc). Bases
    that do not cover any of `optimizers` are skipped."""
    from mupspec import check

    base = draw(st.sampled_from(bases))
    ex = _exponents(base)
    covered = tuple(o for o in ir.optimizers(load_spec(SPECS_DIR / f"{base}.mup")) if o in optimizers)
    if not covered or any(str(e.b) == "oo" for e in ex.values()):
        from hypothesis import assume
        assume(False)
    shifted = {}
    for kind, e in ex.items():
        t = draw(st.sampled_from(_SHIFTS))  # Lemma J.1: (a, b, c) -> (a+t, b-t, c-2t | c-t)
        shifted[kind] = replace(e, a=e.a + t, b=e.b - t, c_sgd=e.c_sgd - 2 * t, c_adam=e.c_adam - t)
    if leave_mup and draw(st.booleans()):
        kind = draw(st.sampled_from(sorted(shifted)))
        cut = draw(st.sampled_from(_LR_CUTS))  # a smaller LR never destabilizes
        e = shifted[kind]
        shifted[kind] = replace(e, c_sgd=e.c_sgd + cut, c_adam=e.c_adam + cut)
    spec = parse_and_resolve(spec_text(f"drawn_{base}", shifted, covered))
    if stable_only:
        from hypothesis import assume
        assume(all(r.regime != "unstable" for r in check.check_spec(spec).results.values()))
    return spec


def assert_scaling(spec, *, expect=None, widths=(64, 128, 256, 512, 1024), depths=(3,), seeds=(0, 1, 2),
                   steps: int = 1, optimizers=None, tol: float = 0.2, arch: str = "auto"):
    """Measure networks built from `spec` (an ir.Spec or a path) and assert
    that every width exponent check predicts for it (or for `expect`) is
    matched within `tol`. Returns the comparison rows."""
    from mupspec.commands.verify import render, verify_spec

    spec = load_spec(spec) if isinstance(spec, (str, Path)) else spec
    expect = load_expected(expect)  # a class name (muP, SP, ...), a path or a spec
    rows, *_ = verify_spec(spec, expect, widths=widths, depths=depths, seeds=seeds, steps=steps,
                           arch=arch, optimizers=optimizers, tol=tol)
    failed = [r for r in rows if not r.agrees]
    if failed or not rows:
        raise AssertionError("scaling differs from the prediction\n" +
                             render(rows, f"assert_scaling({spec.name})", tol, False))
    return rows


def assert_exponent(xs, values, expected: float, tol: float = 0.1) -> float:
    """Assert that `values` scale as xs^expected (log-log least squares)."""
    from mupspec.empirical.fit import slope

    k = slope(list(xs), list(values))
    if not abs(k - expected) <= tol:
        raise AssertionError(f"fitted exponent {k:+.3f}, expected {expected:+.3f} ± {tol}")
    return k


def assert_coord_check(make_model, spec, widths=(64, 128, 256, 512), *, expect=None, tol: float = 0.2, **kwargs):
    """Coordinate-check your own model (mupspec.empirical.coord.coord_check:
    `spec` parametrizes it unless `as_is=True`; `make_input`, `optimizer`,
    `steps`, `seeds`, ... pass through) and assert that every compared width
    exponent is within `tol` of the prediction. Returns the CoordResult."""
    from mupspec.empirical.coord import coord_check

    result = coord_check(make_model, widths, spec=spec, expect=expect, tol=tol, **kwargs)
    if not result.ok:
        raise AssertionError("coordinate check failed\n" + result.render())
    return result

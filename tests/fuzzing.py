"""The fuzz harness: inputs drawn from the grammar, from the spec strategies
and from mutations of the bundled specs, run in-process through every
command, each outcome classified. Used by tests/test_fuzz.py (a CI slice)
and benchmarks/fuzz.py (a campaign of N inputs).

An input is a `.mup` text. Each one goes through `mupspec` as a user would
call it (`cli.main`, in-process): parse (text, --json), fmt (--check and a
rewrite of a copy), check in every format, convert to every named form,
equiv against a bundled spec, table in every format, codegen. For codegen
the written module must compile, contain only what a generated module may
(`check_module`: an AST whitelist over the spec-derived part, the runtime
byte-identical), import, and its rules evaluate to finite reals or raise
the runtime's own ValueError. Failures, by kind:
  traceback    an exit code other than 0, 1, 2 (70: an internal error) or
               an exception escaping `main`
  unlocated    exit 2 with an error message without `file:line:col` where
               the input file has positions, or an empty message
  bad_module   codegen exited 0 but the module does not compile, breaks
               the whitelist, does not import, or a rule misbehaves
  fmt          fmt rewrote a file into something that no longer parses the same
  slow         one command on one input took more than SLOW_S seconds
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SPEC_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.mup"))}
SLOW_S = 2.0

# (name, argv after the file) -- FILE is substituted by the input's path.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("parse", ("parse", "FILE")),
    ("parse --json", ("parse", "--json", "FILE")),
    ("fmt --check", ("fmt", "--check", "FILE")),
    ("check", ("check", "FILE")),
    ("check --format json", ("check", "--format", "json", "FILE")),
    ("check --format markdown", ("check", "--format", "markdown", "FILE")),
    ("convert --to table3", ("convert", "FILE", "--to", "table3")),
    ("convert --to table8", ("convert", "FILE", "--to", "table8")),
    ("convert --to table9", ("convert", "FILE", "--to", "table9")),
    ("convert --to unit", ("convert", "FILE", "--to", "unit")),
    ("equiv", ("equiv", "FILE", "mup_table8.mup")),
    ("table", ("table", "FILE")),
    ("table --format latex", ("table", "--format", "latex", "--invariants", "FILE")),
    ("codegen", ("codegen", "FILE", "-o", "OUT")),
    ("fmt", ("fmt", "FILE")),  # last: it rewrites the file
)


@dataclass
class Failure:
    kind: str
    command: str
    text: str
    detail: str


@dataclass
class Tally:
    """What a campaign saw: inputs, command runs per command and exit code,
    failures, and the slowest (input, command) pairs."""

    inputs: int = 0
    runs: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    slowest: list[tuple[float, str, str]] = field(default_factory=list)
    modules: int = 0  # generated modules compiled, checked, imported and called

    def record(self, command: str, code: int, seconds: float, text: str) -> None:
        per = self.runs.setdefault(command, {})
        per[code] = per.get(code, 0) + 1
        self.slowest.append((seconds, command, text))
        if len(self.slowest) > 200:
            self.slowest = sorted(self.slowest, reverse=True)[:10]

    def top_slowest(self, k: int = 10) -> list[tuple[float, str, str]]:
        return sorted(self.slowest, reverse=True)[:k]


# ---------------------------------------------------------------- inputs


def grammar_strings():
    """Sentences of mupspec/grammar.lark (every terminal followed by a space,
    so that keywords and names do not glue together)."""
    from hypothesis.extra.lark import from_lark

    from mupspec.parser import _lark

    parser = _lark()
    ascii_letters = st.characters(codec="ascii", blacklist_categories=("Cc",))
    explicit = {}
    for term in parser.terminals:
        if term.name == "WS":
            continue
        pattern = st.from_regex(term.pattern.to_regexp(), fullmatch=True, alphabet=ascii_letters)
        explicit[term.name] = pattern.map(lambda s: s + "\n") if term.name == "COMMENT" else pattern.map(
            lambda s: s + " ")
    return from_lark(parser, explicit=explicit)


_TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_.]*|[0-9.]+|"[^"\n]*"|#[^\n]*|\s+|.')
_JUNK = st.sampled_from(list("{}()=;.,#\"\\^*/+-\n\t 0123456789_xn") + [
    "width", "depth", "hyper", "extends", "sqrt", "fan_in", "fan_out", "init.var", "init.std", "lr.adam",
    "lr.sgd", "eps.adam", "mult", "input", "hidden", "output", "bias", "norm", "attention", "residual",
    "parametrization", "1/0", "^n", "^64", "^(1/3)", "(-1)", "n-n", "0*", "10^64", "sqrt(-", "_u_n", "ℕ",
    "\x00", "\r", "é", "\ufeff", "\u2028",
    "tie", "min(", "max(", "query", "readout", "head_dim", "d_head = 64", ", d_ff = 4*n", "tie input, output\n"])


@st.composite
def mutated_specs(draw) -> str:
    """A bundled spec with 1-4 character or token edits."""
    text = SPEC_TEXTS[draw(st.sampled_from(sorted(SPEC_TEXTS)))]
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):  # token-level: drop, duplicate, replace
            tokens = _TOKEN.findall(text)
            i = draw(st.integers(0, len(tokens) - 1))
            action = draw(st.sampled_from(["drop", "dup", "replace"]))
            tokens[i] = {"drop": "", "dup": tokens[i] * 2, "replace": draw(_JUNK)}[action]
            text = "".join(tokens)
        else:  # character-level: delete, insert, replace
            i = draw(st.integers(0, max(0, len(text) - 1)))
            action = draw(st.sampled_from(["delete", "insert", "replace"]))
            junk = draw(_JUNK)
            text = {"delete": text[:i] + text[i + 1:], "insert": text[:i] + junk + text[i:],
                    "replace": text[:i] + junk + text[i + 1:]}[action]
    return text


def valid_specs():
    """Specs the validator accepts (tests/strategies.py), printed."""
    from mupspec.printer import format_spec
    from strategies import specs

    return specs(with_extends=False).map(format_spec)


_FIELDS = ("init.var", "init.std", "mult", "lr.sgd", "lr.adam", "wd.sgd", "wd.adam", "eps.adam", "logit")
_KINDS = ("input", "hidden", "output", "bias", "norm", "attention", "residual")


@st.composite
def wild_expressions(draw, depth: int = 0) -> str:
    """Expression text with no validity constraint: zero, negative and huge
    constants, cancelling sums, fractional powers of anything."""
    leaves = st.sampled_from(["n", "L", "a", "fan_in", "fan_out", "0", "1", "2", "0.5", "64", "10^64",
                              "(-8)", "(-1)", "n", "n", "fan_in"])
    if depth > 3 or draw(st.integers(0, 2)) == 0:
        return draw(leaves)
    op = draw(st.sampled_from(["+", "-", "*", "/", "^", "neg", "sqrt"]))
    left = draw(wild_expressions(depth + 1))
    if op == "neg":
        return f"-{left}"
    if op == "sqrt":
        return f"sqrt({left})"
    if op == "^":
        exponent = draw(st.sampled_from(["2", "(1/2)", "(1/3)", "(-1)", "64", "(-64)", "(3/2)", "0", "n"]))
        return f"({left})^{exponent}"
    return f"({left} {op} {draw(wild_expressions(depth + 1))})"


@st.composite
def wild_specs(draw) -> str:
    """Well-formed text whose values are anything: what validation must catch."""
    lines = ["parametrization wild"]
    if draw(st.booleans()):
        lines.append("depth L")
    lines.append(f"hyper a = {draw(wild_expressions(2))}")
    for kind in draw(st.lists(st.sampled_from(_KINDS), max_size=4, unique=True)):
        rules = [f"  {f} = {draw(wild_expressions())}" for f in draw(st.lists(st.sampled_from(_FIELDS),
                                                                              max_size=3, unique=True))]
        lines.append(f"{kind} {{\n" + "\n".join(rules) + "\n}")
    return "\n".join(lines) + "\n"


def inputs():
    """Every generator, equally weighted."""
    return st.one_of(grammar_strings(), mutated_specs(), valid_specs(), wild_specs())


# ---------------------------------------------------------------- running


def run_command(argv: list[str]) -> tuple[int, str, str]:
    from mupspec.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: not expected with these argv
            code = exit_.code if isinstance(exit_.code, int) else 2
        except BaseException as exc:  # noqa: BLE001 -- escaping main is the bug we look for
            return -1, out.getvalue(), f"{type(exc).__name__}: {exc}"
    return code, out.getvalue(), err.getvalue()


_LOCATION = re.compile(r"^.+:\d+:\d+: (error|warning|note): ")


def _unlocated(err: str) -> bool:
    """Exit 2 must come with messages, each at `file:line:col` (every
    problem in a spec file has a position: the file's own, or the
    `extends` that names an unreadable base)."""
    heads = [line for line in err.splitlines() if re.search(r"(^|: )error: ", line) and not line.startswith(" ")]
    return not heads or any(not _LOCATION.match(line) for line in heads)


def run_input(text: str, workdir: Path, tally: Tally) -> None:
    """Run one input through every command, recording outcomes in `tally`."""
    tally.inputs += 1
    path = workdir / "fuzz.mup"
    try:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    except (UnicodeEncodeError, ValueError):
        return
    module_path = workdir / "fuzz_generated.py"
    for name, template in COMMANDS:
        argv = [str(path) if a == "FILE" else str(module_path) if a == "OUT" else
                str(workdir / a) if a.endswith(".mup") else a for a in template]
        if module_path.exists():
            module_path.unlink()
        # The slowness bound is on this process's CPU time: a long campaign
        # shares the machine, and waiting for a core is not the input's cost.
        start, start_wall = time.process_time(), time.perf_counter()
        code, out, err = run_command(argv)
        seconds, wall = time.process_time() - start, time.perf_counter() - start_wall
        tally.record(name, code, seconds, text)
        if seconds > SLOW_S:
            tally.failures.append(Failure("slow", name, text, f"{seconds:.2f} s CPU ({wall:.2f} s wall)"))
        if code not in (0, 1, 2):
            tally.failures.append(Failure("traceback", name, text, err[-2000:]))
        elif code == 2 and _unlocated(err):
            tally.failures.append(Failure("unlocated", name, text, err[-1000:]))
        elif name == "codegen" and code == 0:
            problem = check_generated(module_path, tally)
            if problem:
                tally.failures.append(Failure("bad_module", name, text, problem))
        elif name == "fmt" and code == 0:
            problem = _refmt(path, text)
            if problem:
                tally.failures.append(Failure("fmt", name, text, problem))


def _refmt(path: Path, before: str) -> str | None:
    """fmt is idempotent and keeps the meaning: the rewritten file parses to
    the same spec as the input (up to spans and comment placement)."""
    from mupspec.errors import MupError
    from mupspec.resolve import canonical, parse_as_written
    from strategies import strip_spans

    after = path.read_text(encoding="utf-8")
    before = before.removeprefix("\ufeff")   # as mupspec reads a file: a leading BOM is not text
    try:
        a = parse_as_written(before, str(path))
        b = parse_as_written(after, str(path))
    except MupError as err:
        return f"fmt output does not parse: {err}"
    drop = {"comments", "note", "end_comments"}

    def meaning(spec):
        def walk(v):
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items() if k not in drop}
            return [walk(x) for x in v] if isinstance(v, list) else v
        return walk(strip_spans(canonical(spec).model_dump()))  # fmt puts blocks in canonical order
    if meaning(a) != meaning(b):
        return "fmt changed the spec's meaning"
    return None


# ---------------------------------------------------------------- generated modules

_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub)
_RULE_NAME = re.compile(r"_[A-Za-z0-9_]+\Z")
_WIDTH_FUNCTION = re.compile(r"_width_[A-Za-z0-9_]+\Z")


def _stub_names() -> set[str]:
    """The header constants the runtime reads, as its stub declares them
    (mupspec/codegen/runtime/spec_stub.py): the whitelist follows the runtime,
    so a constant added there (MUON_BLOCKS was missed) is not a false alarm."""
    from mupspec.codegen import runtime

    tree = ast.parse((Path(runtime.__file__).parent / "spec_stub.py").read_text(encoding="utf-8"))
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


# The stub's names, and the ones only the header defines (informational).
_CONSTANT_NAMES = _stub_names() | {"SPEC_TITLE", "MUPSPEC_VERSION"}


def _runtime_text() -> str:
    from mupspec.codegen import _runtime

    return _runtime()


def check_module(source: str) -> str | None:
    """None if the module is what codegen may emit: a docstring, `import
    math` / `import torch`, the constants (literals only), rule functions
    whose bodies bind symbols from `dims`/`hypers` and return arithmetic on
    floats, names and math.sqrt, the RULES table, then the runtime verbatim."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return f"does not compile: {err}"
    runtime = _runtime_text()
    if not source.rstrip("\n").endswith(runtime.rstrip("\n")):
        return "the runtime is not copied verbatim"
    spec_part = ast.parse(source[:len(source.rstrip("\n")) - len(runtime.rstrip("\n"))])
    for node in spec_part.body:
        problem = _allowed_top(node)
        if problem:
            return f"line {getattr(node, 'lineno', '?')}: {problem}"
    del tree
    return None


def _allowed_top(node) -> str | None:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return None  # the docstring
    if isinstance(node, ast.Import):
        return None if [a.name for a in node.names] in (["math"], ["torch"]) else "imports something else"
    if isinstance(node, ast.Assign):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name) \
                or node.targets[0].id not in _CONSTANT_NAMES:
            return "assigns an unexpected name"
        if node.targets[0].id in ("RULES", "DERIVED_WIDTHS"):
            ok = isinstance(node.value, ast.Dict) and all(isinstance(v, ast.Name) and _RULE_NAME.match(v.id)
                                                          for v in node.value.values) \
                and all(isinstance(k, (ast.Constant, ast.Tuple)) for k in node.value.keys)
            return None if ok else f"{node.targets[0].id} holds something other than generated functions"
        return None if _literal(node.value) else f"{node.targets[0].id} is not a literal"
    if isinstance(node, ast.FunctionDef):
        return _allowed_rule(node)
    return f"unexpected {type(node).__name__}"


def _literal(node) -> bool:
    """A literal of strings, None and finite floats (nested in tuples and dicts)."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError):
        return False

    def ok(v) -> bool:
        if isinstance(v, dict):
            return all(ok(k) and ok(x) for k, x in v.items())
        if isinstance(v, tuple):
            return all(ok(x) for x in v)
        return v is None or isinstance(v, str) or (isinstance(v, float) and math.isfinite(v))
    return ok(value)


def _allowed_rule(fn: ast.FunctionDef) -> str | None:
    """A rule function `_<block>_<field>(fan_in, fan_out, dims, hypers)`, or a
    derived width `_width_<name>(dims)` (which may first return None when a
    width it reads is not given)."""
    args = [a.arg for a in fn.args.args]
    is_width = _WIDTH_FUNCTION.match(fn.name) and args == ["dims"]
    if not is_width and not (_RULE_NAME.match(fn.name) and args == ["fan_in", "fan_out", "dims", "hypers"]):
        return f"unexpected function {fn.name}"
    *binds, ret = fn.body
    for stmt in binds:
        if is_width and isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare) \
                and all(isinstance(n, (ast.Constant, ast.Name, ast.NotIn, ast.Compare, ast.Load)) for n in ast.walk(stmt.test)) \
                and len(stmt.body) == 1 and isinstance(stmt.body[0], ast.Return) \
                and isinstance(stmt.body[0].value, ast.Constant) and stmt.body[0].value.value is None \
                and not stmt.orelse:
            continue  # `if "d_model" not in dims: return None`
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                and re.match(r"[wdh]_[A-Za-z0-9_]+\Z", stmt.targets[0].id)):
            return f"{fn.name}: unexpected statement"
        value = stmt.value
        is_dim = isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "_dim" \
            and all(isinstance(a, (ast.Name, ast.Constant)) for a in value.args)
        is_hyper = isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) \
            and value.value.id in ("hypers", "dims") and isinstance(value.slice, ast.Constant)
        if not (is_dim or is_hyper):
            return f"{fn.name}: a symbol bound from something else"
    if not isinstance(ret, ast.Return):
        return f"{fn.name}: does not end in return"
    for node in ast.walk(ret.value):
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, *_ARITHMETIC)):
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, float) and math.isfinite(node.value):
            continue
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "math.sqrt" and len(node.args) == 1:
            continue
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "math.sqrt":
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max") \
                and len(node.args) >= 2 and not node.keywords:
            continue  # the spec's min/max: the builtins (no module-level name may shadow them)
        return f"{fn.name}: {type(node).__name__} in a rule"
    return None


_MODULE_COUNTER = [0]


def check_generated(path: Path, tally: Tally) -> str | None:
    """Compile, whitelist, import and call a generated module."""
    source = path.read_text(encoding="utf-8")
    problem = check_module(source)
    if problem:
        return problem
    _MODULE_COUNTER[0] += 1
    name = f"mupspec_fuzz_module_{_MODULE_COUNTER[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001
        return f"does not import: {type(err).__name__}: {err}"
    tally.modules += 1
    dims = {w: 256 for w in module.WIDTH_SYMBOLS} | ({module.DEPTH_SYMBOL: 4} if module.DEPTH_SYMBOL else {})
    for (block, fld) in [k for k in module.RULES if isinstance(k, tuple)]:
        for fan_in, fan_out in ((256, 256), (3, 256), (256, 1), (1, 256)):
            try:
                value = module._value(block, fld, fan_in, fan_out, dims, module.HYPER_DEFAULTS)
            except ValueError:
                continue  # the runtime's own message (a zero division or non-finite value at these sizes)
            except Exception as err:  # noqa: BLE001
                return f"rule {block}.{fld} raised {type(err).__name__}: {err}"
            if not isinstance(value, float) or not math.isfinite(value):
                return f"rule {block}.{fld} = {value!r}"
    return None


def warm_up(workdir: Path) -> None:
    """One bundled spec through every command, not counted: the first
    run of a command imports sympy or torch, which is not the input's time."""
    run_input(SPEC_TEXTS["mup_table8.mup"], workdir, Tally())


def fresh_workdir(base: Path) -> Path:
    """A folder holding the bundled specs (for `extends sp` and equiv)."""
    base.mkdir(parents=True, exist_ok=True)
    for name in SPEC_TEXTS:
        shutil.copy(SPECS / name, base / name)
    return base


def ensure_importable() -> None:
    """tests/ on sys.path (strategies.py), the repository root too."""
    for p in (str(ROOT / "tests"), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)

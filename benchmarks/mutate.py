"""Mutation testing of mupspec's verdict core, with nothing beyond pytest.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/mutate.py mupspec/check.py --sample 60 --seed 1 --skip-display

Each mutant changes one thing in a target module: an arithmetic operator
(`+` <-> `-`, `*` <-> `/`, `**` -> `*`), a comparison (`<` <-> `<=`,
`==` <-> `!=`, `in` <-> `not in`), `and` <-> `or`, a dropped unary `-` or
`not`, a constant (n -> n+1, True <-> False, "s" -> "XXsXX"), `min` <-> `max`,
`all` <-> `any`, or a `return x` that returns None. A mutant is killed when a
test fails (or hangs past the timeout) with it in place; the score is
killed / run.

How it runs (one process, so sympy, pydantic and the tests import once):
pytest collects the test files in-process; every test runs once with each
function of the targets recording that it was called (a call inserted at the
top of its code), which maps each function to the tests that reach it.
Then, per mutant, a forked child swaps the mutated function's code object in
(`func.__code__`: every reference to the function sees it, `from m import f`
included), clears the targets' caches, and runs the tests that reach that
function, fastest first, stopping at the first failure. A mutant in a
function default, a dataclass field default or a module-level statement is
applied by re-evaluating that default or statement (and the module-level
statements after it), and the rebound names are replaced in every module of
the repository that imported them.

Display-only mutants (`--skip-display` leaves them out, and says how many):
inside a `raise`, in the arguments of Diagnostic / MupError / an exception,
a string or f-string with a space in it (messages, hints, notes), a Term's
display name, and lines or whole functions marked `# mutate: display`.
Docstrings, annotations, decorators and class bases are never mutated.
"""

from __future__ import annotations

import __future__
import argparse
import ast
import copy
import functools
import inspect
import json
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = os.fdopen(os.dup(2), "w", buffering=1)  # stderr as it was before pytest captured it
DEFAULT_TESTS = ("tests/test_check.py", "tests/test_check_properties.py", "tests/test_check_families.py",
                 "tests/test_check_beyond.py", "tests/test_alignment.py", "tests/test_symbolic.py",
                 "tests/test_convert.py", "tests/test_convert_properties.py", "tests/test_table.py",
                 "tests/test_reliability.py", "tests/test_mutation_kills.py")
PRAGMA = "# mutate: display"
DISPLAY_CALLS = {"Diagnostic", "MupError", "print", "warn"}
MODULE_SCOPE = "<module>"

BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr,
          ast.BitXor: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift}
CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
BOOLOPS = {ast.And: ast.Or, ast.Or: ast.And}
SWAPPED_CALLS = {"min": "max", "max": "min", "all": "any", "any": "all"}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
          ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
          ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
          ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or",
          ast.USub: "-", ast.UAdd: "+", ast.Not: "not ", ast.Invert: "~"}


# ---------------------------------------------------------------- where a node is


@dataclass(frozen=True)
class Where:
    """What a node belongs to: `scope` is the top-level function or method
    ("f", "Cls.m"), "Cls" for a class-body statement, or MODULE_SCOPE;
    `how` says how a mutant there is applied: code | defaults | class | module."""

    scope: str
    how: str
    display: bool = False
    stmt: int = -1          # index of the module-level statement
    attr: str = ""          # class attribute a class-body statement assigns


def _is_docstring(stmt: ast.stmt, index: int) -> bool:
    return index == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _is_display_text(node: ast.AST) -> bool:
    """A message, hint or label: a string (or f-string) with a space in it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(c.isspace() for c in node.value)
    if isinstance(node, ast.JoinedStr):
        return any(_is_display_text(v) for v in node.values)
    return False


class Walker:
    """Every mutable node of a module, in a fixed order, with its Where."""

    def __init__(self, source: str):
        self.tree = ast.parse(source)
        self.pragma_lines = {i for i, line in enumerate(source.splitlines(), 1) if PRAGMA in line}

    def nodes(self):
        for i, stmt in enumerate(self.tree.body):
            if _is_docstring(stmt, i) or isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from self._function(stmt, stmt.name, stmt, None, i)
            elif isinstance(stmt, ast.ClassDef):
                for j, inner in enumerate(stmt.body):
                    if _is_docstring(inner, j):
                        continue
                    if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        yield from self._function(inner, f"{stmt.name}.{inner.name}", inner, stmt, i)
                    elif isinstance(inner, (ast.Assign, ast.AnnAssign)) and inner.value is not None:
                        target = inner.target if isinstance(inner, ast.AnnAssign) else inner.targets[0]
                        where = Where(stmt.name, "class", self._pragma(inner), i, getattr(target, "id", ""))
                        yield from self._walk(inner.value, inner, where)
            else:
                yield from self._walk(stmt, self.tree, Where(MODULE_SCOPE, "module", self._pragma(stmt), i))

    def _pragma(self, node: ast.AST) -> bool:
        return getattr(node, "lineno", 0) in self.pragma_lines

    def _function(self, fn, scope: str, top, cls, index: int):
        display = self._pragma(fn)
        args = fn.args
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            yield from self._walk(default, args, Where(scope, "defaults", display, index))
        yield from self._body(fn, Where(scope, "code", display, index))

    def _body(self, fn, where: Where):
        for j, stmt in enumerate(fn.body):
            if not _is_docstring(stmt, j):
                yield from self._walk(stmt, fn, where)

    def _walk(self, node: ast.AST, parent: ast.AST, where: Where):
        if self._pragma(node) or isinstance(node, ast.Raise) or (
                isinstance(node, ast.Call) and _call_name(node) in DISPLAY_CALLS | {"_not_real"}) or (
                isinstance(node, ast.Call) and _call_name(node).endswith(("Error", "Exception"))) or (
                _is_display_text(node)):
            where = Where(where.scope, where.how, True, where.stmt, where.attr)
        yield node, parent, where
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):  # nested: its own docstring
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                yield from self._walk(default, node.args, where)
            if isinstance(node, ast.Lambda):
                yield from self._walk(node.body, node, where)
            else:
                yield from self._body(node, where)
            return
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns", "decorator_list", "bases", "type_comment"):
                continue
            for k, child in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(child, ast.AST):
                    child_where = where
                    if isinstance(node, ast.Call) and _call_name(node) == "Term" and name == "args" and k == 2:
                        child_where = Where(where.scope, where.how, True, where.stmt, where.attr)
                    yield from self._walk(child, node, child_where)


# ---------------------------------------------------------------- mutants


@dataclass
class Mutant:
    path: str
    index: int        # position of the node in Walker order
    variant: str      # how to change it (see `_change`)
    line: int
    col: int
    scope: str
    how: str
    display: bool
    description: str
    status: str = ""
    seconds: float = 0.0
    tests: int = 0
    detail: str = ""  # the test that killed it, or the error applying it


def _variants(node: ast.AST, parent: ast.AST, where: Where) -> list[tuple[str, str]]:
    """(variant, description) for one node."""
    out = []
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINOPS:
        out.append(("op", f"`{SYMBOL[type(node.op)]}` -> `{SYMBOL[BINOPS[type(node.op)]]}`"))
    elif isinstance(node, ast.Compare):
        out += [(f"cmp{i}", f"`{SYMBOL[type(op)]}` -> `{SYMBOL[CMPOPS[type(op)]]}`")
                for i, op in enumerate(node.ops) if type(op) in CMPOPS]
    elif isinstance(node, ast.BoolOp):
        out.append(("op", f"`{SYMBOL[type(node.op)]}` -> `{SYMBOL[BOOLOPS[type(node.op)]]}`"))
    elif isinstance(node, ast.UnaryOp):
        out.append(("drop", f"`{SYMBOL[type(node.op)]}{ast.unparse(node.operand)}` -> `{ast.unparse(node.operand)}`"))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            out.append(("const", f"`{value}` -> `{not value}`"))
        elif isinstance(value, (int, float)):
            out.append(("const", f"`{value!r}` -> `{value + 1!r}`"))
        elif isinstance(value, str):
            out.append(("const", f"`{value!r}` -> `{'XX' + value + 'XX'!r}`"[:120]))
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        out.append(("none", f"`return {ast.unparse(node.value)}`"[:100] + " -> `return None`"))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SWAPPED_CALLS:
        out.append(("call", f"`{node.func.id}(...)` -> `{SWAPPED_CALLS[node.func.id]}(...)`"))
    return out


@functools.lru_cache(maxsize=None)
def source_of(path: str) -> str:
    """Read once: the children inherit it, so an edit during a run cannot shift the mutants."""
    return (ROOT / path).read_text()


def mutants_of(path: str) -> list[Mutant]:
    source = source_of(path)
    found = []
    for index, (node, parent, where) in enumerate(Walker(source).nodes()):
        for variant, description in _variants(node, parent, where):
            found.append(Mutant(path, index, variant, node.lineno, node.col_offset + 1, where.scope, where.how,
                                where.display, description))
    return found


def _replace_child(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
            return
        if isinstance(value, list) and any(v is old for v in value):
            value[[i for i, v in enumerate(value) if v is old][0]] = new
            return
    raise LookupError("child not found")


def _change(node: ast.AST, parent: ast.AST, variant: str) -> None:
    """Apply one variant to `node`, in place (or in `parent`)."""
    if variant == "op":
        node.op = (BINOPS if isinstance(node, (ast.BinOp, ast.AugAssign)) else BOOLOPS)[type(node.op)]()
    elif variant.startswith("cmp"):
        i = int(variant[3:])
        node.ops[i] = CMPOPS[type(node.ops[i])]()
    elif variant == "drop":
        _replace_child(parent, node, node.operand)
    elif variant == "const":
        value = node.value
        node.value = (not value) if isinstance(value, bool) else value + 1 if isinstance(value, (int, float)) \
            else "XX" + value + "XX"
    elif variant == "none":
        node.value = ast.Constant(None)
    elif variant == "call":
        node.func.id = SWAPPED_CALLS[node.func.id]


def mutated_tree(mutant: Mutant) -> tuple[ast.Module, Where]:
    walker = Walker(source_of(mutant.path))
    for index, (node, parent, where) in enumerate(walker.nodes()):
        if index == mutant.index:
            _change(node, parent, mutant.variant)
            return ast.fix_missing_locations(walker.tree), where
    raise LookupError(f"node {mutant.index} not found in {mutant.path}")


# ---------------------------------------------------------------- applying code to a live module

FLAGS = __future__.annotations.compiler_flag


def _compile_function(tree: ast.Module, where: Where, path: str):
    """The code object of top-level function or method `where.scope` in `tree`."""
    stmt = tree.body[where.stmt]
    if "." in where.scope:  # a method: compiled inside a class of the same name (its __class__ cell, mangling)
        method = next(s for s in stmt.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and s.name == where.scope.split(".")[1])
        stmt = ast.ClassDef(name=stmt.name, bases=[], keywords=[], body=[method], decorator_list=[])
    module_code = compile(ast.fix_missing_locations(ast.Module(body=[stmt], type_ignores=[])), str(ROOT / path),
                          "exec", flags=FLAGS, dont_inherit=True)
    code = next(c for c in module_code.co_consts if hasattr(c, "co_code"))
    if "." in where.scope:
        code = next(c for c in code.co_consts if hasattr(c, "co_code") and c.co_name == where.scope.split(".")[1])
    return code


def _live_function(module, scope: str):
    """The function object whose code runs for `scope` (unwrapping lru_cache, property, staticmethod)."""
    if "." in scope:
        cls_name, name = scope.split(".")
        obj = vars(getattr(module, cls_name))[name]
    else:
        obj = getattr(module, scope)
    obj = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def _set_code(fn, code) -> None:
    if fn.__code__.co_freevars != code.co_freevars:
        raise RuntimeError(f"free variables differ in {fn.__qualname__}")
    fn.__code__ = code


def _repo_modules():
    root = str(ROOT)
    return [m for m in list(sys.modules.values()) if str(getattr(m, "__file__", "") or "").startswith(root)]


def _exec_module_statements(module, tree: ast.Module, first: int, path: str) -> None:
    """Re-run the module-level statements from `first` on (not defs, classes
    or imports) and give every repository module that imported a rebound
    name the new object."""
    before = dict(vars(module))
    body = [s for i, s in enumerate(tree.body) if i >= first and not _is_docstring(s, i) and not isinstance(
        s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(body=body, type_ignores=[]), str(ROOT / path), "exec", flags=FLAGS, dont_inherit=True),
         vars(module))
    rebound = {id(before[k]): v for k, v in vars(module).items() if k in before and before[k] is not v}
    for other in _repo_modules():
        if other is not module:
            for k, v in list(vars(other).items()):
                if id(v) in rebound:
                    setattr(other, k, rebound[id(v)])


def import_time_functions(tree: ast.Module) -> tuple[set[str], int]:
    """Functions that module-level statements call (directly or through each
    other), and the index of the first statement that calls one."""
    defs = {s.name: s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    statements = [(i, s) for i, s in enumerate(tree.body) if not isinstance(
        s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))]
    names = lambda node: {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}  # noqa: E731
    called = set().union(*(names(s) for _, s in statements)) & set(defs)
    while True:
        more = set().union(set(), *(names(defs[f]) for f in called)) & set(defs)
        if more <= called:
            break
        called |= more
    firsts = [i for i, s in statements if names(s) & called]
    return called, (min(firsts) if firsts else len(tree.body))


def apply(mutant: Mutant, module) -> None:
    """Put `mutant` into the live `module`."""
    tree, where = mutated_tree(mutant)
    if where.how == "code":
        _set_code(_live_function(module, where.scope), _compile_function(tree, where, mutant.path))
        at_import, first = import_time_functions(tree)
        if where.scope in at_import:
            _exec_module_statements(module, tree, first, mutant.path)
    elif where.how == "defaults":
        fn_def = tree.body[where.stmt]
        if "." in where.scope:
            fn_def = next(s for s in fn_def.body if getattr(s, "name", None) == where.scope.split(".")[1])
        fn_def = copy.copy(fn_def)
        fn_def.decorator_list = []
        namespace = dict(vars(module))
        exec(compile(ast.Module(body=[fn_def], type_ignores=[]), str(ROOT / mutant.path), "exec", flags=FLAGS,
                     dont_inherit=True), namespace)
        fn = _live_function(module, where.scope)
        fn.__defaults__, fn.__kwdefaults__ = namespace[fn_def.name].__defaults__, namespace[fn_def.name].__kwdefaults__
    elif where.how == "class":
        stmt = next(s for s in tree.body[where.stmt].body if isinstance(s, (ast.Assign, ast.AnnAssign))
                    and getattr(s.target if isinstance(s, ast.AnnAssign) else s.targets[0], "id", "") == where.attr)
        value = eval(compile(ast.Expression(stmt.value), str(ROOT / mutant.path), "eval"), vars(module))
        _set_class_default(getattr(module, where.scope), where.attr, value)
    else:
        _exec_module_statements(module, tree, where.stmt, mutant.path)


def _set_class_default(cls, name: str, value) -> None:
    """A class attribute, and for a dataclass field the default its __init__ uses."""
    setattr(cls, name, value)
    fields = getattr(cls, "__dataclass_fields__", {})
    if name not in fields:
        return
    fields[name].default = value
    init = cls.__init__
    params = [p for p in inspect.signature(init).parameters.values() if p.default is not inspect.Parameter.empty]
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if name in positional:
        defaults = list(init.__defaults__)
        defaults[positional.index(name)] = value
        init.__defaults__ = tuple(defaults)
    elif init.__kwdefaults__ and name in init.__kwdefaults__:
        init.__kwdefaults__[name] = value


def clear_caches(module) -> None:
    """The targets' lru_caches hold results of the unmutated code."""
    for obj in list(vars(module).values()):
        if hasattr(obj, "cache_clear"):
            obj.cache_clear()


# ---------------------------------------------------------------- which tests reach which function


def instrument(module, path: str, hits: set) -> dict:
    """Insert `__mutate_hit__(scope)` at the top of every top-level function
    and method; returns the original code objects (to restore)."""
    tree = ast.parse(source_of(path))
    module.__mutate_hit__ = hits.add
    originals = {}
    for i, stmt in enumerate(tree.body):
        members = [(stmt.name, stmt)] if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else [
            (f"{stmt.name}.{s.name}", s) for s in stmt.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
        ] if isinstance(stmt, ast.ClassDef) else []
        for scope, fn_def in members:
            try:
                fn = _live_function(module, scope)
            except (AttributeError, KeyError):
                continue
            hit = ast.parse(f"__mutate_hit__({(path, scope)!r})").body[0]
            start = 1 if fn_def.body and _is_docstring(fn_def.body[0], 0) else 0
            fn_def.body.insert(start, hit)
            originals[scope] = fn.__code__
            _set_code(fn, _compile_function(ast.fix_missing_locations(tree), Where(scope, "code", stmt=i), path))
    return originals


def restore(module, originals: dict) -> None:
    for scope, code in originals.items():
        _live_function(module, scope).__code__ = code
    del module.__mutate_hit__


# ---------------------------------------------------------------- the pytest plugin


@dataclass
class Run:
    targets: list[str]
    sample: int | None
    seed: int
    only: str | None
    skip_display: bool
    timeout_factor: float
    timeout_min: float
    json_path: str | None = None
    results: list[Mutant] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def save(self) -> None:
        if self.json_path:
            Path(self.json_path).write_text(json.dumps(
                {"summary": self.summary, "mutants": [asdict(m) for m in self.results]}, indent=1, ensure_ascii=False))


class MutationPlugin:
    def __init__(self, run: Run):
        self.run = run

    def pytest_configure(self, config):
        from hypothesis import settings
        # no example database (a mutant's failures must not be replayed on the sources), no deadline
        settings.register_profile("mutate", parent=settings.default, database=None, deadline=None,
                                  derandomize=True)
        settings.load_profile("mutate")

    def pytest_runtestloop(self, session):
        import importlib

        from _pytest.runner import runtestprotocol

        items = session.items
        modules = {p: importlib.import_module(p[:-3].replace("/", ".")) for p in self.run.targets}
        hits: set = set()
        originals = {p: instrument(m, p, hits) for p, m in modules.items()}
        reach, seconds, failing = {}, {}, []
        PROGRESS.write(f"baseline: {len(items)} tests ...\n")
        for i, item in enumerate(items):
            hits.clear()
            for m in modules.values():
                clear_caches(m)
            start = time.perf_counter()
            reports = runtestprotocol(item, nextitem=items[i + 1] if i + 1 < len(items) else None, log=False)
            seconds[item.nodeid] = time.perf_counter() - start
            if any(r.failed for r in reports):
                failing.append(item.nodeid)
            reach[item.nodeid] = set(hits)
        for p, m in modules.items():
            restore(m, originals[p])
        if failing:
            PROGRESS.write(f"baseline: {len(failing)} tests fail without a mutant and are left out: {failing}\n")
        items = sorted((it for it in items if it.nodeid not in failing), key=lambda it: seconds[it.nodeid])
        PROGRESS.write(f"baseline: {sum(seconds.values()):.1f} s\n")
        for path in self.run.targets:
            self._mutate_file(path, modules[path], items, reach, seconds, runtestprotocol)
        return True

    def _select(self, path: str, module, mutants: list[Mutant]) -> tuple[list[Mutant], int, int]:
        total = len(mutants)
        display = sum(m.display for m in mutants)
        if self.run.skip_display:
            mutants = [m for m in mutants if not m.display]
        if self.run.only:
            mutants = [m for m in mutants if m.scope == self.run.only]
        if self.run.sample is not None and self.run.sample < len(mutants):
            mutants = sorted(random.Random(f"{self.run.seed}:{path}").sample(mutants, self.run.sample),
                             key=lambda m: (m.line, m.col, m.index, m.variant))
        return mutants, total, display

    def _mutate_file(self, path, module, items, reach, seconds, runtestprotocol):
        tree = ast.parse(source_of(path))
        at_import, _ = import_time_functions(tree)
        mutants, total, display = self._select(path, module, mutants_of(path))
        whole = {it.nodeid for it in items if any(p == path for p, _ in reach[it.nodeid])}
        for n, mutant in enumerate(mutants, 1):
            if mutant.how == "code" and mutant.scope not in at_import:
                chosen = [it for it in items if (path, mutant.scope) in reach[it.nodeid]]
            else:  # a default, a class attribute, a module-level statement: every test that uses the module
                chosen = [it for it in items if it.nodeid in whole]
            mutant.tests = len(chosen)
            start = time.perf_counter()
            if not chosen:
                mutant.status = "no test"
            else:
                limit = max(self.run.timeout_min, self.run.timeout_factor * sum(seconds[it.nodeid] for it in chosen))
                mutant.status, mutant.detail = _run_child(mutant, module, chosen, runtestprotocol, limit)
            mutant.seconds = time.perf_counter() - start
            self.run.results.append(mutant)
            self.run.summary[path] = _summary(mutants[:n], total, display, self.run)
            self.run.save()  # after every mutant: a run stopped early still leaves its figures
            PROGRESS.write(f"[{n}/{len(mutants)}] {path}:{mutant.line}:{mutant.col} {mutant.description} "
                           f"in {mutant.scope}: {mutant.status} ({mutant.tests} tests, {mutant.seconds:.1f} s) "
                           f"{mutant.detail}\n")
        self.run.summary[path] = _summary(mutants, total, display, self.run)
        self.run.save()
        PROGRESS.write(report(self.run, only=path) + "\n")


def _run_child(mutant: Mutant, module, chosen, runtestprotocol, limit: float) -> tuple[str, str]:
    """(status, detail): the chosen tests run in a forked child with the mutant in place."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code, detail = 3, ""
        try:
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                apply(mutant, module)
                clear_caches(module)
            except Exception as err:  # noqa: BLE001 -- e.g. a module-level statement that now raises
                code, detail = 2, f"applying it raised {type(err).__name__}: {err}"[:200]
                raise
            code = 0
            for i, item in enumerate(chosen):
                reports = runtestprotocol(item, nextitem=chosen[i + 1] if i + 1 < len(chosen) else None, log=False)
                if any(r.failed for r in reports):
                    code, detail = 1, f"by {item.nodeid}"
                    break
        except BaseException:  # noqa: BLE001 -- counted as killed, with the reason
            code = code if code == 2 else 3
        finally:
            os.write(write_end, detail.encode()[:4000])
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            for target in (-pid, pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)
            os.close(read_end)
            return "timeout", f"after {limit:.0f} s"
        time.sleep(0.02)
    detail = os.read(read_end, 4000).decode(errors="replace")
    os.close(read_end)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "survived", ""
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
        return "killed", detail or "the harness failed in the child"
    return "killed", detail or f"the child died ({status})"


def _summary(mutants: list[Mutant], total: int, display: int, run: Run) -> dict:
    counts = {s: sum(m.status == s for m in mutants) for s in ("killed", "timeout", "survived", "no test")}
    score = (counts["killed"] + counts["timeout"]) / len(mutants) if mutants else None
    return {"mutants": total, "display": display, "display_skipped": run.skip_display, "only": run.only,
            "sample": run.sample, "seed": run.seed, "run": len(mutants), **counts, "score": score}


def report(run: Run, only: str | None = None) -> str:
    lines = []
    for path, s in run.summary.items():
        if only is not None and path != only:
            continue
        shown = f"{s['run']} run" + (f" (sample, seed {s['seed']})" if s["sample"] is not None else "")
        skipped = f", {s['display']} display-only left out" if s["display_skipped"] else \
            f", {s['display']} of them display-only"
        score = "n/a" if s["score"] is None else f"{100 * s['score']:.1f}%"
        lines.append(f"{path}: {s['mutants']} mutants{skipped}; {shown}: {s['killed']} killed, "
                     f"{s['timeout']} timeout, {s['survived']} survived, {s['no test']} reached by no test; "
                     f"score {score}")
        for m in run.results:
            if m.path == path and m.status in ("survived", "no test"):
                tag = "" if m.status == "survived" else " [no test reaches it]"
                lines.append(f"  {m.path}:{m.line}:{m.col}  {m.description}  in {m.scope}{tag}"
                             + (" [display]" if m.display else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="modules to mutate, e.g. mupspec/check.py")
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="test files (default: the verdict core's)")
    parser.add_argument("--sample", type=int, help="run N mutants per file, drawn at random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", metavar="FUNC", help="only mutants in this function (`f`, `Cls.method`, `<module>`)")
    parser.add_argument("--skip-display", action="store_true", help="leave out mutants that only change display text")
    parser.add_argument("--timeout-factor", type=float, default=4.0, help="per mutant: this times the tests' baseline time")
    parser.add_argument("--timeout-min", type=float, default=30.0, help="per mutant: at least this many seconds")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", metavar="FILE", help="write every mutant and its outcome")
    args = parser.parse_args(argv)
    targets = [str(Path(t).resolve().relative_to(ROOT)) for t in args.targets]
    run = Run(targets, args.sample, args.seed, args.only, args.skip_display, args.timeout_factor, args.timeout_min,
              args.json)
    if args.list:
        for path in targets:
            for m in mutants_of(path):
                print(f"{m.path}:{m.line}:{m.col}  {m.description}  in {m.scope} ({m.how})" + " [display]" * m.display)
        return 0
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import pytest

    start = time.perf_counter()
    code = pytest.main([*args.tests, "-p", "no:cacheprovider", "-q", "--capture=sys", "-W", "ignore::DeprecationWarning"],
                       plugins=[MutationPlugin(run)])
    if not run.summary:
        print(f"mutate: pytest ended before any mutant ran (exit {code})", file=sys.stderr)
        return 2
    print(report(run))
    print(f"({time.perf_counter() - start:.0f} s wall)")
    run.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

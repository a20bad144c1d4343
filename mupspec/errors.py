"""Diagnostics: the one error type every stage raises, and its one renderer.

A `Diagnostic` is a located message with an optional hint; a `MupError`
carries one or more of them. Only the CLI prints them and picks exit codes.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mupspec.ir import Span


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"  # "error" | "warning" | "note"

    def sort_key(self) -> tuple:
        s = self.span
        return (s.file or "", s.line, s.column) if s else ("", 0, 0)


class MupError(Exception):
    """Raised for any bad input: syntax, semantics, usage. Holds diagnostics
    sorted by position so that several problems are reported at once."""

    def __init__(self, diagnostics: Diagnostic | Sequence[Diagnostic]):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__("\n".join(d.message for d in self.diagnostics))

    def __reduce__(self):   # pickled with its diagnostics (a Ray worker's error reaches the driver whole)
        return type(self), (self.diagnostics,)


@dataclass
class DiagnosticBag:
    """Collects semantic errors so a stage can report all of them together."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.items.append(Diagnostic(message, span, hint))

    def raise_if_any(self) -> None:
        if self.items:
            raise MupError(self.items)


def decode_text(data: bytes, path: str | None, span: Span | None = None) -> str:
    """UTF-8 text (a leading BOM is not part of the spec); a byte that is not
    UTF-8 is reported at its line and column (`span`: where to point instead,
    e.g. the `extends` that names this file)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts after the BOM
        before = data[:start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1:].decode("utf-8", errors="replace")) + 1
        where = Span(file=path, line=line, column=column, end_line=line, end_column=column + 1)
        raise MupError(Diagnostic(f"{path or 'input'} is not UTF-8 text: byte 0x{data[start]:02x} "
                                  f"at line {line}, column {column}", span or where,
                                  "save the file as UTF-8")) from None


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def _source_lines(file: str, sources: dict[str, str], cache: dict) -> list[str] | None:
    """The lines of `file` (from `sources`, else read from disk), split once
    per file and kept in `cache`: rendering thousands of diagnostics stays linear."""
    if file not in cache:
        text = sources.get(file)
        if text is None and file:
            try:
                text = Path(file).read_bytes().decode("utf-8-sig", errors="replace")
            except (OSError, ValueError):
                text = None
        cache[file] = None if text is None else text.split("\n")  # as the lexer counts lines
    return cache[file]


def _source_line(span: Span, sources: dict[str, str], cache: dict | None = None) -> str | None:
    lines = _source_lines(span.file or "", sources, {} if cache is None else cache)
    if lines is None:
        return None
    if not 0 < span.line <= len(lines):
        return ""
    line = lines[span.line - 1].rstrip("\r")
    if line.isprintable():  # the usual case, checked at C speed: 100,000 diagnostics render in a blink
        return line
    # one printable character per source character keeps the caret aligned
    return "".join(ch if ch == "\t" or ch.isprintable() else " " for ch in line)


def render(diag: Diagnostic, sources: dict[str, str] | None = None, color: bool = False,
           cache: dict | None = None) -> str:
    """`file:line:col: error: message`, the source line, carets under the
    span, then the hint -- the format of compilers and of miniwdl."""
    sources = sources or {}
    bold, red, cyan, reset = ("\033[1m", "\033[31m", "\033[36m", "\033[0m") if color else ("",) * 4
    label = "\033[33m" if color and diag.severity == "warning" else red  # warnings in yellow
    span = diag.span
    where = ""
    if span is not None and span.line > 0:
        where = f"{span.file or '<input>'}:{span.line}:{span.column}: "
    elif span is not None and span.file:
        where = f"{span.file}: "
    out = [f"{bold}{where}{label}{diag.severity}:{reset}{bold} {diag.message}{reset}"]
    line = _source_line(span, sources, cache) if span is not None and span.line > 0 else None
    if line is not None:
        width = span.end_column - span.column if span.end_line == span.line else len(line) - span.column + 1
        out.append(f"    {line}")
        # keep tabs so that the caret lines up under tab-indented source
        before = line[:span.column - 1]
        pad = "".join("\t" if ch == "\t" else " " for ch in before) if "\t" in before else " " * len(before)
        pad += " " * max(0, span.column - 1 - len(line))
        out.append(f"    {pad}{label}{'^' * max(1, width)}{reset}")
    if diag.hint:
        out.append(f"  {cyan}hint:{reset} {diag.hint}")
    return "\n".join(out)


def render_all(error: MupError, sources: dict[str, str] | None = None, color: bool | None = None) -> str:
    if color is None:
        color = use_color(sys.stderr)
    cache: dict = {}
    return "\n".join(render(d, sources, color, cache) for d in error.diagnostics)


def use_color(stream) -> bool:
    """Colour on a terminal only, and never when NO_COLOR is set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and getattr(stream, "isatty", lambda: False)()

"""The bundled specs: one `.mup` file per known parametrization, addressable by name.

The files live once in the repository's top-level `specs/`; `mupspec/specs` is a
symlink to it, so the wheel ships them as package data (setuptools copies the
files behind the link) and an installed mupspec finds them beside this module.
Every command that takes a spec file also takes a bundled name (`mup_table8`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mupspec.errors import Diagnostic, MupError

DIR = Path(__file__).resolve().parent / "specs"
# convenient names accepted where a bundled spec is: `mup` is the Table 8 form microsoft/mup implements
ALIASES = {"mup": "mup_table8"}

# The parametrization classes `--expect CLASS` names, each the bundled spec that
# states it: (name as printed, its file, other spellings). Matched without case,
# and with `-`, `_`, spaces and μ/mu folded, so `mup`, `muP`, `μP` are one name.
CLASSES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("muP", "mup_table8", ("maximal-update",)),
    ("SP", "sp", ("standard",)),
    ("NTK", "ntk", ("NTP",)),
    ("mean-field", "mean_field", ("MF", "MFP")),
    ("Depth-muP", "depth_mup", ()),
    ("CompleteP", "completep", ()),
    ("u-muP", "umup", ("unit-muP",)),
)

_HEADER = re.compile(r'^parametrization\s+\w+\s+"([^"]*)"', re.MULTILINE)

def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("*.mup"))


def _folded(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.strip().lower().replace("μ", "mu"))


def class_names() -> list[str]:
    return [name for name, _, _ in CLASSES]


def class_spec(name: str) -> Path | None:
    """The bundled spec of parametrization class `name` (any spelling in
    CLASSES), or None when `name` names no class."""
    key = _folded(name)
    for printed, file, aliases in CLASSES:
        if key in {_folded(printed), _folded(file), *map(_folded, aliases)}:
            return DIR / f"{file}.mup"
    return None


def expected(arg: str) -> Path:
    """What `--expect` names: a class (muP, SP, NTK, ...), a spec file, or a
    bundled spec name; MupError listing the classes otherwise."""
    as_path = Path(arg)
    if as_path.suffix == ".mup" or as_path.is_file():
        return as_path
    found = class_spec(arg)
    if found is not None:
        return found
    bundled = DIR / f"{ALIASES.get(arg, arg)}.mup"
    if bundled.is_file():
        return bundled
    raise MupError(Diagnostic(f"--expect `{arg}`: no parametrization class, spec file or bundled spec of that name",
                              hint="a class: " + ", ".join(class_names()) + " (any case); or a .mup file, or a "
                                   "bundled spec (`mupspec specs` lists them)"))


def path(name: str) -> Path:
    """The file of bundled spec `name` (or an alias); MupError with the list if none."""
    file = DIR / f"{ALIASES.get(name, name)}.mup"
    if not file.is_file():
        raise MupError(Diagnostic(f"no spec file or bundled spec named `{name}`",
                                  hint="one of: " + ", ".join(names() + sorted(ALIASES))))
    return file


def locate(arg: str) -> str:
    """A command-line spec argument as a path: an existing file stays as given; a bare
    name of a bundled spec (no directory, no suffix) becomes that spec's file."""
    if Path(arg).exists() or "/" in arg or "\\" in arg or arg.endswith(".mup"):
        return arg
    file = DIR / f"{ALIASES.get(arg, arg)}.mup"
    if not file.is_file():
        return arg  # the command reports "no such file" with a pointer to `mupspec specs`
    shorter = os.path.relpath(file)  # as diagnostics will show it: short inside a checkout
    return str(file) if shorter.startswith("..") else shorter


def describe(name: str) -> tuple[str, str]:
    """(title, source) of a bundled spec, read from its header and `# Source:` comment."""
    text = path(name).read_text(encoding="utf-8")
    title = _HEADER.search(text)
    return (title.group(1) if title else name), _source(text)


def _source(text: str) -> str:
    """The citation after `# Source:`: its comment lines joined, up to the first `;`,
    `:` or full stop outside double quotes (what follows is the detail the spec encodes)."""
    comments = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    start = next((i for i, line in enumerate(comments) if line.startswith("Source:")), None)
    if start is None:
        return ""
    joined = " ".join(comments[start:])[len("Source:"):].strip()
    quoted = False
    for i, char in enumerate(joined):
        quoted ^= char == '"'
        full_stop = joined.startswith(". ", i) and not joined[:i].endswith(" al")  # "et al." goes on
        if not quoted and (char in ";:" or full_stop):
            return joined[:i].strip()
    return joined.rstrip(".")

"""Helpers shared by the command modules: reading spec files, checking
output paths before any work starts, and writing files atomically (every
file a command writes goes through `mupspec.atomic`, re-exported here).
"""

from __future__ import annotations

import os
from pathlib import Path

from mupspec.atomic import atomic_path, open_atomic, write_atomic, write_json  # noqa: F401  (re-exported)
from mupspec.errors import Diagnostic, MupError, decode_text


def read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise MupError(Diagnostic(f"no such file: {path}",
                                  hint="check the path, or name a bundled spec (`mupspec specs` lists them)")) from None
    except IsADirectoryError:
        raise MupError(Diagnostic(f"{path} is a directory", hint="pass .mup files, e.g. specs/*.mup")) from None
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise MupError(Diagnostic(f"cannot read {path}: {getattr(err, 'strerror', None) or err}")) from None
    return decode_text(data, path)


def check_output(path: str, what: str = "-o") -> Path:
    """Refuse, before any work starts, an output path that cannot be written:
    a missing folder, a directory, a device or other non-regular file, a
    read-only target or folder."""
    p = Path(path)
    problem = None
    if not str(path) or "\x00" in str(path):
        problem = "is not a valid path"
    elif p.is_dir():
        problem = "is a directory"
    elif p.exists() and not p.is_file():
        problem = "exists and is not a regular file (a device, a pipe, ...)"
    elif not p.parent.is_dir():
        problem = f"is in a folder that does not exist ({p.parent})"
    elif p.exists() and not os.access(p, os.W_OK):
        problem = "is not writable"
    elif not os.access(p.parent, os.W_OK | os.X_OK):
        problem = f"is in a folder that is not writable ({p.parent})"
    if problem:
        raise MupError(Diagnostic(f"cannot write {path} ({what}): it {problem}",
                                  hint="give a path to a regular file in an existing, writable folder "
                                       "(nothing was run)"))
    return p


def check_output_dir(path: str, what: str) -> Path:
    """An output folder: it may exist (as a folder) or be creatable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise MupError(Diagnostic(f"{what} {path}: exists and is not a folder",
                                  hint="give a folder (it is created if missing); nothing was run"))
    parent = next((q for q in (p, *p.parents) if q.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MupError(Diagnostic(f"{what} {path}: cannot create or write into it ({parent} is not a writable folder)",
                                  hint="give a folder you can write to; nothing was run"))
    return p

"""Helpers shared by the command modules: reading spec files."""

from __future__ import annotations

from pathlib import Path

from mupspec.errors import Diagnostic, MupError


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # -sig: a BOM is not part of the spec
    except FileNotFoundError:
        raise MupError(Diagnostic(f"no such file: {path}",
                                  hint="check the path, or name a bundled spec (`mupspec specs` lists them)")) from None
    except IsADirectoryError:
        raise MupError(Diagnostic(f"{path} is a directory", hint="pass .mup files, e.g. specs/*.mup")) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: a NUL in the path
        raise MupError(Diagnostic(f"cannot read {path}: {err}")) from None

"""The one atomic writer every mupspec command writes its files with.

The bytes go to a temporary file in the target's folder (`.NAME.XXXX.tmp`),
are fsync'ed, and the temporary file is renamed over the target (then the
folder is fsync'ed, so the rename itself survives a crash). A full disk, a
failed write or a kill at any moment leaves either the old file or the new
one, never a truncated mix; a leftover temporary file is never read as the
target (`is_temporary` tells a reader which names to skip).

Permissions: an existing target keeps its own; a new file gets what `open`
would give it (0666 minus the umask: 0644 usually), not the 0600 of the
temporary file `mkstemp` creates. Through a symlink, the file it points to is
replaced and the link kept.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from mupspec.errors import Diagnostic, MupError

TEMP_SUFFIX = ".tmp"


def is_temporary(path: str | os.PathLike) -> bool:
    """A name `atomic_path` gives its temporary files (a writer killed before its rename leaves one)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in `path`'s folder; on success it is fsync'ed
    and renamed over `path`, on any failure removed (the target untouched).
    For writers that want a file name (matplotlib's savefig, csv modules)."""
    target = Path(os.path.realpath(path))  # through a symlink: replace the file, keep the link
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _mode_for(target: Path) -> int:
    """The target's own permissions, or those `open` gives a new file (0666 minus the umask)."""
    if target.exists():
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)   # reading the umask means setting it: put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def open_atomic(path: str | os.PathLike, newline: str | None = "") -> Iterator[IO[str]]:
    """A text file (UTF-8) that replaces `path` atomically when the block ends
    without an error: `with open_atomic(p) as f: csv.writer(f)...`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()


def write_atomic(path: str | os.PathLike, text: str, what: str = "") -> None:
    """Write `text` (UTF-8) to `path` atomically; an OSError (full disk,
    permissions) becomes a MupError and leaves `path` as it was."""
    try:
        with open_atomic(path) as fh:
            fh.write(text)
    except OSError as err:
        raise MupError(Diagnostic(f"cannot write {path}: {err.strerror or err}"
                                  + (f" ({what})" if what else ""),
                                  hint="check free space and permissions; the file was left as it was")) from None


def write_json(path: str | os.PathLike, payload, what: str = "") -> None:
    """`payload` as compact JSON, atomically, its folder created if missing.
    NaN/inf are refused (ValueError, nothing written): they are not JSON."""
    text = json.dumps(payload, allow_nan=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, what)

"""Atomic file output: a reader (or a crash) sees the old file or the new one, never half of one.

`atomic_write(path)` writes into a temporary file in the same directory, flushes and fsyncs it,
then renames it over `path` (`os.replace`, atomic on POSIX file systems) and fsyncs the
directory. If the block raises, `path` is left untouched and the temporary file is removed::

    with atomic_write(out / "hull.json") as f:
        json.dump(data, f)

`storage_error_message(exc)` turns the errors of a full, read-only or failing file system (an
OSError, or SQLite's OperationalError) into the one line `csp` prints (exit code 2).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "fsync_dir", "storage_error_message"]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new file in `directory` durable (best effort: not every file system
    lets a directory be opened or fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing (`mode` "w" or "wb", text in UTF-8 by default) that
    replaces `path` when the block ends without an exception."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:   # mkstemp makes the file 0600: give it the permissions a plain open() would
            perms = path.stat().st_mode & 0o7777
        except OSError:
            perms = 0o666 & ~_umask()
        os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(path.parent)


def _discard(tmp: str | os.PathLike) -> None:
    """Remove a temporary file that will not replace its target (if it is there at all)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


# errno values that mean "the file system refuses": full, over quota, read-only, failing, no access
_STORAGE_ERRNOS = ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EFBIG",
                   "ENAMETOOLONG", "ESTALE")
# SQLite's result codes (and messages) for the same conditions
_SQLITE_NAMES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")
_SQLITE_MESSAGES = ("disk i/o error", "database or disk is full", "readonly database", "unable to open database")


def storage_error_message(exc: BaseException, where: str | os.PathLike | None = None) -> str | None:
    """One line for an error of the file system (disk full, read-only, I/O error, no access):
    an `OSError` with such an errno, or the `sqlite3.OperationalError` SQLite raises for it;
    `where` names the path when the error does not carry one. None for any other error."""
    import errno
    import sqlite3

    if isinstance(exc, OSError):
        codes = {getattr(errno, n) for n in _STORAGE_ERRNOS if hasattr(errno, n)}
        if exc.errno not in codes:
            return None
        path = exc.filename if exc.filename is not None else where
        reason = exc.strerror or str(exc)
    elif isinstance(exc, sqlite3.OperationalError):
        name = getattr(exc, "sqlite_errorname", None) or ""
        text = str(exc)
        if not (name.startswith(_SQLITE_NAMES) or any(m in text.lower() for m in _SQLITE_MESSAGES)):
            return None
        path, reason = where, f"{text} (SQLite)"
        if path is not None and os.path.isdir(path):   # a run directory: name its store
            path = os.path.join(path, "campaign.sqlite")
    else:
        return None
    vague = any(w in reason.lower() for w in ("i/o", "unable to open"))
    hint = " (disk full, read-only or failing file system, or no permission?)" if vague else ""
    return f"cannot write '{path}': {reason}{hint}" if path is not None else f"{reason}{hint}"


def ase_write_atomic(path: Path, images) -> None:
    """`ase.io.write(path, images)` without ever leaving half a file at `path`: ASE writes a
    temporary file of the same directory and extension (format guessed from `path`), which
    then replaces `path`."""
    import secrets

    import ase.io
    from ase.io.formats import filetype

    if str(path) == "-":
        ase.io.write("-", images)
        return
    fmt = filetype(str(path), read=False)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        ase.io.write(tmp, images, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(path.parent)

"""The one way senet writes a file: a temporary sibling, fsync, rename over the final name.

A kill at any moment leaves the old file or the new one, both whole, plus at most a
temporary ``.<name>.<pid>.tmp`` that the next owner of the folder removes. A failure of the
operating system (disk full, read-only, no permission, ...) becomes a one-line
:class:`~senet.errors.FileSystemError` naming the file, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from senet.errors import FileSystemError, SenetError, fs_error, os_error_in
from senet.utils.text import encode

TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temporary sibling this process writes ``path`` through."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); not possible on every platform."""
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, previous: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on success it is fsynced and renamed
    to ``path`` (an existing ``path`` first renamed to ``previous``, when given). On any
    failure the temporary file is removed; an operating-system cause is raised as a
    :class:`FileSystemError` naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise FileSystemError(f"cannot write {path}: it is a folder")
    tmp = temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = os_error_in(e) if isinstance(e, Exception) and not isinstance(e, SenetError) else None
        if cause is not None:
            raise fs_error(cause, path) from e
        raise
    fsync_dir(path.parent if str(path.parent) else Path("."))


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *,
                 previous: Path | None = None) -> None:
    """Call ``write(file)`` on a new temporary file and make it ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path, previous=previous) as tmp, open(tmp, "wb") as f:
        write(f)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """``path`` holds ``text`` (UTF-8; undecodable bytes of file names as ``\\xNN``, see
    :mod:`senet.utils.text`), written atomically."""
    data = encode(text)
    atomic_write(path, lambda f: f.write(data))

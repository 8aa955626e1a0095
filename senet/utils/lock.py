"""One owner per folder: an advisory ``flock`` on ``<folder>/.senet.lock``.

The lock belongs to the open file, so the kernel releases it when its process ends, however
it ends (a SIGKILL included): a stale lock never blocks a later run. The holder writes its
pid into the file so that the process refused can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from senet.errors import SenetError, fs_error

LOCK_NAME = ".senet.lock"


class FolderBusy(SenetError):
    """Another process owns the folder."""


class FolderLock:
    """An exclusive lock on ``folder`` held from :meth:`acquire` to :meth:`release` (or exit)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, what: str = "folder") -> FolderLock:
        """Take the lock or raise :class:`FolderBusy` naming the holder's pid."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise fs_error(e, self.path, "lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusy(f"{what} {self.path.parent} is in use by another senet process (pid {holder}); "
                             "wait for it to end or stop it") from None
        except OSError as e:
            os.close(fd)
            raise fs_error(e, self.path, "lock") from None
        with contextlib.suppress(OSError):  # the pid is a courtesy to the next process (a full disk refuses it)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self, *, remove: bool = False) -> None:
        """Give the lock up; ``remove`` deletes the lock file first (the folder is going away)."""
        if self._fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)  # closing the file releases the flock
        self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

"""Errors the command line reports as a one-line message (no traceback) with a non-zero exit."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class SenetError(Exception):
    """A problem with the user's input: a path, a file, a dataset, a config or a checkpoint."""


class WeightsError(SenetError):
    """A weight file that cannot be read or does not fit the model (names the keys at fault)."""


class WeightsUnavailable(WeightsError):
    """Released weights that cannot be fetched here (offline, blocked, gone): the reason, what
    to download where there is internet and where to put it, and the option that takes the
    file instead (``pretrained=PATH``; :meth:`for_option` names another, e.g. the detection
    builders' ``weights_backbone=PATH``)."""

    def __init__(self, what: str, reason: str, remedy: str, option: str = "pretrained=PATH (--weights PATH)",
                 fetching: str = "its released weights") -> None:
        self.what, self.reason, self.remedy, self.option, self.fetching = what, reason, remedy, option, fetching
        super().__init__(f"{what}: cannot fetch {fetching} ({reason}); {remedy} {option}")

    def for_option(self, option: str) -> WeightsUnavailable:
        """The same error, naming ``option`` as the way to pass the file instead of ``pretrained=``."""
        if not self.option.startswith("pretrained="):
            return self
        return WeightsUnavailable(self.what, self.reason, self.remedy, option, self.fetching)


class DataError(SenetError):
    """A dataset that cannot be found or read (names the file or folder at fault)."""


class ConfigError(SenetError, ValueError):
    """A bad recipe, key or value (lists the valid ones)."""


class FileSystemError(SenetError):
    """The operating system refused a read or write (disk full, read-only, no permission,
    not a folder, ...): names the path and the cause."""


# Rust (safetensors) reports I/O failures as "... (os error 28)"
_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")

_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "choose a writable location",
    errno.EACCES: "check the permissions or choose another location",
    errno.EPERM: "check the permissions or choose another location",
}


def os_error_in(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``: itself, its cause or context (``torch.save``
    turns a failed write into ``RuntimeError: ... unexpected pos``), or the ``os error N``
    named in its message (safetensors); ``None`` when there is none."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e = e.__cause__ or e.__context__
    m = _OS_ERROR_CODE.search(str(exc))
    if m:
        code = int(m.group(1))
        return OSError(code, os.strerror(code))
    return None


def fs_error(exc: OSError, path: str | os.PathLike[str] | None = None, doing: str = "write") -> FileSystemError:
    """``exc`` as a one-line :class:`FileSystemError`: what was done to which path, the
    system's reason and its errno name, e.g. ``cannot write runs/a/checkpoint.pt: No space
    left on device (ENOSPC); free some space or write elsewhere``."""
    target = Path(path) if path is not None else exc.filename
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0)
    hint = _HINTS.get(exc.errno or 0)
    text = reason + (f" ({code})" if code else "") + (f"; {hint}" if hint else "")
    return FileSystemError(f"cannot {doing} {target}: {text}" if target is not None else text)

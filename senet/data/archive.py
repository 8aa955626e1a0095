"""Safe, atomic extraction of ``.tar`` / ``.tar.gz`` archives into a cache folder.

Every entry is checked before it is written: absolute names, ``..`` components, names that
resolve outside the target through an earlier symlink, symlinks or hardlinks that point
outside, and device / FIFO / other special files are refused with a :class:`DataError` that
names the entry. Python's ``tarfile`` ``"data"`` filter is applied on top as a second line
of defence.

The archive is extracted into a temporary sibling folder that is renamed into place only
when every entry has been written, so a run killed mid-way never leaves a half-filled
cache folder (its temporary folder is removed by the next extraction).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tarfile
import zlib
from pathlib import Path

from senet.errors import DataError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_TMP_MARK = ".tmp-"


def is_archive(path: Path) -> bool:
    """True for a file named like a supported archive (``.tar``, ``.tar.gz``, ``.tgz``)."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    """``cifar10-jpeg.tar.gz`` -> ``cifar10-jpeg``."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open(path: Path) -> tarfile.TarFile:
    try:
        # Stream mode ("r|*"): one sequential pass, no backward seeks in the gzip stream.
        return tarfile.open(path, "r|*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from exc


def peek_names(path: Path, limit: int = 64) -> list[str]:
    """The first ``limit`` entry names of an archive (reads only the start of the file)."""
    names = []
    tar = _open(path)
    try:
        for member in tar:
            names.append(member.name)
            if len(names) >= limit:
                break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from exc
    finally:
        tar.close()
    return names


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def check_member(member: tarfile.TarInfo, root: str) -> None:
    """Refuse an entry that would land (or point) outside ``root`` or is not a plain file,
    folder or internal link. ``root`` is the real path of the extraction folder; earlier
    entries must already be extracted so symlinks among them are followed."""
    name = member.name
    bad = None
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        bad = "absolute path"
    elif ".." in parts:
        bad = "'..' in the path"
    elif not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        kind = "device file" if (member.ischr() or member.isblk()) else "FIFO" if member.isfifo() else "special file"
        bad = f"{kind} (only files, folders and internal links are extracted)"
    else:
        dest = os.path.realpath(os.path.join(root, name))
        if not _inside(dest, root):
            bad = "it would be written outside the target folder (through a symlink)"
        elif member.issym():
            link = member.linkname
            target = os.path.realpath(os.path.join(os.path.dirname(dest), link))
            if link.startswith(("/", "\\")) or not _inside(target, root):
                bad = f"symlink pointing outside the target folder ({link!r})"
        elif member.islnk():
            link = member.linkname
            target = os.path.realpath(os.path.join(root, link))
            if link.startswith(("/", "\\")) or not _inside(target, root):
                bad = f"hardlink pointing outside the target folder ({link!r})"
    if bad:
        raise DataError(f"unsafe archive entry {name!r}: {bad}; refusing to extract")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(dest: Path) -> None:
    """Remove temporary folders left by killed extractions of ``dest`` (dead pid)."""
    if not dest.parent.is_dir():
        return
    prefix = f".{dest.name}{_TMP_MARK}"
    for entry in dest.parent.iterdir():
        if entry.name.startswith(prefix):
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into the folder ``dest`` (atomically) and return ``dest``.

    An existing ``dest`` is taken as a finished extraction (it only ever appears through
    the final rename). Raises :class:`DataError` for an unreadable archive or an unsafe entry;
    nothing is left behind in that case.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp = dest.parent / f".{dest.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    root = os.path.realpath(tmp)
    log.info("extracting %s into %s", archive, dest)
    try:
        tar = _open(archive)
        try:
            for member in tar:
                try:
                    check_member(member, root)
                except DataError as exc:
                    raise DataError(f"{exc} (archive {archive})") from None
                tar.extract(member, root, set_attrs=False, filter="data")
        except tarfile.FilterError as exc:  # our checks run first; this is the second line
            raise DataError(f"unsafe archive entry in {archive}: {exc}; refusing to extract") from exc
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"archive {archive} is corrupt or truncated: {exc}") from exc
        finally:
            tar.close()
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a concurrent extraction that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest

"""Safe reading of ``.tar`` / ``.tar.gz`` archives of ImageFolder trees.

Every entry is checked before it is used (:func:`check_member`): absolute names, ``..``
components, symlinks or hardlinks that point outside the archive's folder, names that resolve
outside the target through an earlier symlink, and device / FIFO / other special files are
refused with a :class:`DataError` that names the entry. An archive that ends without the tar
end-of-archive marker (cut off at any point), or whose compressed stream is corrupt, is a
:class:`DataError` too; nothing is used from it.

What an archive may expand to is bounded (:func:`expansion_limit`): 100 times its own size,
at least 256 MiB (image files hardly compress: CIFAR-10's JPEGs expand 4.8 times), or
``$SENET_MAX_ARCHIVE_BYTES`` bytes when set. Each entry's size (from its header, which is also
what ``tarfile`` reads) is added to the running total before the entry is read or written,
so a small archive holding a huge entry, or millions of entries, is a :class:`DataError`
naming the entry before the memory or the disk fills up.

Two ways to use an archive:

* :func:`read_archive` reads the files into memory in one sequential pass (used for
  CIFAR-size datasets, which are decoded once into the tensor cache: writing 60,000 small
  files to disk only to read them back costs far more than decoding them);
* :func:`extract_archive` extracts it into a cache folder, atomically: into a temporary
  sibling folder renamed into place only when every entry has been written, so a run killed
  mid-way never leaves a half-filled folder that a later run would use (its temporary folder
  is removed by the next extraction). Python's ``tarfile`` ``"data"`` filter is applied on
  top of :func:`check_member` as a second line of defence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from senet.errors import DataError, fs_error
from senet.utils.limits import env_bytes

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_TMP_MARK = ".tmp-"
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)
LIMIT_ENV = "SENET_MAX_ARCHIVE_BYTES"
EXPANSION_RATIO = 100
MIN_LIMIT = 256 << 20


def expansion_limit(path: Path) -> int:
    """The most an archive may expand to (module docstring): ``$SENET_MAX_ARCHIVE_BYTES``, else
    100 times the archive's size, at least 256 MiB."""
    value = env_bytes(LIMIT_ENV)
    if value is not None:
        return value
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise fs_error(exc, path, "read") from None
    return max(MIN_LIMIT, EXPANSION_RATIO * size)


class _Budget:
    """The running total of what an archive expands to, refused past :func:`expansion_limit`."""

    def __init__(self, path: Path) -> None:
        self.path, self.limit, self.total = path, expansion_limit(path), 0

    def take(self, member: tarfile.TarInfo) -> None:
        self.total += tarfile.BLOCKSIZE + (member.size if member.isreg() else 0)  # its header and its data
        if self.total > self.limit:
            why = f"${LIMIT_ENV}" if env_bytes(LIMIT_ENV) is not None else (
                f"{EXPANSION_RATIO} times its size of {self.path.stat().st_size:,} bytes, at least "
                f"{MIN_LIMIT >> 20} MiB; set ${LIMIT_ENV} to allow more")
            raise DataError(f"archive {self.path} expands to more than {self.limit:,} bytes at entry {member.name!r} "
                            f"({member.size:,} bytes): refused as a likely decompression bomb (the limit: {why})")


def archive_stem(path: Path) -> str:
    """``cifar10-jpeg.tar.gz`` -> ``cifar10-jpeg``."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class _EndAwareInfo(tarfile.TarInfo):
    """Records on the ``TarFile`` whether iteration stopped at the end-of-archive marker
    (``tarfile`` silently stops at a missing or cut-off header too)."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:
            tarfile_.senet_end_marker = True  # type: ignore[attr-defined]
            raise


def iter_members(path: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every entry of the archive in one sequential pass (stream mode, no backward seeks).

    Raises :class:`DataError` for an unreadable, corrupt or truncated archive, after the
    last entry when the end-of-archive marker is missing, and at the entry that takes the
    archive past :func:`expansion_limit` (before its data is read or skipped). Entries are not
    checked otherwise here.
    """
    try:
        tar = tarfile.open(path, "r|*", tarinfo=_EndAwareInfo)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from exc
    count = 0
    budget = _Budget(path)
    try:
        with tar:
            for member in tar:
                count += 1
                budget.take(member)  # before anything reads, extracts or skips its data
                yield tar, member
    except _READ_ERRORS as exc:
        raise DataError(f"archive {path} is corrupt or truncated (after {count} entries): {exc}") from exc
    if not getattr(tar, "senet_end_marker", False):
        raise DataError(
            f"archive {path} is truncated or corrupt: it stops after {count} entries without the "
            "end-of-archive marker; download or copy it again"
        )


def peek_names(path: Path, limit: int = 64) -> list[str]:
    """The first ``limit`` entry names of an archive (reads only the start of the file)."""
    names = []
    with contextlib.closing(iter_members(path)) as members:
        for _, member in members:
            names.append(member.name)
            if len(names) >= limit:
                break
    return names


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _parts(name: str) -> list[str]:
    return name.replace("\\", "/").split("/")


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")


def _escapes(name: str) -> bool:
    """True for a (normalised) path relative to the archive's folder that leaves it."""
    return _is_absolute(name) or ".." in _parts(name)


def _clean(name: str) -> str:
    """The normalised form of a relative entry name (``./a//b`` -> ``a/b``)."""
    return posixpath.normpath(name)


def check_member(member: tarfile.TarInfo, root: str | None = None) -> None:
    """Refuse an entry that would land (or point) outside the archive's folder or is not a
    plain file, folder or link. With ``root`` (the real path of the extraction folder, where
    earlier entries are already extracted) symlinks among earlier entries are followed too."""
    name = member.name
    bad = None
    if _is_absolute(name):
        bad = "absolute path"
    elif ".." in _parts(name):
        bad = "'..' in the path"
    elif not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        kind = "device file" if (member.ischr() or member.isblk()) else "FIFO" if member.isfifo() else "special file"
        bad = f"{kind} (only files, folders and internal links are allowed)"
    elif member.issym() and (
        _is_absolute(member.linkname) or _escapes(_clean(posixpath.join(posixpath.dirname(name), member.linkname)))
    ):
        bad = f"symlink pointing outside the archive's folder ({member.linkname!r})"
    elif member.islnk() and _escapes(_clean(member.linkname)):
        bad = f"hardlink pointing outside the archive's folder ({member.linkname!r})"
    elif root is not None:
        dest = os.path.realpath(os.path.join(root, name))
        if not _inside(dest, root):
            bad = "it would be written outside the target folder (through a symlink)"
        elif member.issym() and not _inside(
            os.path.realpath(os.path.join(os.path.dirname(dest), member.linkname)), root
        ):
            bad = f"symlink pointing outside the target folder ({member.linkname!r})"
        elif member.islnk() and not _inside(os.path.realpath(os.path.join(root, member.linkname)), root):
            bad = f"hardlink pointing outside the target folder ({member.linkname!r})"
    if bad:
        raise DataError(f"unsafe archive entry {name!r}: {bad}; refusing to use the archive")


def read_archive(path: Path, progress: bool | None = None) -> tuple[dict[str, bytes], set[str]]:
    """The regular files (normalised name -> bytes) and folders of an archive, read into
    memory after :func:`check_member` accepted every entry. Hardlinks and symlinks to files
    inside the archive become copies of their target; symlinks to folders are not followed.
    ``progress``: a tqdm count of entries; ``None`` shows it only on a terminal."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    symlinks: dict[str, str] = {}
    disable = None if progress is None else not progress
    bar = tqdm(desc=f"reading {path.name}", unit=" entries", disable=disable, leave=False, mininterval=0.5)
    with bar, contextlib.closing(iter_members(path)) as members:
        for tar, member in members:
            bar.update()
            try:
                check_member(member)
            except DataError as exc:
                raise DataError(f"{exc} (archive {path})") from None
            name = _clean(member.name)
            if member.isdir():
                dirs.add(name)
            elif member.isreg():
                try:
                    files[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                except _READ_ERRORS as exc:
                    raise DataError(f"archive {path} is corrupt or truncated at {member.name!r}: {exc}") from exc
            elif member.islnk():
                target = _clean(member.linkname)
                if target not in files:
                    raise DataError(
                        f"archive {path}: hardlink {member.name!r} points to {member.linkname!r}, not an earlier file"
                    )
                files[name] = files[target]
            else:
                symlinks[name] = _clean(posixpath.join(posixpath.dirname(name), member.linkname))
    for name, target in symlinks.items():
        for _ in range(8):  # a chain of symlinks to symlinks
            target = symlinks.get(target, target)
        if target in files:
            files[name] = files[target]
        else:
            log.warning("archive %s: symlink %s -> %s is not a file of the archive; ignored", path, name, target)
    for name in files:
        parent = posixpath.dirname(name)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    dirs.discard(".")
    return files, dirs


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
    the final rename). Raises :class:`DataError` for an unreadable or truncated archive or an
    unsafe entry; nothing is left behind in that case.
    """
    if dest.is_dir():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(dest)
        tmp = dest.parent / f".{dest.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError as exc:
        raise fs_error(exc, dest.parent, "create the extraction folder") from None
    root = os.path.realpath(tmp)
    log.info("extracting %s into %s", archive, dest)
    try:
        with contextlib.closing(iter_members(archive)) as members:
            for tar, member in members:
                try:
                    check_member(member, root)
                except DataError as exc:
                    raise DataError(f"{exc} (archive {archive})") from None
                try:
                    tar.extract(member, root, set_attrs=False, filter="data")
                except tarfile.FilterError as exc:  # our checks run first; this is the second line
                    raise DataError(f"unsafe archive entry in {archive}: {exc}; refusing to extract") from exc
                except (tarfile.TarError, EOFError, zlib.error) as exc:
                    raise DataError(f"archive {archive} is corrupt or truncated at {member.name!r}: {exc}") from exc
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a concurrent extraction that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # disk full, read-only cache, ...: named, nothing left behind
            raise fs_error(exc, dest, f"extract {archive.name} into") from None
        raise
    return dest

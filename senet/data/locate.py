"""Where a dataset is looked for, and what kind of source a path is.

For a named dataset (``cifar10``, ``cifar100``): an explicit ``data`` argument (``--data``)
is the only place looked at, and so is ``$SENET_DATA`` when it is set and ``data`` is not:
if it does not hold the dataset, that is an error naming it and what was expected there,
never a silent fall-back to another copy. Only when neither is given is the search path
tried, in order: ``./data``, ``../shared/data`` (both relative to the current folder),
``~/.cache/senet`` (and the cache folder if it is elsewhere), then a download of the
official archive. Each place may be the dataset itself (an archive or a folder) or a folder
that holds one of the dataset's known names (:data:`KNOWN_NAMES`). When nothing is found the
:class:`DataError` lists every place tried and what was there.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from senet.data import archive, cifar_python, imagefolder
from senet.data.cache import default_cache_dir
from senet.errors import DataError

CIFAR_ARCHIVE = "cifar_archive"
CIFAR_FOLDER = "cifar_folder"
TREE = "imagefolder_tree"
TREE_ARCHIVE = "imagefolder_archive"

#: Names looked for inside each place, in order, with the kind of source they are.
KNOWN_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "cifar10": (
        ("cifar-10-python.tar.gz", CIFAR_ARCHIVE),
        ("cifar-10-batches-py", CIFAR_FOLDER),
        ("cifar10-jpeg.tar.gz", TREE_ARCHIVE),
        ("cifar10-jpeg", TREE),
    ),
    "cifar100": (
        ("cifar-100-python.tar.gz", CIFAR_ARCHIVE),
        ("cifar-100-python", CIFAR_FOLDER),
        ("cifar100-jpeg.tar.gz", TREE_ARCHIVE),
        ("cifar100-jpeg", TREE),
    ),
}


@dataclass(frozen=True)
class Source:
    """A dataset on disk: its kind, path and (for the CIFAR python format) which CIFAR."""

    kind: str
    path: Path
    cifar: str | None = None

    @property
    def spec(self) -> cifar_python.CifarSpec:
        assert self.cifar is not None
        return cifar_python.SPECS[self.cifar]


def _cifar_by_folder(folder_name: str) -> str | None:
    for key, spec in cifar_python.SPECS.items():
        if spec.folder == folder_name:
            return key
    return None


def detect(path: Path) -> Source | None:
    """The source ``path`` itself is (an archive, a CIFAR folder, an ImageFolder tree), or
    ``None`` for a folder that is none of these (a place to look into)."""
    if path.is_file():
        if not path.name.lower().endswith(archive.ARCHIVE_SUFFIXES):
            raise DataError(f"{path} is a file but not a .tar / .tar.gz / .tgz archive")
        for name in archive.peek_names(path, limit=8):
            cifar = _cifar_by_folder(posixpath.normpath(name).lstrip("/").split("/")[0])
            if cifar:
                return Source(CIFAR_ARCHIVE, path, cifar)
        return Source(TREE_ARCHIVE, path)
    if not path.is_dir():
        return None
    for key, spec in cifar_python.SPECS.items():
        if (path / spec.meta[0]).is_file() and (path / spec.train[0][0]).is_file():
            return Source(CIFAR_FOLDER, path, key)
    try:
        imagefolder.find_tree_root(path)
    except DataError:
        return None
    return Source(TREE, path)


def search_places(data: str | os.PathLike[str] | None, cache_root: Path) -> list[tuple[str, Path | None]]:
    """(label, path) of every place searched, in order; ``None`` for an unset one."""
    env = os.environ.get("SENET_DATA")
    places: list[tuple[str, Path | None]] = [
        ("data argument (--data)", Path(data).expanduser() if data else None),
        ("$SENET_DATA", Path(env).expanduser() if env else None),
        ("./data", Path.cwd() / "data"),
        ("../shared/data", (Path.cwd() / ".." / "shared" / "data").resolve()),
        ("~/.cache/senet", default_cache_dir()),
    ]
    if cache_root.expanduser().resolve() != default_cache_dir().resolve():
        places.append(("cache folder ($SENET_CACHE / cache_dir)", cache_root))
    return places


def _check_kind(source: Source, dataset: str, where: str) -> Source:
    if source.cifar is not None and source.cifar != dataset:
        raise DataError(f"{where} {source.path} holds {source.cifar}, not {dataset}")
    return source


def _known_names(name: str) -> str:
    return ", ".join(known + ("/" if kind in (CIFAR_FOLDER, TREE) else "") for known, kind in KNOWN_NAMES[name])


def _look_in(place: Path, name: str, label: str) -> Source | None:
    """The dataset ``name`` at ``place`` (one of its known names inside, or ``place`` itself)."""
    if place.is_dir():  # the dataset's own names first: a folder may hold several datasets
        for known, kind in KNOWN_NAMES[name]:
            candidate = place / known
            if candidate.exists():
                cifar = name if kind in (CIFAR_ARCHIVE, CIFAR_FOLDER) else None
                return Source(kind, candidate, cifar)
    source = detect(place)
    return _check_kind(source, name, label) if source is not None else None


def _explicit(dataset: str, name: str, place: Path, label: str) -> Source:
    """``--data`` / ``$SENET_DATA``: the dataset is there, or it is an error saying what was expected."""
    if not place.exists():
        raise DataError(f"{label} {place} does not exist")
    source = _look_in(place, name, label)
    if source is None:
        raise DataError(
            f"{label} {place} does not hold {dataset}: expected it to be, or to contain, one of "
            f"{_known_names(name)} (a CIFAR python archive or folder, or an ImageFolder tree "
            f"train/<class>/<image> + test/<class>/<image>, or a .tar / .tar.gz of one)"
        )
    return source


def locate(dataset: str, data: str | os.PathLike[str] | None, cache_root: Path, download: bool = True) -> Source:
    """Find ``dataset`` (a known name, ``imagefolder`` with ``data``, or a path)."""
    name = dataset.lower().replace("-", "")
    if name not in KNOWN_NAMES:
        if name == "imagefolder":
            if not data:
                raise DataError(
                    "dataset 'imagefolder' needs a path: pass --data PATH (a tree or a .tar/.tar.gz of one)"
                )
            path = Path(data).expanduser()
        else:
            path = Path(dataset).expanduser()
        if not path.exists():
            raise DataError(
                f"unknown dataset {dataset!r}: expected {', '.join(KNOWN_NAMES)}, 'imagefolder' or the path of an "
                f"ImageFolder tree / .tar / .tar.gz archive ({path} does not exist)"
            )
        source = detect(path)
        if source is None:
            imagefolder.find_tree_root(path)  # raises with a description of what is there
            raise DataError(f"{path} is not a dataset")  # pragma: no cover - find_tree_root raised
        return source

    places = search_places(data, cache_root)
    for flag, (_, place) in zip(("--data", "$SENET_DATA"), places[:2]):
        if place is not None:  # given by the user: the only place looked at
            return _explicit(dataset, name, place, flag)
    tried = []
    for label, place in places:
        if place is None:
            tried.append(f"{label}: not set")
            continue
        if not place.exists():
            tried.append(f"{label}: {place} (does not exist)")
            continue
        source = _look_in(place, name, label)
        if source is not None:
            return source
        tried.append(f"{label}: {place} (none of the names below)")

    spec = cifar_python.SPECS.get(name)
    if spec is not None and download:
        try:
            return Source(CIFAR_ARCHIVE, cifar_python.download(spec, cache_root), name)
        except DataError as exc:
            tried.append(f"download: {exc}")
    elif spec is not None:
        tried.append("download: not allowed (download=False)")
    names = _known_names(name)
    url = f" The official archive is {spec.url}." if spec else ""
    raise DataError(
        f"{dataset} not found. Places tried, in order:\n  "
        + "\n  ".join(f"{i}. {t}" for i, t in enumerate(tried, 1))
        + f"\nPut one of {names} into one of these folders (or pass --data PATH / set SENET_DATA).{url}"
    )

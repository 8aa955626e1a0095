"""In-memory datasets: :func:`load_split` finds, decodes once, caches and returns a split.

Sources (found by :mod:`senet.data.locate`): the official CIFAR python archive or folder
(:mod:`senet.data.cifar_python`), an ImageFolder tree on disk, or a ``.tar`` / ``.tar.gz``
archive of one, which is read into memory with every entry checked
(:func:`senet.data.archive.read_archive`) and decoded without writing a file per image. The
decoded uint8 tensors go to the cache folder (:mod:`senet.data.cache`); later loads read them
back in a fraction of a second.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from senet.data import cache, cifar_python, imagefolder
from senet.data.archive import archive_stem, read_archive
from senet.data.locate import CIFAR_ARCHIVE, CIFAR_FOLDER, TREE, TREE_ARCHIVE, Source, locate
from senet.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "val")
_EXPECTED_CLASSES = {"cifar10": 10, "cifar100": 100}


@dataclass
class ImageDataset:
    """A decoded split held in memory."""

    images: torch.Tensor  # uint8 [N, 3, H, W], contiguous
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    source: str  # where it came from, for logs
    skipped: list[str] = field(default_factory=list)  # files skipped with skip_corrupt

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _entry(images: np.ndarray, labels: np.ndarray, classes: list[str], skipped: list[str]) -> cache.CacheEntry:
    return cache.CacheEntry(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        skipped=skipped,
    )


def _decode_archive(
    source: Source, split: str, skip_corrupt: bool, cache_path: Callable[[str], Path]
) -> cache.CacheEntry:
    """Decode ``split`` of an ImageFolder archive read into memory in one pass; the archive's
    other splits are decoded from the same read and cached too (a later load of them is then
    a cache hit), unless they fail, in which case their own load reports why."""
    files, dirs = read_archive(source.path)
    tree = imagefolder.MemoryTree(files, dirs, str(source.path))
    entry = _entry(*imagefolder.decode_split(tree, split, skip_corrupt=skip_corrupt))
    root = imagefolder.tree_root(tree)
    done = posixpath.basename(imagefolder.split_dir(tree, root, split))
    for other in tree.subdirs(root):
        if other in SPLITS and other != done and not cache_path(other).is_file():
            try:
                cache.save(cache_path(other), _entry(*imagefolder.decode_split(tree, other, skip_corrupt=skip_corrupt)))
            except DataError as exc:
                log.info("not caching split %r of %s now: %s", other, source.path, exc)
    return entry


def _decode(source: Source, split: str, skip_corrupt: bool, cache_path: Callable[[str], Path]) -> cache.CacheEntry:
    if source.kind in (CIFAR_ARCHIVE, CIFAR_FOLDER):
        images, labels, classes = cifar_python.load_cifar(source.path, source.spec, split)
        return _entry(images, labels, classes, [])
    if source.kind == TREE_ARCHIVE:
        return _decode_archive(source, split, skip_corrupt, cache_path)
    tree = imagefolder.DiskTree(source.path)
    return _entry(*imagefolder.decode_split(tree, split, skip_corrupt=skip_corrupt))


def load_split(
    dataset: str,
    split: str,
    *,
    data: str | os.PathLike[str] | None = None,
    skip_corrupt: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ImageDataset:
    """Load one split of ``dataset`` as uint8 tensors, decoding only the first time.

    ``dataset`` is ``"cifar10"``, ``"cifar100"`` (searched for as described in
    :mod:`senet.data.locate`, downloaded if allowed), ``"imagefolder"`` with ``data`` a path,
    or the path of an ImageFolder tree / ``.tar`` / ``.tar.gz`` archive. ``split`` is
    ``"train"`` or ``"test"`` (``"val"`` for trees that name it so). Decoded splits are cached
    under ``cache_dir`` (else ``$SENET_CACHE``, else ``~/.cache/senet``) in ``tensors/``.
    Corrupt images are a :class:`DataError` naming the file, unless ``skip_corrupt``: then
    they are left out and listed in ``.skipped``.
    """
    split = split.lower()
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = cache.cache_root(cache_dir)
    source = locate(dataset, data, root, download=download)
    if source.kind in (CIFAR_ARCHIVE, CIFAR_FOLDER) and split == "val":
        raise DataError(f"{source.path} (CIFAR python format) has the splits 'train' and 'test', not 'val'")
    if source.kind == TREE:
        tree_root = imagefolder.find_tree_root(source.path)
        source = Source(TREE, tree_root)
        key = cache.fingerprint(imagefolder.split_folder(tree_root, split))
    else:
        key = cache.fingerprint(source.path)
    name = archive_stem(source.path) if source.kind in (CIFAR_ARCHIVE, TREE_ARCHIVE) else source.path.name

    def cache_path(s: str) -> Path:
        return cache.tensor_cache_path(root, name, s, key)

    entry = cache.load(cache_path(split))
    if entry is None:
        entry = _decode(source, split, skip_corrupt, cache_path)
        cache.save(cache_path(split), entry)
    else:
        log.info("loaded %d decoded images from %s", len(entry.labels), cache_path(split))
    if entry.skipped and not skip_corrupt:
        raise DataError(
            f"{source.path} ({split}) has {len(entry.skipped)} corrupt image(s), e.g. {entry.skipped[0]}; "
            "pass skip_corrupt=True / --skip-corrupt to leave them out"
        )
    expected = _EXPECTED_CLASSES.get(dataset.lower().replace("-", ""))
    if expected is not None and len(entry.classes) != expected:
        raise DataError(f"{source.path} has {len(entry.classes)} classes, but {dataset} has {expected}")
    return ImageDataset(
        images=entry.images, labels=entry.labels, classes=entry.classes, source=str(source.path), skipped=entry.skipped
    )


def channel_stats(ds: ImageDataset) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) standard deviation of ``ds.images`` scaled to [0, 1].

    Exact: computed from a 256-bin histogram per channel in float64.
    """
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(ds.images.shape[1]):
        counts = torch.bincount(ds.images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        if total == 0:
            raise DataError(f"cannot compute channel statistics of an empty dataset ({ds.source})")
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return (means[0], means[1], means[2]), (stds[0], stds[1], stds[2])

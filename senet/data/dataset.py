"""In-memory datasets: :func:`load_split` finds, decodes once, caches and returns a split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from senet.data import cache, cifar_python, imagefolder
from senet.data.archive import archive_stem, extract_archive
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


def _decode(source: Source, split: str, root: Path, key: str, skip_corrupt: bool) -> cache.CacheEntry:
    if source.kind in (CIFAR_ARCHIVE, CIFAR_FOLDER):
        images, labels, classes = cifar_python.load_cifar(source.path, source.spec, split)
        skipped: list[str] = []
    else:
        if source.kind == TREE_ARCHIVE:
            tree = extract_archive(source.path, root / "extracted" / f"{archive_stem(source.path)}-{key}")
            tree_root = imagefolder.find_tree_root(tree)

            def display(p: Path) -> str:
                return f"{source.path}:{os.path.relpath(p, tree)}"
        else:
            tree_root = imagefolder.find_tree_root(source.path)
            display = str
        images, labels, classes, skipped = imagefolder.decode_split(
            tree_root, split, skip_corrupt=skip_corrupt, display=display
        )
    return cache.CacheEntry(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        skipped=skipped,
    )


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
    under ``cache_dir`` (else ``$SENET_CACHE``, else ``~/.cache/senet``).
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
        key = cache.fingerprint(imagefolder.split_folder(tree_root, split))
    else:
        key = cache.fingerprint(source.path)
    name = archive_stem(source.path) if source.kind in (CIFAR_ARCHIVE, TREE_ARCHIVE) else source.path.name
    path = cache.tensor_cache_path(root, name, split, key)

    entry = cache.load(path)
    if entry is None:
        entry = _decode(source, split, root, key, skip_corrupt)
        cache.save(path, entry)
    else:
        log.info("loaded %d decoded images from %s", len(entry.labels), path)
    if entry.skipped and not skip_corrupt:
        raise DataError(
            f"{source.path} ({split}) has {len(entry.skipped)} corrupt image(s), e.g. {entry.skipped[0]}; "
            "pass skip_corrupt=True / --skip-corrupt to train without them"
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

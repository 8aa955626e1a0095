"""The training and test splits of a run, checked before any training step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from senet.data import ImageDataset, channel_stats, load_split
from senet.errors import DataError
from senet.train.config import DatasetConfig

SUBSET_SEED = 20180101  # subsets are the same for every training seed, so seeds stay comparable


@dataclass
class Splits:
    train: ImageDataset
    test: ImageDataset
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def subset(ds: ImageDataset, n: int) -> ImageDataset:
    """The fixed random ``n`` images of ``ds`` a run with ``data.train_subset`` /
    ``data.test_subset`` = ``n`` uses (the same for every seed); all of them when ``n`` is 0."""
    if not n or n >= len(ds.labels):
        return ds
    idx = torch.randperm(len(ds.labels), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
    idx = idx.sort().values
    return ImageDataset(images=ds.images[idx], labels=ds.labels[idx], classes=ds.classes, source=ds.source,
                        skipped=ds.skipped)


def check_labels(ds: ImageDataset, split: str) -> None:
    """Every label must name one of the classes (an error before training, not a crash in it)."""
    if ds.labels.numel() == 0:
        raise DataError(f"the {split} split of {ds.source} has no images")
    lo, hi = int(ds.labels.min()), int(ds.labels.max())
    if lo < 0 or hi >= len(ds.classes):
        bad = int(((ds.labels < 0) | (ds.labels >= len(ds.classes))).sum())
        raise DataError(
            f"the {split} split of {ds.source} has {bad} label(s) outside 0..{len(ds.classes) - 1} "
            f"(found {lo}..{hi} for {len(ds.classes)} classes)"
        )


def load_splits(cfg: DatasetConfig) -> Splits:
    """Load (and cache) both splits, check their labels and classes, take the subsets; the
    normalisation statistics are those of the whole training split."""
    kw = dict(data=cfg.path, skip_corrupt=cfg.skip_corrupt, download=cfg.download)
    train = load_split(cfg.dataset, "train", **kw)
    test = load_split(cfg.dataset, "test", **kw)  # an ImageFolder tree's val/ serves as test/
    if test.classes != train.classes:
        raise DataError(
            f"the train and test splits of {train.source} have different classes "
            f"({len(train.classes)} vs {len(test.classes)})"
        )
    for ds, split in ((train, "train"), (test, "test")):
        check_labels(ds, split)
        if ds.images.shape[1] != 3:
            raise DataError(f"the {split} split of {ds.source} has {ds.images.shape[1]} channels; expected 3 (RGB)")
    mean, std = channel_stats(train)
    return Splits(subset(train, cfg.train_subset), subset(test, cfg.test_subset), mean, std)

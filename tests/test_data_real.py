"""The shared real CIFAR-10 copy (``../shared/data/cifar10-jpeg.tar.gz``), read into a fresh
temporary cache: the first load decodes the archive (about 15 s on 2 cores; it decodes and
caches both splits from one read), the next ones read the tensor cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from senet.data import load_split

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"shared data not found at {ARCHIVE}")


def test_shared_cifar10_archive_loads(tmp_path: Path) -> None:
    test = load_split("cifar10", "test", data=ARCHIVE, cache_dir=tmp_path)
    assert test.images.shape == (10_000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert test.labels.dtype == torch.int64 and test.classes == CLASSES and test.skipped == []
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert 100 < float(test.images.float().mean()) < 150  # real photos, not blank
    train = load_split("cifar10", "train", data=ARCHIVE, cache_dir=tmp_path)  # cached by the first load
    assert train.images.shape == (50_000, 3, 32, 32) and torch.bincount(train.labels).tolist() == [5000] * 10
    again = load_split("cifar10", "test", data=ARCHIVE, cache_dir=tmp_path)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)

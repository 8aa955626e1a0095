"""Shared fixtures: small ImageFolder datasets built on the fly, an isolated data cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def make_tree(root: Path, *, classes: int = 4, train: int = 16, test: int = 8, size: int = 16, seed: int = 0) -> Path:
    """An ImageFolder tree ``root/{train,test}/<class>/<n>.png`` of learnable images: each class
    has its own colour, plus noise. Returns ``root``."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, size=(classes, 3))
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(-30, 31, size=(size, size, 3))
                pixels = np.clip(colours[c] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-data caches go to a per-session temporary folder, never to ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "senet-cache"
    monkeypatch.setenv("SENET_CACHE", str(cache))
    return cache

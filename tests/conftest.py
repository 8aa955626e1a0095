"""Shared fixtures: small ImageFolder datasets built on the fly, an isolated data cache."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# `make test` runs two pytest-xdist workers on the two cores: one torch thread each
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

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


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine parameters and random biases of every convolution and
    linear layer (SE layers included): default inits leave them trivial, which would hide a
    wrong weight mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return model


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-data caches go to a per-session temporary folder, never to ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "senet-cache"
    monkeypatch.setenv("SENET_CACHE", str(cache))
    return cache


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server (a thread) serving ``tmp_path / "www"``: (base URL, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` (each one tens of seconds: real-data training, subprocess
    kill/resume, torchrun) run first: `make test`'s two workers then share the many short tests
    at the end, instead of one worker finishing a long test alone while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

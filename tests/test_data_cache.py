"""The decoded-tensor cache: later loads skip decoding, a changed source is decoded again, a
damaged cache file is rebuilt, and loading the cache never unpickles anything."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import senet.data.dataset as dataset_mod
from senet.data import cache, imagefolder, load_split
from tests.data_helpers import Marker, make_tree, pixels, tar_folder


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kw: object) -> None:
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(imagefolder, "decode_files", fail)
    monkeypatch.setattr(dataset_mod, "read_archive", fail)


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "tensors").glob("*.safetensors"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "pets")


def test_second_load_uses_the_cache(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    _no_decoding(monkeypatch)
    second = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == first.classes and second.images.dtype == torch.uint8


def test_archive_load_caches_every_split_at_once(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tar_folder(tree, tmp_path / "pets.tar.gz")
    load_split(str(path), "train", cache_dir=tmp_path / "c")
    assert [p.name.split("-")[1] for p in _cache_files(tmp_path / "c")] == ["test", "train"]
    _no_decoding(monkeypatch)
    assert len(load_split(str(path), "test", cache_dir=tmp_path / "c")) == 6
    assert len(load_split(str(path), "train", cache_dir=tmp_path / "c")) == 9


def test_a_changed_tree_is_decoded_again(tree: Path, tmp_path: Path) -> None:
    load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    changed = tree / "train" / "dog" / "001.png"
    Image.fromarray(pixels(9, 9)).save(changed)
    os.utime(changed, ns=(1, 1))  # even with an old mtime: the size or mtime differs
    ds = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(ds.images[4].permute(1, 2, 0).numpy(), pixels(9, 9))
    Image.fromarray(pixels(8, 8)).save(tree / "train" / "dog" / "new.png")  # an added file
    assert len(load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")) == 10


def test_a_changed_archive_is_decoded_again(tree: Path, tmp_path: Path) -> None:
    path = tar_folder(tree, tmp_path / "pets.tar")
    assert len(load_split(str(path), "train", cache_dir=tmp_path / "c")) == 9
    Image.fromarray(pixels(5, 5)).save(tree / "train" / "cat" / "extra.png")
    tar_folder(tree, path)
    assert len(load_split(str(path), "train", cache_dir=tmp_path / "c")) == 10


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "empty", "wrong dtype", "labels out of range", "old format", "pickle with code"],
)
def test_a_damaged_cache_file_is_rebuilt(tree: Path, tmp_path: Path, damage: str) -> None:
    reference = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    (path,) = _cache_files(tmp_path / "c")
    marker = tmp_path / "code-was-executed"
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(good)))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong dtype":
        save_file(
            {"images": reference.images.float(), "labels": reference.labels},
            str(path),
            {"format": cache.FORMAT_VERSION, "classes": "[]", "skipped": "[]"},
        )
    elif damage == "labels out of range":
        meta = {"format": cache.FORMAT_VERSION, "classes": '["only"]', "skipped": "[]"}
        save_file({"images": reference.images, "labels": reference.labels}, str(path), meta)
    elif damage == "old format":
        meta = {"format": "0", "classes": '["cat", "dog", "emu"]', "skipped": "[]"}
        save_file({"images": torch.zeros_like(reference.images), "labels": reference.labels}, str(path), meta)
    else:
        path.write_bytes(pickle.dumps({"images": Marker(marker)}))
    ds = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    assert torch.equal(ds.images, reference.images) and ds.classes == reference.classes
    assert not marker.exists()
    assert torch.equal(load_file(str(path))["images"], reference.images)  # rewritten, valid


def test_loading_the_cache_never_unpickles(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    _no_decoding(monkeypatch)

    def forbidden(*args: object, **kw: object) -> None:
        raise AssertionError("the cache was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    ds = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "c")
    assert len(ds) == 9
    (path,) = _cache_files(tmp_path / "c")
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then JSON


def test_cache_location_comes_from_the_environment(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENET_CACHE", str(tmp_path / "env-cache"))
    load_split("imagefolder", "train", data=tree)
    assert len(_cache_files(tmp_path / "env-cache")) == 1
    monkeypatch.delenv("SENET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_split("imagefolder", "test", data=tree)
    assert len(_cache_files(tmp_path / "home" / ".cache" / "senet")) == 1

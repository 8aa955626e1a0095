"""The ImageNet-style streaming pipeline: per-sample decoding and augmentation in DataLoader
workers, seeded per (seed, epoch, position), sharded over ranks, resumable; evaluation
resize + centre crop as torchvision does it; corrupt files, missing splits and archives."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFile

import senet
from senet.data import EpochOrder, stream_transforms
from senet.data.decode import decode_image
from senet.data.stream import (
    EpochBatchSampler,
    StreamingImageFolder,
    eval_loader,
    sample_seed,
    train_loader,
)
from senet.errors import DataError
from senet.preprocess import IMAGENET_MEAN, IMAGENET_STD
from tests.data_helpers import tar_folder

CLASSES = ("ant", "bee", "cow")
SIZES = ((40, 30), (64, 64), (50, 80), (33, 47), (80, 50), (30, 40))  # (width, height)


def _image(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth gradient plus noise, so crops at different places differ visibly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)], axis=-1)
    return np.clip(base + rng.integers(-20, 21, size=(height, width, 3)), 0, 255).astype(np.uint8)


def build_tree(root: Path, train: int = 6, val: int = 5) -> Path:
    """``root/{train,val}/<class>/`` with images of varied sizes and formats: RGB PNG and JPEG,
    one grayscale, one RGBA and one palette PNG in the first training class."""
    for split, n in (("train", train), ("val", val)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = SIZES[(i + label) % len(SIZES)]
                img = Image.fromarray(_image(w, h, 100 * label + i))
                if split == "train" and label == 0 and i < 3:
                    img = img.convert(("L", "RGBA", "P")[i])
                if i == n - 1:
                    img.save(folder / f"{i:02d}.jpg", quality=90)
                else:
                    img.save(folder / f"{i:02d}.png")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "imagenet")


def _batches(loader: torch.utils.data.DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_constants_and_pinned_sample_seeds() -> None:
    cfg = senet.model_info("se_resnet50").cfg  # what its released weights expect (test_timm_compat: timm's)
    assert (IMAGENET_MEAN, IMAGENET_STD) == (cfg.mean, cfg.std)
    # pinned: a run resumed by a later version must see the same augmentations
    assert sample_seed(0, 0, 0) == 6887765175207290075
    assert sample_seed(1, 2, 3) == 7920589738952054264
    assert sample_seed(2**40, 7, 1281166) == 4787920801950635449
    seeds = {sample_seed(s, e, p) for s in range(3) for e in range(3) for p in range(50)}
    assert len(seeds) == 450 and all(0 <= x < 2**63 for x in seeds)


def test_dataset_lists_the_tree_and_shapes(tree: Path) -> None:
    ds = StreamingImageFolder(tree, "train", train=True, crop=24)
    assert ds.classes == list(CLASSES) and len(ds) == 18
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [c for c in range(3) for _ in range(6)]
    assert ds.files[0] == tree / "train" / "ant" / "00.png" and ds.source == str(tree / "train")
    x, y = ds[(1, 123)]  # an RGBA image
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8 and y == 0
    ev = StreamingImageFolder(tree, "val", train=False, crop=16, resize=20)
    x, y = ev[(14, 0)]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 2 and len(ev) == 15
    # val falls back to test/ and a root one level above the split folders works
    (tree / "val").rename(tree / "test")
    nested = tree.parent
    assert len(StreamingImageFolder(nested, "val", train=False)) == 15
    with pytest.raises(TypeError, match="index, aug_seed"):
        ds[3]  # type: ignore[index]


def test_eval_is_resize_short_side_then_centre_crop_like_torchvision(tree: Path) -> None:
    ev = StreamingImageFolder(tree, "val", train=False, crop=16, resize=20)
    reference = T.Compose([T.Resize(20), T.CenterCrop(16)])
    for i in range(len(ev)):
        x, _ = ev[(i, 0)]
        img = Image.fromarray(decode_image(ev.files[i]))
        expected = torch.from_numpy(np.array(reference(img))).permute(2, 0, 1)
        assert torch.equal(x, expected), ev.files[i]
        assert torch.equal(ev[(i, 99)][0], x)  # the seed is ignored in evaluation
    # odd sizes, a crop offset of x.5 pixels (rounded half to even, as torchvision does)
    for w, h in ((39, 20), (20, 43), (57, 31), (31, 57), (20, 20), (200, 23)):
        img = Image.fromarray(_image(w, h, w * h))
        got = stream_transforms.eval_view(img, resize=20, crop=16)
        assert np.array_equal(got, np.asarray(reference(img))), (w, h)
    # the long side is truncated as torchvision does it
    assert stream_transforms.short_side_size(33, 47, 20) == (20, 28)
    assert stream_transforms.short_side_size(80, 50, 20) == (32, 20)


def _within_bounds(box: tuple[int, int, int, int], width: int, height: int, scale, ratio) -> bool:
    """The crop of the ten-try loop up to rounding to whole pixels (+-0.5 px per side)."""
    _, _, h, w = box
    area = width * height
    return (
        (w - 0.5) * (h - 0.5) <= scale[1] * area
        and (w + 0.5) * (h + 0.5) >= scale[0] * area
        and (w + 0.5) / max(h - 0.5, 1e-9) >= ratio[0]
        and (w - 0.5) / (h + 0.5) <= ratio[1]
    )


def _fallback(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    top, left, h, w = box
    return (w == width or h == height) and top == (height - h) // 2 and left == (width - w) // 2


@pytest.mark.parametrize(("scale", "ratio"), [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 0.6), (0.9, 1.1))])
def test_crop_params_respect_scale_and_ratio(scale, ratio) -> None:
    tries = 0
    for width, height in ((500, 375), (40, 30), (50, 80), (1000, 100)):
        for s in range(300):
            box = stream_transforms.random_resized_crop_params(width, height, scale, ratio, np.random.default_rng(s))
            top, left, h, w = box
            assert 0 <= top and 0 <= left and top + h <= height and left + w <= width and h > 0 and w > 0
            assert _within_bounds(box, width, height, scale, ratio) or _fallback(box, width, height), box
            tries += _within_bounds(box, width, height, scale, ratio)
    assert tries > 600  # mostly the ten-try crop, not the fallback
    # a very wide image cannot fit the ratio: the fallback clamps it to the widest ratio
    box = stream_transforms.random_resized_crop_params(1000, 100, (0.9, 1.0), ratio, np.random.default_rng(0))
    assert box == (0, (1000 - round(100 * ratio[1])) // 2, 100, round(100 * ratio[1]))


def test_train_view_is_the_drawn_crop_resized_and_maybe_flipped(tree: Path, monkeypatch) -> None:
    calls = []
    original = stream_transforms.random_resized_crop_params

    def record(width, height, scale, ratio, rng):
        box = original(width, height, scale, ratio, rng)
        calls.append((width, height, scale, ratio, box))
        return box

    monkeypatch.setattr(stream_transforms, "random_resized_crop_params", record)
    ds = StreamingImageFolder(tree, "train", train=True, crop=12, scale=(0.3, 0.7), ratio=(0.8, 1.25))
    flips = set()
    for i in range(len(ds)):
        x, _ = ds[(i, 1000 + i)]
        width, height, scale, ratio, box = calls[-1]
        img = Image.fromarray(decode_image(ds.files[i]))
        assert (width, height) == img.size and scale == (0.3, 0.7) and ratio == (0.8, 1.25)
        assert _within_bounds(box, width, height, scale, ratio) or _fallback(box, width, height)
        plain = torch.from_numpy(np.array(TF.resized_crop(img, *box, [12, 12]))).permute(2, 0, 1)
        flipped = plain.flip(-1)
        assert torch.equal(x, plain) or torch.equal(x, flipped)
        flips.add(torch.equal(x, flipped) and not torch.equal(plain, flipped))
    assert flips == {True, False}
    no_flip = StreamingImageFolder(tree, "train", train=True, crop=12, flip=False)
    for s in range(10):
        x, _ = no_flip[(2, s)]
        box = calls[-1][-1]
        img = Image.fromarray(decode_image(no_flip.files[2]))
        assert torch.equal(x, torch.from_numpy(np.array(TF.resized_crop(img, *box, [12, 12]))).permute(2, 0, 1))


def test_same_key_same_view_other_seed_other_view(tree: Path) -> None:
    ds = StreamingImageFolder(tree, "train", train=True, crop=16)
    a, b = ds[(4, 77)][0], ds[(4, 77)][0]
    assert torch.equal(a, b)
    views = {ds[(4, s)][0].numpy().tobytes() for s in range(12)}
    assert len(views) >= 10


def test_sampler_keys_are_seeded_by_position(tree: Path) -> None:
    order = EpochOrder(18, 6, seed=5)
    sampler = EpochBatchSampler(order, epoch=3)
    assert len(sampler) == 3 and len(EpochBatchSampler(order, 3, start_step=2)) == 1
    perm = order.permutation(3).tolist()
    keys = [k for batch in sampler for k in batch]
    assert [i for i, _ in keys] == perm
    assert [s for _, s in keys] == [sample_seed(5, 3, p) for p in range(18)]
    other = [k for batch in EpochBatchSampler(order, epoch=4) for k in batch]
    assert {s for _, s in other}.isdisjoint({s for _, s in keys})
    with pytest.raises(ValueError, match="start_step"):
        EpochBatchSampler(order, 0, start_step=4)


def test_train_batches_do_not_depend_on_workers_resume_or_ranks(tree: Path) -> None:
    ds = StreamingImageFolder(tree, "train", train=True, crop=16)
    order = EpochOrder(len(ds), 6, seed=1)
    loader = train_loader(ds, order, epoch=2, workers=0)
    assert len(loader) == 3
    full = _batches(loader)
    assert [x.shape for x, _ in full] == [(6, 3, 16, 16)] * 3 and full[0][0].dtype == torch.uint8
    assert [y.dtype for _, y in full] == [torch.int64] * 3
    assert torch.equal(torch.cat([y for _, y in full]), ds.labels[order.permutation(2)][:18])
    with_workers = _batches(train_loader(ds, order, epoch=2, workers=2))
    for (x0, y0), (x2, y2) in zip(full, with_workers, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    resumed = _batches(train_loader(ds, order, epoch=2, start_step=2, workers=0))
    assert len(resumed) == 1 and torch.equal(resumed[0][0], full[2][0]) and torch.equal(resumed[0][1], full[2][1])
    ranks = [_batches(train_loader(ds, EpochOrder(18, 6, seed=1, rank=r, world_size=2), 2, workers=0)) for r in (0, 1)]
    for step in range(3):
        assert torch.equal(torch.cat([ranks[0][step][0], ranks[1][step][0]]), full[step][0])
        assert torch.equal(torch.cat([ranks[0][step][1], ranks[1][step][1]]), full[step][1])
    assert not torch.equal(_batches(train_loader(ds, order, epoch=3, workers=0))[0][0], full[0][0])
    with pytest.raises(ValueError, match="18"):
        train_loader(ds, EpochOrder(20, 6, seed=1), 0)


def test_no_global_rng_is_consumed(tree: Path) -> None:
    ds = StreamingImageFolder(tree, "train", train=True, crop=16)
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    for _ in train_loader(ds, EpochOrder(len(ds), 6, seed=0), epoch=0, workers=0):
        break
    next(iter(eval_loader(ds, 4, workers=0)))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state


def test_eval_shards_partition_the_dataset(tree: Path) -> None:
    ev = StreamingImageFolder(tree, "val", train=False, crop=16, resize=20)
    whole = _batches(eval_loader(ev, 4, workers=0))
    assert [len(y) for _, y in whole] == [4, 4, 4, 3]
    assert torch.equal(torch.cat([y for _, y in whole]), ev.labels)
    shards = [_batches(eval_loader(ev, 4, rank=r, world_size=2, workers=0)) for r in (0, 1)]
    assert [sum(len(y) for _, y in s) for s in shards] == [8, 7]
    assert torch.equal(torch.cat([x for s in shards for x, _ in s]), torch.cat([x for x, _ in whole]))
    assert torch.equal(torch.cat([y for s in shards for _, y in s]), ev.labels)
    assert len(eval_loader(ev, 4, rank=15, world_size=16, workers=0)) == 0  # more ranks than images
    with pytest.raises(ValueError, match="rank"):
        eval_loader(ev, 4, rank=2, world_size=2)


def test_corrupt_file_is_an_error_or_replaced_with_a_warning(tree: Path, caplog, monkeypatch) -> None:
    bad = tree / "train" / "bee" / "03.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = StreamingImageFolder(tree, "train", train=True, crop=16)
    index = ds.files.index(bad)
    with pytest.raises(DataError, match="03.png"):
        ds[(index, 0)]
    ds[(index + 1, 0)]  # the others are fine
    skip = StreamingImageFolder(tree, "train", train=True, crop=16, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="senet.data.stream"):
        x, y = skip[(index, 5)]
    assert str(bad) in caplog.text
    assert torch.equal(x, skip[(index + 1, 5)][0]) and y == int(skip.labels[index])
    # a truncated file is an error even where PIL was told to pad truncated images
    last = tree / "val" / "cow" / "04.jpg"
    last.write_bytes(last.read_bytes()[:-200])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="04.jpg"):
        StreamingImageFolder(tree, "val", train=False, crop=16, resize=20)[(14, 0)]
    # a corrupt last file is replaced by the first one (wrapping round)
    ev = StreamingImageFolder(tree, "val", train=False, crop=16, resize=20, skip_corrupt=True)
    assert torch.equal(ev[(14, 0)][0], ev[(0, 0)][0])


def test_missing_root_or_split_is_a_data_error(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.*train/<class>/<image>"):
        StreamingImageFolder(tmp_path / "nowhere", "train", train=True)
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    (tree / "train").rename(only_train / "train")
    with pytest.raises(DataError, match=r"only_train.*no val or test folder.*<class>/<image>"):
        StreamingImageFolder(only_train, "val", train=False)
    with pytest.raises(DataError, match="unknown split"):
        StreamingImageFolder(only_train, "holdout", train=False)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not a .tar"):
        StreamingImageFolder(tmp_path / "notes.txt", "train", train=True)


def test_archive_root_is_extracted_once_and_read(tree: Path, tmp_path: Path, isolated_cache: Path) -> None:
    archive = tmp_path / "imagenet.tar.gz"
    tar_folder(tree, archive)
    ds = StreamingImageFolder(archive, "val", train=False, crop=16, resize=20)
    assert Path(ds.source).is_relative_to(isolated_cache / "extracted") and Path(ds.source).name == "val"
    ref = StreamingImageFolder(tree, "val", train=False, crop=16, resize=20)
    assert len(ds) == len(ref) and torch.equal(ds[(7, 0)][0], ref[(7, 0)][0])
    marker = Path(ds.source) / "marker"
    marker.write_text("")
    again = StreamingImageFolder(archive, "train", train=True, crop=16)  # the same extraction
    assert again.source == str(marker.parent.parent / "train") and marker.exists() and len(again) == 18

"""Odd images and odd ImageFolder trees: explicit RGB conversion, corrupt and truncated files,
skip_corrupt, empty classes, non-image files, train/test class mismatch."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from senet.data import channel_stats, load_split
from senet.data.decode import decode_image
from senet.errors import DataError
from tests.data_helpers import expected_split, make_tree, pixels


def _bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _load(tree: Path, tmp_path: Path, split: str = "train", **kw: object):
    return load_split("imagefolder", split, data=tree, cache_dir=tmp_path / "cache", **kw)


# --- explicit RGB conversion of every mode -----------------------------------------------


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = decode_image(_bytes(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_bilevel_image_is_black_and_white() -> None:
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    out = decode_image(_bytes(bits, "PNG"))
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [255, 0]])
    assert (out[..., 0] == out[..., 2]).all()


def test_rgba_is_composited_onto_black() -> None:
    rgba = np.array([[[200, 100, 50, 128], [200, 100, 50, 0], [200, 100, 50, 255], [10, 20, 30, 51]]], dtype=np.uint8)
    out = decode_image(_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    # rgb * alpha / 255, rounded: 200 * 128 / 255 = 100.4 -> 100, 50 * 128 / 255 = 25.1 -> 25
    np.testing.assert_array_equal(out[0], [[100, 50, 25], [0, 0, 0], [200, 100, 50], [2, 4, 6]])


def test_gray_with_alpha_is_composited_onto_black() -> None:
    la = np.array([[[255, 255], [255, 0], [100, 102]]], dtype=np.uint8)
    out = decode_image(_bytes(Image.fromarray(la, "LA"), "PNG"))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 0, 0], [40, 40, 40]])


def _palette_image() -> Image.Image:
    img = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), "P")
    img.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 250] + [0] * (256 * 3 - 9))
    return img


def test_palette_image_is_looked_up() -> None:
    out = decode_image(_bytes(_palette_image(), "PNG"))
    np.testing.assert_array_equal(out, [[[255, 0, 0], [0, 255, 0]], [[10, 20, 250], [0, 255, 0]]])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_onto_black(fmt: str) -> None:
    data = _bytes(_palette_image(), fmt, transparency=1)  # index 1 (green) is transparent
    out = decode_image(data)
    np.testing.assert_array_equal(out, [[[255, 0, 0], [0, 0, 0]], [[10, 20, 250], [0, 0, 0]]])


def test_rgb_colour_key_transparency_is_composited_onto_black() -> None:
    rgb = np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8)
    out = decode_image(_bytes(Image.fromarray(rgb, "RGB"), "PNG", transparency=(9, 9, 9)))
    np.testing.assert_array_equal(out[0], [[1, 2, 3], [0, 0, 0]])


def test_cmyk_is_converted_as_pil_does() -> None:
    cmyk = np.array(
        [[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255], [30, 60, 90, 20]]], dtype=np.uint8
    )
    img = Image.fromarray(cmyk, "CMYK")
    out = decode_image(_bytes(img, "TIFF"))  # lossless
    np.testing.assert_array_equal(out[0, :4], [[255, 255, 255], [0, 255, 255], [255, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))
    jpeg = _bytes(Image.fromarray(np.tile(cmyk, (8, 2, 1)), "CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(jpeg)) as reference:
        assert reference.mode == "CMYK"
        np.testing.assert_array_equal(decode_image(jpeg), np.asarray(reference.convert("RGB")))


def test_16bit_grayscale_keeps_the_top_8_bits() -> None:
    gray16 = np.array([[0x0000, 0x12FF], [0x8000, 0xFFFF]], dtype=np.uint16)
    img = Image.fromarray(gray16)
    assert img.mode.startswith("I")
    out = decode_image(_bytes(img, "PNG"))
    np.testing.assert_array_equal(out[..., 1], [[0x00, 0x12], [0x80, 0xFF]])
    assert (out[..., 0] == out[..., 2]).all()


def test_odd_modes_load_through_a_tree(tmp_path: Path) -> None:
    """Every image of the split ends up RGB [N, 3, H, W], whatever its mode and format."""
    tree = make_tree(tmp_path / "tree", classes=("a", "b"), per_class={"train": 1, "test": 1})
    folder = tree / "train" / "a"
    base = Image.fromarray(pixels(0, 0))
    base.convert("L").save(folder / "gray.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("P").save(folder / "pal.gif")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.save(folder / "rgb.bmp")
    ds = _load(tree, tmp_path)
    assert ds.images.shape == (7, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 0, 0, 0, 0, 1]
    names = sorted(p.name for p in folder.iterdir())  # files are sorted within a class
    assert names == ["000.png", "cmyk.jpg", "gray.png", "pal.gif", "rgb.bmp", "rgba.png"]
    np.testing.assert_array_equal(ds.images[2].numpy(), np.repeat(np.asarray(base.convert("L"))[None], 3, 0))
    np.testing.assert_array_equal(ds.images[4].permute(1, 2, 0).numpy(), pixels(0, 0))  # BMP is lossless


# --- corrupt and truncated files -----------------------------------------------------------


def _jpeg(arr: np.ndarray) -> bytes:
    return _bytes(Image.fromarray(arr), "JPEG", quality=90)


def _png(arr: np.ndarray) -> bytes:
    return _bytes(Image.fromarray(arr), "PNG")


BAD_FILES = {
    "jpeg cut in half": ("bad.jpg", lambda: _jpeg(pixels(0, 0, 32))[: len(_jpeg(pixels(0, 0, 32))) // 2]),
    "jpeg without its end marker": ("bad.jpg", lambda: _jpeg(pixels(0, 0, 32))[:-2]),
    "png cut in its image data": ("bad.png", lambda: _png(pixels(0, 0, 32))[:1500]),
    "png cut before IEND": ("bad.png", lambda: _png(pixels(0, 0, 32))[:-12]),
    "png with a flipped byte": (
        "bad.png",
        lambda: _png(pixels(0, 0, 32))[:1000] + b"\xff" + _png(pixels(0, 0, 32))[1001:],
    ),
    "random bytes": ("bad.jpg", lambda: bytes(range(256)) * 4),
    "empty file": ("bad.png", lambda: b""),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_corrupt_or_truncated_image_is_an_error_naming_the_file(tmp_path: Path, case: str) -> None:
    tree = make_tree(tmp_path / "tree", size=32, per_class={"train": 2, "test": 1})
    name, make = BAD_FILES[case]
    bad = tree / "train" / "dog" / name
    bad.write_bytes(make())
    with pytest.raises(DataError, match="cannot decode image") as info:
        _load(tree, tmp_path)
    assert str(bad) in str(info.value) and "skip" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_images_fail_even_if_pil_is_told_to_load_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: float
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set globally by some other library
    tree = make_tree(tmp_path / "tree", size=32, per_class={"train": 2, "test": 1})
    jpeg = _jpeg(pixels(0, 0, 32))
    (tree / "train" / "cat" / "cut.jpg").write_bytes(jpeg[: int(len(jpeg) * keep)])
    with pytest.raises(DataError, match="cut.jpg"):
        _load(tree, tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_skip_corrupt_lists_the_bad_files_and_loads_the_rest(tmp_path: Path) -> None:
    classes = ("cat", "dog", "emu")
    tree = make_tree(tmp_path / "tree", classes=classes)
    bad = [tree / "train" / "cat" / "zz-cut.png", tree / "train" / "emu" / "junk.jpg"]
    bad[0].write_bytes(_png(pixels(0, 0))[:60])
    bad[1].write_bytes(b"not an image")
    ds = _load(tree, tmp_path, skip_corrupt=True)
    assert sorted(ds.skipped) == sorted(str(p) for p in bad) and len(ds.skipped) == 2
    images, labels = expected_split(classes, 3, "train")
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    # The decoded split is cached with its skipped files: without skip_corrupt it is refused.
    with pytest.raises(DataError, match="2 corrupt image"):
        _load(tree, tmp_path)


def test_a_class_with_only_corrupt_images_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", per_class={"train": 1, "test": 1})
    (tree / "train" / "dog" / "000.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="dog"):
        _load(tree, tmp_path, skip_corrupt=True)


# --- tree structure ------------------------------------------------------------------------


def test_empty_class_folder_is_an_error(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "train" / "yak").mkdir()
    (tree / "test" / "yak").mkdir()
    with pytest.raises(DataError, match="holds no images") as info:
        _load(tree, tmp_path)
    assert str(tree / "train" / "yak") in str(info.value)


def test_class_folder_with_only_non_images_is_empty(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    for split in ("train", "test"):
        (tree / split / "yak").mkdir()
        (tree / split / "yak" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="yak"):
        _load(tree, tmp_path, split="test")


def test_non_image_and_hidden_files_are_ignored_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    classes = ("cat", "dog", "emu")
    tree = make_tree(tmp_path / "tree", classes=classes)
    (tree / "train" / "cat" / "README.txt").write_text("about cats")
    (tree / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1junk")
    (tree / "train" / "dog" / "labels.csv").write_text("a,b")
    (tree / "train" / "dog" / ".hidden.png").write_bytes(b"junk")  # hidden: not an image of the set
    hidden_dir = tree / "train" / "emu" / ".ipynb_checkpoints"
    hidden_dir.mkdir()
    (hidden_dir / "000-checkpoint.png").write_bytes(b"junk")
    (tree / "train" / ".git").mkdir()  # a hidden folder is not a class
    with caplog.at_level(logging.INFO, logger="senet.data"):
        ds = _load(tree, tmp_path)
    assert ds.classes == list(classes)
    images, labels = expected_split(classes, 3, "train")
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert "ignored 4 non-image file(s)" in caplog.text  # README.txt, .DS_Store, labels.csv, .hidden.png


def test_images_in_sub_folders_of_a_class_belong_to_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", classes=("a", "b"), per_class={"train": 1, "test": 1})
    (tree / "train" / "b" / "more").mkdir()
    Image.fromarray(pixels(7, 7)).save(tree / "train" / "b" / "more" / "x.png")
    ds = _load(tree, tmp_path)
    assert ds.labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(ds.images[2].permute(1, 2, 0).numpy(), pixels(7, 7))


def test_train_and_test_class_folders_must_agree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", classes=("cat", "dog"))
    (tree / "test" / "dog").rename(tree / "test" / "dogs")
    for split in ("train", "test"):
        with pytest.raises(DataError, match="class folders differ") as info:
            _load(tree, tmp_path, split=split)
        assert "dogs" in str(info.value) and "'dog'" in str(info.value)


def test_image_of_another_size_is_an_error_naming_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    odd = tree / "train" / "dog" / "big.png"
    Image.fromarray(pixels(0, 0, 12)).save(odd)
    with pytest.raises(DataError, match="not 8x8") as info:
        _load(tree, tmp_path)
    assert str(odd) in str(info.value) and "12x12" in str(info.value)


def test_val_folder_serves_as_test_and_tree_may_sit_one_level_down(tmp_path: Path) -> None:
    classes = ("cat", "dog", "emu")
    base = make_tree(tmp_path / "outer", classes=classes, per_class={"train": 3, "val": 2}, top="inner")
    ds = load_split("imagefolder", "test", data=tmp_path / "outer", cache_dir=tmp_path / "cache")
    images, labels = expected_split(classes, 2, "val")
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert ds.source == str(base)


def test_not_a_tree_and_unknown_split_are_errors(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.fromarray(pixels(0, 0)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="not an ImageFolder tree"):
        _load(tmp_path / "flat", tmp_path)
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        _load(tree, tmp_path, split="dev")
    with pytest.raises(DataError, match="no train folder"):
        make_tree(tmp_path / "testonly", per_class={"test": 1})
        _load(tmp_path / "testonly", tmp_path)


def test_channel_stats_are_exact(tmp_path: Path) -> None:
    ds = _load(make_tree(tmp_path / "tree"), tmp_path)
    x = ds.images.double() / 255
    mean, std = channel_stats(ds)
    np.testing.assert_allclose(mean, x.mean(dim=(0, 2, 3)).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), rtol=0, atol=1e-12)

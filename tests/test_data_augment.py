"""Batched augmentation: zero pad + random crop, horizontal flip, Cutout (zero after
normalisation), per-channel normalisation, reproducible from the generator's seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from senet.data import GpuAugment

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


def _images(b: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def _norm(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalisation_matches_the_formula() -> None:
    x = _images(4)
    aug = GpuAugment(MEAN, STD)
    torch.testing.assert_close(aug.normalize(x), _norm(x), rtol=0, atol=1e-5)
    plain = GpuAugment(MEAN, STD, crop=None, flip=False, cutout=0)
    torch.testing.assert_close(plain(x, _gen(0)), _norm(x), rtol=0, atol=1e-5)
    assert aug.normalize(x).dtype == torch.float32 and aug.normalize(x).is_contiguous()


def test_reproducible_from_the_generator_seed() -> None:
    x = _images(16)
    aug = GpuAugment(MEAN, STD, cutout=16)
    a, b, c = aug(x, _gen(7)), aug(x, _gen(7)), aug(x, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _windows(padded: torch.Tensor, crop: int) -> torch.Tensor:
    """Every crop x crop window of ``padded`` [C, H, W], and its flip: [positions*2, C, crop, crop]."""
    c = padded.shape[0]
    wins = padded.unfold(1, crop, 1).unfold(2, crop, 1)  # [C, nh, nw, crop, crop]
    wins = wins.permute(1, 2, 0, 3, 4).reshape(-1, c, crop, crop)
    return torch.cat([wins, wins.flip(-1)])


def test_pad_and_crop_keep_the_shape_and_take_a_window_of_the_zero_padded_image() -> None:
    x = _images(12)
    out = GpuAugment(MEAN, STD, pad=4, crop=32, flip=True)(x, _gen(1))
    assert out.shape == (12, 3, 32, 32) and out.dtype == torch.float32
    zero = _norm(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    offsets = set()
    for i in range(12):
        padded = F.pad(_norm(x[i : i + 1]) - zero, (4, 4, 4, 4))[0] + zero[0]  # zero pixels, normalised
        wins = _windows(padded, 32)
        match = torch.nonzero(((wins - out[i]).abs() < 1e-5).flatten(1).all(1)).flatten()
        assert match.numel() >= 1, f"image {i} is not a crop of its padded image"
        offsets.add(int(match[0]) % (9 * 9))
    assert len(offsets) > 3  # crops differ between images


def test_padding_is_zero_pixels() -> None:
    """A fully padded corner reads as black (0) before normalisation, i.e. -mean/std."""
    x = torch.full((64, 3, 8, 8), 255, dtype=torch.uint8)
    out = GpuAugment(MEAN, STD, pad=4, crop=8, flip=False)(x, _gen(3))
    black = _norm(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).view(3)
    corner = out[:, :, 0, 0]  # a zero-pad pixel whenever the crop starts above/left of the image
    is_black = (corner - black).abs().max(1).values < 1e-5
    assert 0 < int(is_black.sum()) < 64


def test_flip_probability_is_one_half() -> None:
    x = _images(4000, 4, 4)
    out = GpuAugment(MEAN, STD, crop=None, flip=True)(x, _gen(5))
    plain, flipped = _norm(x), _norm(x).flip(-1)
    is_plain = ((out - plain).abs() < 1e-5).flatten(1).all(1)
    is_flipped = ((out - flipped).abs() < 1e-5).flatten(1).all(1)
    assert bool((is_plain | is_flipped).all())
    assert 0.46 < float(is_flipped.float().mean()) < 0.54  # 4000 draws: sd 0.008
    none = GpuAugment(MEAN, STD, crop=None, flip=False)(x, _gen(5))
    torch.testing.assert_close(none, plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [16, 8, 5])
def test_cutout_zeroes_a_square_after_normalisation(k: int) -> None:
    """The cut pixels are 0 in normalised space (the mean colour), a k x k square centred
    uniformly in the image and clipped at its borders; nothing else changes."""
    n, size = 600, 32
    x = torch.full((n, 3, size, size), 200, dtype=torch.uint8)  # normalised: never 0
    out = GpuAugment(MEAN, STD, crop=None, flip=False, cutout=k)(x, _gen(11))
    cut = (out == 0).all(1)  # [n, H, W]
    assert bool(((out == 0).any(1) == cut).all())  # all channels at once
    torch.testing.assert_close(out[~cut[:, None].expand_as(out)], _norm(x)[~cut[:, None].expand_as(out)])
    full = 0
    for i in range(n):
        ys, xs = torch.nonzero(cut[i], as_tuple=True)
        assert ys.numel() > 0
        top, bottom, left, right = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
        h, w = bottom - top + 1, right - left + 1
        assert ys.numel() == h * w and h <= k and w <= k  # a rectangle
        assert (h == k or top == 0 or bottom == size - 1) and (w == k or left == 0 or right == size - 1)
        full += h == k and w == k
    # centre uniform over the image: the square fits in (size - k + 1) of size positions per axis
    assert abs(full / n - ((size - k + 1) / size) ** 2) < 0.07


def test_cutout_after_crop_and_flip_in_a_real_batch() -> None:
    x = _images(8)
    out = GpuAugment(MEAN, STD, cutout=16)(x, _gen(2))
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert bool((zeros > 0).all()) and bool((zeros <= 256).all())


@pytest.mark.parametrize(
    ("shape", "kw", "out_hw"),
    [
        ((1, 3, 32, 32), {}, (32, 32)),
        ((3, 3, 7, 7), {"pad": 2, "crop": 5, "cutout": 3}, (5, 5)),
        ((5, 3, 10, 14), {"crop": None, "cutout": 4}, (10, 14)),
        ((2, 3, 20, 40), {"pad": 6, "crop": 24}, (24, 24)),
        ((2, 1, 9, 9), {"pad": 0, "crop": 9}, (9, 9)),
    ],
)
def test_batch_size_one_and_odd_shapes(shape: tuple[int, ...], kw: dict, out_hw: tuple[int, int]) -> None:
    c = shape[1]
    x = _images(shape[0], *shape[2:])[:, :c]
    aug = GpuAugment(MEAN[:c], STD[:c], **kw)
    out = aug(x, _gen(0))
    assert out.shape == (shape[0], c, *out_hw)
    assert torch.equal(out, aug(x, _gen(0)))


def test_a_shard_gets_its_rows_of_the_whole_batch_augmentation() -> None:
    """What each process of a group augments: rows offset..offset+B of a global batch."""
    aug = GpuAugment(MEAN, STD, pad=4, crop=32, flip=True, cutout=8)
    x = _images(10)
    whole = aug(x, _gen(5))
    parts = [aug(x[a:b], _gen(5), total=10, offset=a) for a, b in ((0, 5), (5, 10))]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(aug(x[3:4], _gen(5), total=10, offset=3), whole[3:4])
    with pytest.raises(ValueError, match="within a batch of 10"):
        aug(x[:4], _gen(5), total=10, offset=8)


def test_channels_last_output() -> None:
    out = GpuAugment(MEAN, STD, channels_last=True)(_images(2), _gen(0))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_bad_input_is_refused() -> None:
    aug = GpuAugment(MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        aug(_images(2).float(), _gen(0))
    with pytest.raises(ValueError, match="larger than the padded image"):
        GpuAugment(MEAN, STD, pad=0, crop=40)(_images(2), _gen(0))
    with pytest.raises(ValueError, match="std must be positive"):
        GpuAugment(MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="one value per channel"):
        GpuAugment(MEAN, STD[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_a_cpu_generator_gives_the_cpu_result() -> None:
    x = _images(16)
    aug = GpuAugment(MEAN, STD, cutout=8)
    out = aug(x.cuda(), _gen(4))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), aug(x, _gen(4)), rtol=0, atol=1e-5)
    cuda_gen = lambda: torch.Generator(device="cuda").manual_seed(4)  # noqa: E731
    assert torch.equal(aug(x.cuda(), cuda_gen()), aug(x.cuda(), cuda_gen()))

"""Batched CIFAR augmentation on the batch's own device (CPU or GPU).

The standard CIFAR recipe used by the paper's CIFAR experiments (spec section 5 / Table 4;
He et al. 2016): pad 4 pixels with zeros and take a random 32x32 crop, flip horizontally
with probability 1/2, optionally Cutout (DeVries & Taylor 2017: a ``k x k`` square, centred
uniformly in the image and clipped at its borders, set to zero after normalisation, i.e. to
the mean colour), then per-channel ``(x / 255 - mean) / std`` (:class:`Normalize`, the one
normalisation of training and evaluation).

No Python loop over images: the crop and the flip are one gather (the crop offsets and the
flip are folded into per-image row / column index vectors), Cutout is one broadcast mask.
Random draws come only from the given ``torch.Generator`` (drawn on its device, moved to the
batch's), in a fixed order, so a seeded generator reproduces a batch exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


class Normalize:
    """``uint8 [N, C, H, W]`` images as a model's ``float32`` input: per channel
    ``(x / 255 - mean) / std``, computed as one multiply-add (``x * scale + shift``) with the
    scale and shift kept on each device they are used on. The one normalisation of senet:
    training (:class:`GpuAugment`) and evaluation (:func:`senet.data.transforms.normalize`)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if any(not s > 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # (x / 255 - mean) / std == x * scale + shift
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32).view(1, -1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32).view(1, -1, 1, 1)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        device = images.device
        if device not in self._on:
            self._on[device] = (self._scale.to(device), self._shift.to(device))
        scale, shift = self._on[device]
        return images.float().mul_(scale).add_(shift)


class GpuAugment:
    """Random crop (after zero padding), horizontal flip, Cutout and normalisation of a
    ``uint8 [B, C, H, W]`` batch, returning ``float32 [B, C, crop, crop]``.

    ``crop=None`` keeps the image size and skips padding and cropping; ``cutout=0`` disables
    Cutout. With ``channels_last=True`` the output is in ``torch.channels_last`` memory format
    (what the gather produces anyway), otherwise contiguous NCHW.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        pad: int = 4,
        crop: int | None = 32,
        flip: bool = True,
        cutout: int = 0,
        channels_last: bool = False,
    ) -> None:
        self._normalise = Normalize(mean, std)
        if pad < 0 or cutout < 0 or (crop is not None and crop < 1):
            raise ValueError(
                f"pad and cutout must be >= 0 and crop >= 1 or None, got pad={pad} crop={crop} cutout={cutout}"
            )
        self.mean, self.std = self._normalise.mean, self._normalise.std
        self.pad, self.crop, self.flip, self.cutout = pad, crop, flip, cutout
        self.channels_last = channels_last

    def __repr__(self) -> str:
        return (
            f"GpuAugment(mean={self.mean}, std={self.std}, pad={self.pad}, crop={self.crop}, "
            f"flip={self.flip}, cutout={self.cutout})"
        )

    def _check(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != len(self.mean):
            raise ValueError(
                f"expected a uint8 batch [B, {len(self.mean)}, H, W], got {images.dtype} {tuple(images.shape)}"
            )

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Evaluation path: normalisation only."""
        self._check(images_uint8)
        return self._layout(self._normalise(images_uint8))

    def __call__(
        self,
        images_uint8: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        total: int | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """Augment and normalise a batch. Draw order: crop rows, crop columns, flips, Cutout
        rows, Cutout columns (each one value per image).

        ``images_uint8`` may be the rows ``offset .. offset + B`` of a batch of ``total``
        images (one process's shard of a global batch): the draws are made for all ``total``
        and this part's are used, so the result equals augmenting the whole batch and slicing.
        """
        self._check(images_uint8)
        x = images_uint8
        b, _, h, w = x.shape
        total = b if total is None else total
        if not 0 <= offset <= total - b:
            raise ValueError(f"rows {offset}..{offset + b} are not within a batch of {total}")
        device = x.device
        gdev = generator.device if generator is not None else torch.device("cpu")

        def draw(high: int) -> torch.Tensor:
            values = torch.randint(0, high, (total,), generator=generator, device=gdev)
            return values[offset : offset + b].to(device, non_blocking=True)

        if self.crop is not None:
            p, c = self.pad, self.crop
            if c > h + 2 * p or c > w + 2 * p:
                raise ValueError(f"crop {c} is larger than the padded image {h + 2 * p}x{w + 2 * p}")
            if p:
                x = F.pad(x, (p, p, p, p))  # zeros
            ar = torch.arange(c, device=device)
            rows = draw(h + 2 * p - c + 1)[:, None] + ar  # [B, c]
            cols = draw(w + 2 * p - c + 1)[:, None] + ar
            oh = ow = c
        else:
            rows = torch.arange(h, device=device).expand(b, h)
            cols = torch.arange(w, device=device).expand(b, w)
            oh, ow = h, w
        if self.flip:
            flips = draw(2).bool()
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        # One gather: [B, oh, ow, C] (advanced indices first), viewed as NCHW in channels_last layout.
        batch = torch.arange(b, device=device)[:, None, None]
        out = x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        out = self._normalise(out)
        if self.cutout:
            k = self.cutout
            top = draw(oh)[:, None] - k // 2
            left = draw(ow)[:, None] - k // 2
            ys = torch.arange(oh, device=device)
            xs = torch.arange(ow, device=device)
            in_y = (ys >= top) & (ys < top + k)  # [B, oh]
            in_x = (xs >= left) & (xs < left + k)  # [B, ow]
            out = out.masked_fill_((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)
        return self._layout(out)

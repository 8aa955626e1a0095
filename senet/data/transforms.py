"""The evaluation transform of a model, from its pretrained config (timm's ``resolve_data_config``
and ``create_transform``): ``senet predict``, ``senet eval`` and ``senet analyze`` prepare images
the one way the weights were trained for.

Evaluation resizes the short side to ``floor(side / crop_pct)`` with the config's interpolation
and takes the centre ``side x side`` crop (or the ILSVRC entry's 10 crops), makes the model's
channels (images are decoded to RGB; a 1-channel model gets grey, PIL's ``convert("L")``), then
normalises with the config's mean and std (on the batch's device, as training does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from senet.data.stream_transforms import INTERPOLATIONS, eval_view, ten_crop_views
from senet.utils.limits import check_input_size, check_work_size


@dataclass(frozen=True)
class DataConfig:
    """How a model's inputs are prepared for evaluation."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: str
    classes: tuple[str, ...] | None = None

    @property
    def crop(self) -> int:
        return self.input_size[-1]

    @property
    def resize(self) -> int:
        """The short side before the centre crop (256 for a 224 crop at ``crop_pct=0.875``)."""
        return max(self.crop, int(math.floor(self.crop / self.crop_pct)))


def resolve_data_config(
    model_or_cfg: Any, *, input_size: int | None = None, crop_pct: float | None = None,
    interpolation: str | None = None,
) -> DataConfig:
    """The :class:`DataConfig` of a model (its ``pretrained_cfg``) or of a config mapping, with
    ``input_size`` (a side), ``crop_pct`` and ``interpolation`` overridden when given (as Table 8
    evaluates SENet-154 at 320x320)."""
    cfg: Mapping[str, Any] = getattr(model_or_cfg, "pretrained_cfg", None) or model_or_cfg
    size = tuple(cfg["input_size"])
    if input_size is not None:
        if input_size < 1:
            raise ValueError(f"--input-size must be >= 1, got {input_size}")
        size = (size[0], input_size, input_size)
    pct = cfg.get("crop_pct", 1.0) if crop_pct is None else crop_pct
    if not 0 < pct <= 1:
        raise ValueError(f"--crop-pct must be in (0, 1], got {pct}")
    interp = interpolation or cfg.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interp!r}; allowed: {', '.join(INTERPOLATIONS)}")
    classes = cfg.get("classes")
    channels = size[0]
    if channels not in (1, 3):
        raise ValueError(f"the model takes {channels}-channel input; senet's image pipeline makes RGB (3 channels) "
                         "or grey (1 channel) images only")
    for key in ("mean", "std"):
        if len(cfg[key]) != channels:
            raise ValueError(f"the model's config has {len(cfg[key])} {key} values for {channels} input channel(s)")
    out = DataConfig(size, tuple(cfg["mean"]), tuple(cfg["std"]), float(pct), interp,
                     tuple(classes) if classes is not None else None)
    # the short side is resized first: an image at least resize x resize, RGB uint8
    check_work_size(f"--input-size {out.crop} with --crop-pct {pct:g} (each image's short side resized to "
                    f"{out.resize:,} pixels)", (out.resize, out.resize, 3), 1)
    return out


def check_eval_sizes(model: nn.Module, cfg: DataConfig, *, batch_size: int, images: int,
                     ten_crop: bool = False) -> None:
    """Refuse, before any image is read, an input size ``model`` cannot run at and a batch of
    views (``min(batch_size, images)`` images, 10 views each with ``ten_crop``) too large to
    allocate (:mod:`senet.utils.limits`); the messages name ``--input-size`` / ``--batch-size``."""
    n = max(1, min(batch_size, images)) * (10 if ten_crop else 1)
    check_work_size(f"--batch-size {batch_size} at --input-size {cfg.crop}{' with --ten-crop' if ten_crop else ''}",
                    (n, *cfg.input_size))
    check_input_size(model, cfg.input_size, "--input-size")


def eval_crops(image: np.ndarray | Image.Image, cfg: DataConfig, *, ten_crop: bool = False) -> torch.Tensor:
    """``uint8 [V, 3, side, side]`` views of an RGB image (``V`` = 1, or 10 with ``ten_crop``)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if ten_crop:
        views = ten_crop_views(img, resize=cfg.resize, crop=cfg.crop, interpolation=cfg.interpolation)
    else:
        views = eval_view(img, resize=cfg.resize, crop=cfg.crop, interpolation=cfg.interpolation)[None]
    return torch.from_numpy(np.ascontiguousarray(views.transpose(0, 3, 1, 2)))


#: ITU-R 601-2 luma weights in units of 1/65536, as PIL's ``Image.convert("L")`` applies them.
_LUMA = (19595, 38470, 7471)


def to_grey(batch: torch.Tensor) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` RGB images as ``uint8 [N, 1, H, W]`` grey ones, exactly as PIL's
    ``convert("L")`` computes them (``(19595 R + 38470 G + 7471 B + 32768) >> 16``)."""
    weights = torch.tensor(_LUMA, dtype=torch.int32, device=batch.device).view(1, 3, 1, 1)
    luma = (batch.to(torch.int32) * weights).sum(1, keepdim=True) + 0x8000
    return luma.bitwise_right_shift(16).to(torch.uint8)


def normalize(batch: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` RGB images as the model's float input: made grey for a 1-channel
    model (:func:`to_grey`), then ``(x / 255 - mean) / std``."""
    channels = cfg.input_size[0]
    if batch.shape[1] != channels:
        if not (channels == 1 and batch.shape[1] == 3):
            raise ValueError(f"cannot make {channels}-channel input from {batch.shape[1]}-channel images")
        batch = to_grey(batch)
    mean = torch.tensor(cfg.mean, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=batch.device).view(1, -1, 1, 1)
    return (batch.float().div_(255) - mean) / std


def batch_transform(cfg: DataConfig, stored: tuple[int, int], *, ten_crop: bool = False
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input of a model for a ``uint8 [N, 3, H, W]`` batch of stored images (``stored`` = (H, W)):
    normalised as they are when they already have the config's size (CIFAR at 32x32), else each
    resized and cropped by :func:`eval_crops` first (``N * 10`` views with ``ten_crop``)."""
    as_stored = not ten_crop and tuple(stored) == (cfg.crop, cfg.crop) and cfg.resize == cfg.crop

    def transform(batch: torch.Tensor) -> torch.Tensor:
        if not as_stored:
            views = [eval_crops(img.permute(1, 2, 0).cpu().numpy(), cfg, ten_crop=ten_crop) for img in batch]
            batch = torch.cat(views).to(batch.device)
        return normalize(batch, cfg)

    return transform


class ViewAverage(nn.Module):
    """``model`` on ``views`` consecutive views of each image (the 10 crops): the log of the mean
    of their probabilities, a valid input for cross-entropy and top-k."""

    def __init__(self, model: nn.Module, views: int) -> None:
        super().__init__()
        self.model = model
        self.views = views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.model(x).float().softmax(1)
        return probs.view(-1, self.views, probs.shape[-1]).mean(1).log()


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 class names, in the order of the released models' outputs (the
    first WordNet lemma of each synset)."""
    text = resources.files("senet.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in text.splitlines() if "\t" in line)

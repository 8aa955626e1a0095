"""The evaluation transform of a model, from its pretrained config (timm's ``resolve_data_config``
and ``create_transform``): ``senet predict``, ``senet eval`` and ``senet analyze`` prepare images
the one way the weights were trained for.

Evaluation resizes the short side to ``floor(side / crop_pct)`` with the config's interpolation
and takes the centre ``side x side`` crop (or the ILSVRC entry's 10 crops), makes the model's
channels (images are decoded to RGB; a 1-channel model gets grey, PIL's ``convert("L")``), then
normalises with the config's mean and std (on the batch's device, as training does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from senet.data.augment import Normalize
from senet.data.stream_transforms import eval_view, ten_crop_views
from senet.preprocess import PretrainedCfg
from senet.utils.limits import check_input_size, check_work_size


def resolve_data_config(
    model_or_cfg: Any, *, input_size: int | None = None, crop_pct: float | None = None,
    interpolation: str | None = None,
) -> PretrainedCfg:
    """The :class:`~senet.preprocess.PretrainedCfg` of a model (its ``pretrained_cfg``) or of a
    config mapping, with ``input_size`` (a side), ``crop_pct`` and ``interpolation`` overridden
    when given (as Table 8 evaluates SENet-154 at 320x320)."""
    cfg: Mapping[str, Any] = getattr(model_or_cfg, "pretrained_cfg", None) or model_or_cfg
    out = PretrainedCfg.from_dict({"crop_pct": 1.0, **cfg})  # a mapping without crop_pct: no crop
    for option, key, value in (("--input-size", "input_size", input_size), ("--crop-pct", "crop_pct", crop_pct),
                               ("interpolation", "interpolation", interpolation)):
        if value is not None:
            try:
                out = out.updated({key: (out.input_size[0], value, value) if key == "input_size" else value})
            except ValueError as e:
                raise ValueError(f"{option}: {e}") from None
    channels = out.input_size[0]
    if channels not in (1, 3):
        raise ValueError(f"the model takes {channels}-channel input; senet's image pipeline makes RGB (3 channels) "
                         "or grey (1 channel) images only")
    if len(out.mean) != channels:
        raise ValueError(f"the model's config has {len(out.mean)} mean and std values for {channels} input channel(s)")
    # the short side is resized first: an image at least resize x resize, RGB uint8
    check_work_size(f"--input-size {out.crop} with --crop-pct {out.crop_pct:g} (each image's short side resized to "
                    f"{out.resize:,} pixels)", (out.resize, out.resize, 3), 1)
    return out


def check_eval_sizes(model: nn.Module, cfg: PretrainedCfg, *, batch_size: int, images: int,
                     ten_crop: bool = False) -> None:
    """Refuse, before any image is read, an input size ``model`` cannot run at and a batch of
    views (``min(batch_size, images)`` images, 10 views each with ``ten_crop``) too large to
    allocate (:mod:`senet.utils.limits`); the messages name ``--input-size`` / ``--batch-size``."""
    n = max(1, min(batch_size, images)) * (10 if ten_crop else 1)
    check_work_size(f"--batch-size {batch_size} at --input-size {cfg.crop}{' with --ten-crop' if ten_crop else ''}",
                    (n, *cfg.input_size))
    check_input_size(model, cfg.input_size, "--input-size")


def eval_crops(image: np.ndarray | Image.Image, cfg: PretrainedCfg, *, ten_crop: bool = False) -> torch.Tensor:
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


@lru_cache(maxsize=16)
def _normalizer(mean: tuple[float, ...], std: tuple[float, ...]) -> Normalize:
    return Normalize(mean, std)


def normalize(batch: torch.Tensor, cfg: PretrainedCfg) -> torch.Tensor:
    """``uint8 [N, 3, H, W]`` RGB images as the model's float input: made grey for a 1-channel
    model (:func:`to_grey`), then normalised with the config's mean and std (:class:`~senet.data.augment.Normalize`)."""
    channels = cfg.input_size[0]
    if batch.shape[1] != channels:
        if not (channels == 1 and batch.shape[1] == 3):
            raise ValueError(f"cannot make {channels}-channel input from {batch.shape[1]}-channel images")
        batch = to_grey(batch)
    return _normalizer(cfg.mean, cfg.std)(batch)


def batch_transform(cfg: PretrainedCfg, stored: tuple[int, int], *, ten_crop: bool = False
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

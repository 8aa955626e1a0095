"""Images for pruning: calibration images of the training split (the ``se`` criterion's
excitations) and the test error of a network, with the preprocessing its weights record."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from senet.data import ImageDataset


def stored_transform(model: nn.Module, ds: ImageDataset) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's input for uint8 batches of ``ds``: square stored images at their own size,
    normalised (as a run evaluates CIFAR), others resized and cropped by the weights' config."""
    from senet.data.transforms import batch_transform, resolve_data_config

    h, w = ds.images.shape[-2:]
    cfg = resolve_data_config(model, input_size=h, crop_pct=1.0) if h == w else resolve_data_config(model)
    return batch_transform(cfg, (h, w))


def calibration(ds: ImageDataset, n: int, seed: int) -> torch.Tensor:
    """``n`` images of ``ds`` (uint8), a seeded random choice (all of them if it has fewer)."""
    if n < 1:
        raise ValueError(f"--calibration must be >= 1 image, got {n}")
    idx = torch.randperm(len(ds.labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return ds.images[idx]


def test_error(model: nn.Module, ds: ImageDataset, *, batch_size: int = 128,
               device: torch.device | str = "cpu") -> dict[str, float]:
    """``loss``, ``top1_err``, ``top5_err`` of ``model`` on ``ds``."""
    from senet.train.evaluate import evaluate

    model.to(device)
    return evaluate(model, ds.images, ds.labels, stored_transform(model, ds), batch_size=batch_size, device=device)

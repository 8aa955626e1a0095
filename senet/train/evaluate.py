"""Test-set evaluation: cross-entropy loss, top-1 and top-5 error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (``fp32`` = none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> dict[str, float]:
    """Evaluate ``model`` on uint8 ``images`` (``transform`` turns a uint8 batch on ``device``
    into the model's input). Returns ``loss``, ``top1_err`` and ``top5_err`` (fractions; top-5
    becomes top-k with k = number of classes when there are fewer than 5)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top1 = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    n = len(labels)
    try:
        for start in range(0, n, batch_size):
            x = transform(images[start : start + batch_size].to(device, non_blocking=True))
            y = labels[start : start + batch_size].to(device, non_blocking=True)
            with autocast_for(device, precision):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            k = min(5, logits.shape[1])
            pred = logits.topk(k, dim=1).indices
            hit = pred == y[:, None]
            top1 += hit[:, 0].sum()
            top5 += hit.any(dim=1).sum()
    finally:
        model.train(was_training)
    return {
        "loss": float(loss_sum) / n,
        "top1_err": 1.0 - int(top1) / n,
        "top5_err": 1.0 - int(top5) / n,
    }

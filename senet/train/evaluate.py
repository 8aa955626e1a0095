"""Test-set evaluation: cross-entropy loss, top-1 and top-5 error."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (``fp32`` = none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def batch_sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One batch's ``[loss_sum, top1_hits, top5_hits, count]`` (float64, on the logits' device)."""
    logits = logits.float()
    pred = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit = pred == y[:, None]
    return torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, 0].sum().double(),
                        hit.any(dim=1).sum().double(),
                        torch.tensor(float(len(y)), device=logits.device, dtype=torch.float64)])


@torch.inference_mode()
def eval_sums(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> torch.Tensor:
    """Sums over ``(input, label)`` batches already on ``device``: a float64 tensor
    ``[loss_sum, top1_hits, top5_hits, count]`` (summable over the processes of a group).
    Top-5 becomes top-k with k = number of classes when there are fewer than 5."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    try:
        for x, y in batches:
            with autocast_for(device, precision):
                logits = model(x)
            sums += batch_sums(logits, y)
    finally:
        model.train(was_training)
    return sums


def errors_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """``loss``, ``top1_err`` and ``top5_err`` (fractions) from :func:`eval_sums`' totals."""
    loss_sum, top1, top5, n = (float(v) for v in sums.cpu())
    if n == 0:
        return {"loss": math.nan, "top1_err": math.nan, "top5_err": math.nan}
    return {"loss": loss_sum / n, "top1_err": 1.0 - top1 / n, "top5_err": 1.0 - top5 / n}


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
    into the model's input). Returns ``loss``, ``top1_err`` and ``top5_err`` (fractions)."""
    device = torch.device(device)
    batches = eval_batches(images, labels, transform, batch_size=batch_size, device=device)
    return errors_from_sums(eval_sums(model, batches, device=device, precision=precision))


def eval_batches(images: torch.Tensor, labels: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor], *,
                 batch_size: int, device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(input, label)`` batches of uint8 ``images`` on ``device``, in order (see :func:`evaluate`)."""
    for i in range(0, len(labels), batch_size):
        yield (transform(images[i : i + batch_size].to(device, non_blocking=True)),
               labels[i : i + batch_size].to(device, non_blocking=True))

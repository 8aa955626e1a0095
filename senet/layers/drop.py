"""Stochastic depth (Huang et al., ECCV 2016): drop a whole residual branch, per sample."""

from __future__ import annotations

import torch
from torch import nn


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Rates rising linearly with depth, block ``l`` of ``L`` getting ``rate * l / L`` (Huang et
    al., eq. 4: the last block is dropped with probability ``rate``)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate!r}")
    return [rate * (i + 1) / blocks for i in range(blocks)]


class DropPath(nn.Module):
    """In training, zero the input for a random ``p`` of the samples and scale the others by
    ``1 / (1 - p)``; identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}"

"""Global pooling before the classifier, selectable as in timm (``avg``, ``max``, ``avgmax``, none)."""

from __future__ import annotations

import torch
from torch import nn

POOL_TYPES = ("avg", "max", "avgmax", "")


class GlobalPool(nn.Module):
    """``(N, C, H, W) -> (N, C)``: average, maximum or their mean (``avgmax``) over H and W;
    ``pool_type=""`` keeps the map as it is (no pooling)."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"unknown global_pool {pool_type!r}; allowed: {', '.join(map(repr, POOL_TYPES))}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        if self.pool_type == "avgmax":
            return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
        return x

    def is_identity(self) -> bool:
        return self.pool_type == ""

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"

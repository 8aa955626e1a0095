"""Are all the values of a set of tensors finite? Asked of a model's weights after every
optimizer step (on the device, without waiting for it) and of every file loaded or saved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn


def float_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The floating-point parameters and buffers (BN statistics) of ``model``."""
    tensors = list(model.parameters()) + list(model.buffers())
    return [t for t in tensors if t.is_floating_point() or t.is_complex()]


def nonfinite_flag(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A 0-d float tensor on the tensors' device: 1 if any of them holds a NaN or an inf,
    else 0. Nothing is copied to the host, so asking costs no synchronisation."""
    if not tensors:
        return torch.zeros(())
    # max |x| per tensor: inf and NaN survive it, and unlike a 2-norm it cannot overflow
    peaks = torch._foreach_norm(list(tensors), float("inf"))
    return (~torch.isfinite(torch.stack([p.float() for p in peaks]).max())).float()


def nonfinite_names(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an inf."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    return [name for name, t in items
            if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all())]

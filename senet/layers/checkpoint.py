"""Activation checkpointing of a model's blocks (timm's ``set_grad_checkpointing``).

Every family keeps its blocks in a :class:`CheckpointSequential`: an ``nn.Sequential`` (same
children, same state-dict keys) that, once told to, runs each child under
:func:`torch.utils.checkpoint.checkpoint`, so a training step keeps only each block's input and
recomputes the rest during the backward pass. :func:`checkpoint_call` is that one call; the
recomputation leaves batch-norm running statistics as the forward pass left them (a plain
checkpoint would update them twice per step) and replays the same random draws (dropout,
stochastic depth, Shake-Shake), so a checkpointed step computes exactly what a plain one does.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _KeepRunningStats:
    """Context of a recomputation: the batch norms of ``module`` that update running statistics
    get back, on exit, the statistics they had on entry."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules()
                      if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [[b.clone() for b in self._buffers(m)] for m in self.norms]

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for m, saved in zip(self.norms, self.saved):
                for buffer, value in zip(self._buffers(m), saved):
                    buffer.copy_(value)
        self.saved = []

    @staticmethod
    def _buffers(m: _BatchNorm) -> list[torch.Tensor]:
        return [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def checkpoint_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, keeping for the backward pass only ``x`` (the rest is recomputed); a plain
    call when autograd is off."""
    if not torch.is_grad_enabled():
        return module(x)
    return torch.utils.checkpoint.checkpoint(
        module, x, use_reentrant=False, preserve_rng_state=True,
        context_fn=lambda: (contextlib.nullcontext(), _KeepRunningStats(module)),
    )


class CheckpointSequential(nn.Sequential):
    """An ``nn.Sequential`` of blocks; with ``grad_checkpointing`` set, each block is run by
    :func:`checkpoint_call`. Off (the default), it is exactly ``nn.Sequential``'s forward, which
    TorchScript, fx and ``torch.export`` see."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self.checkpointed(x)
        for module in self:
            x = module(x)
        return x

    @torch.jit.unused
    def checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for module in self:
            x = checkpoint_call(module, x)
        return x


def runs_children_in_order(module: nn.Module) -> bool:
    """Whether ``module``'s forward is its children applied one after the other (an
    ``nn.Sequential`` that does not override its forward, or a :class:`CheckpointSequential`)."""
    return isinstance(module, nn.Sequential) and type(module).forward in (nn.Sequential.forward,
                                                                          CheckpointSequential.forward)

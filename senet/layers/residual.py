"""Where an SE block sits in a residual unit (paper section 6.5, Fig. 5, Tables 14-15).

Every residual block of every model family calls :func:`residual_forward`, so each
placement has one definition in the project.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from senet.layers.se import SEConfig, SqueezeExcite

Fn = Callable[[torch.Tensor], torch.Tensor]


def se_channels(placement: str, in_channels: int, out_channels: int, mid_channels: int) -> int:
    """Channels the SE block sees: the branch output (``standard``, ``post``, ``identity``),
    the unit's input (``pre``) or the 3x3 convolution's output (``conv3x3``)."""
    if placement == "pre":
        return in_channels
    if placement == "conv3x3":
        return mid_channels
    return out_channels


def make_block_se(
    se: SEConfig | None, stage: int, in_channels: int, out_channels: int, mid_channels: int
) -> SqueezeExcite | None:
    """The SE block of one residual unit in ``stage``, or ``None`` when the stage has no SE."""
    if se is None or not se.in_stage(stage):
        return None
    return se.make(se_channels(se.placement, in_channels, out_channels, mid_channels))


def residual_forward(
    x: torch.Tensor,
    branch: Fn,
    shortcut: nn.Module | None,
    se: SqueezeExcite | None,
    placement: str,
    act: Fn | None,
) -> torch.Tensor:
    """One residual unit ``act(shortcut(x) + branch(x))`` with its SE block placed as asked.

    ``standard`` scales the branch output before the sum (Fig. 3); ``pre`` scales the
    branch's input (the identity keeps the unscaled input); ``post`` scales after the sum
    and ``act``; ``identity`` scales the identity path; ``conv3x3`` is applied by
    ``branch`` itself. The scaling is fused with the sum where possible (``addcmul``).
    """
    identity = x if shortcut is None else shortcut(x)
    if se is not None and placement == "pre":
        x = se(x)
    out = branch(x)
    if se is not None and placement == "standard":
        out = se(out, identity)
    elif se is not None and placement == "identity":
        out = se(identity, out)
    else:
        out = out + identity
    if act is not None:
        out = act(out)
    if se is not None and placement == "post":
        out = se(out)
    return out

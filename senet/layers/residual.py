"""Where an SE block sits in a residual unit (paper section 6.5, Fig. 5, Tables 14-15).

Every residual block of every model family is a :class:`ResidualUnit`: its ``forward`` is the
project's one definition of the placements (and of stochastic depth on the residual branch).
A block builds its layers and defines :meth:`ResidualUnit.branch`; it never branches on SE.
"""

from __future__ import annotations

import torch
from torch import nn

from senet.layers.drop import DropPath
from senet.layers.se import SEConfig, SqueezeExcite


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


class ResidualUnit(nn.Module):
    """``act(shortcut(x) + branch(x))`` with the unit's SE block placed as asked.

    ``standard`` scales the branch output before the sum (Fig. 3), the SE block adding the
    identity path itself (``se(out, identity)``); ``pre`` scales the branch's input (the identity keeps
    the unscaled input); ``post`` scales after the sum and ``act``; ``identity`` scales the
    identity path; ``conv3x3`` is applied inside the branch, where it calls :meth:`se_inner`.
    ``drop_path`` (stochastic depth) drops the whole residual branch, SE included, per sample.

    Subclasses set ``shortcut`` (a module, or ``None`` for the identity), call
    :meth:`init_residual` once their layers exist and define :meth:`branch`; one whose shortcut
    has another name overrides :meth:`forward` (see :meth:`merge`). ``concat_paths``: the unit
    concatenates the two paths along the channels (identity first) instead of adding them
    (ShuffleNet's strided units); the placements mean the same there.
    """

    concat_paths = False

    def init_residual(
        self,
        *,
        se: SqueezeExcite | None,
        placement: str,
        act: nn.Module | None = None,
        drop_path: float = 0.0,
        concat_paths: bool = False,
    ) -> None:
        self.se = se
        self.placement = placement
        self.act = act
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.concat_paths = concat_paths
        # the SE block adds the identity path into its product (one full-size temporary less,
        # measured in senet.layers.se.Scale) unless stochastic depth must drop the scaled branch
        # alone or the paths are not added
        self.fuse_se = drop_path == 0 and not concat_paths

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def se_inner(self, x: torch.Tensor) -> torch.Tensor:
        """The ``conv3x3`` placement: SE inside the branch (identity for every other placement)."""
        se = self.se
        if se is not None and self.placement == "conv3x3":
            return se(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.merge(x, identity)

    def merge(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """The unit on branch input ``x`` and identity-path value ``identity``."""
        se = self.se
        if se is not None and self.placement == "pre":
            x = se(x)
        out = self.branch(x)
        if se is not None and self.placement == "standard":
            out = se(out, identity) if self.fuse_se else self.join(identity, self.dropped(se(out)))
        elif se is not None and self.placement == "identity":
            out = self.join(se(identity), self.dropped(out)) if self.concat_paths else se(identity, self.dropped(out))
        else:
            out = self.join(identity, self.dropped(out))
        out = self.post_act(out)
        if se is not None and self.placement == "post":
            out = se(out)
        return out

    def join(self, identity: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The identity path and the (scaled, dropped) branch output: their sum, or their
        concatenation in a ``concat_paths`` unit."""
        return torch.cat([identity, out], 1) if self.concat_paths else out + identity

    def dropped(self, x: torch.Tensor) -> torch.Tensor:
        """Stochastic depth of the residual branch."""
        drop_path = self.drop_path
        return x if drop_path is None else drop_path(x)

    def post_act(self, x: torch.Tensor) -> torch.Tensor:
        """The activation after the sum."""
        act = self.act
        return x if act is None else act(x)

"""ShuffleNet (v1) and SE-ShuffleNet (Zhang et al. 2018; SE paper Table 3: 1x, g=3).

A 3x3 stride-2 convolution (24 channels) and 3x3 stride-2 max pooling, then three stages of
ShuffleNet units (4, 8, 4 units), global average pooling and one FC layer. A unit is a 1x1 group
convolution (ungrouped in the very first unit, whose input has only 24 channels), BN, ReLU,
channel shuffle, 3x3 depthwise convolution (stride 2 in a stage's first unit), BN, 1x1 group
convolution, BN; the branch is added to the identity, or, in a stage's first unit, concatenated
with the 3x3 stride-2 average-pooled input; ReLU follows. The bottleneck width is a quarter of
the unit's output channels (ShuffleNet paper, section 3.3).

SE (spec section 2): on the unit's branch output, before the sum or the concatenation; the
units, concatenating ones included, are :class:`~senet.layers.ResidualUnit` instances, so every placement
works (``conv3x3``: after the depthwise convolution and its BN). In a concatenating unit the
identity path is the pooled input, which is what ``identity`` and ``pre`` scale there.

Stages (see :mod:`senet.models._common`): ``layer1`` (28x28 at 224; the ShuffleNet paper's
"Stage2") is stage 3, ``layer2`` stage 4 and ``layer3`` stage 5.

Complexity: 1.87M params and 137.5 MFLOPs for 1x, g=3 (the ShuffleNet paper's Table 1 gives
137 MFLOPs for g=3; 140 is its figure for the whole "1x" complexity level, which the SE paper's
Table 3 quotes with 1.8M params). ``senet/paper/complexity.csv`` keeps the paper's figures with
a note, as documented exceptions.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import PLACEMENTS, CheckpointSequential, ResidualUnit, SEConfig, drop_path_rates, make_block_se
from senet.models._base import SenetModel, feature
from senet.models._common import init_weights
from senet.models.registry import register_family, register_model
from senet.preprocess import PretrainedCfg

#: Output channels of the three stages for each group count (ShuffleNet paper, Table 1; 1x).
STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
FIRST_STAGE = 3


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet paper, Fig. 1)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(ResidualUnit):
    """One ShuffleNet unit (paper Fig. 2b: residual, stride 1; Fig. 2c: concatenating, stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, *, first_groups: int,
                 se: SEConfig | None, stage: int, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        self.stride = stride
        self.groups = groups
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        placement = se.placement if se is not None else "standard"
        # the channels SE sees; in a concatenating unit the output (post) is wider than the branch
        # (standard) and the identity path (identity) has the input's width
        seen = {"post": out_channels, "identity": in_channels}.get(placement, branch_out)
        self.init_residual(se=make_block_se(se, stage, in_channels, seen, mid), placement=placement,
                           act=nn.ReLU(inplace=True), drop_path=drop_path if stride == 1 else 0.0, concat_paths=stride == 2)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se_inner(self.bn2(self.conv2(channel_shuffle(out, self.groups))))
        return self.bn3(self.conv3(out))


class ShuffleNet(SenetModel):
    """ShuffleNet v1 (1x), with or without SE in its units.

    Args:
        groups: group count g of the 1x1 convolutions (1, 2, 3, 4 or 8).
        layers: units per stage (4, 8, 4).
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the residual (stride-1) units, rising linearly to this rate.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 3, 4, 5.
    """

    def __init__(
        self,
        groups: int = 3,
        *,
        layers: Sequence[int] = (4, 8, 4),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if groups not in STAGE_CHANNELS:
            raise ValueError(f"unknown ShuffleNet groups {groups!r}; allowed: {sorted(STAGE_CHANNELS)}")
        if len(layers) != 3 or min(layers) < 1:
            raise ValueError(f"layers must give 3 positive stage depths, got {list(layers)}")
        if se is not None:
            se.check_stages(range(FIRST_STAGE, FIRST_STAGE + 3))
        self.conv1 = nn.Conv2d(in_chans, 24, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.feature_info = [feature("act1", 24, 2, 1), feature("maxpool", 24, 4, 2)]
        channels = 24
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        for i, (depth, out_channels) in enumerate(zip(layers, STAGE_CHANNELS[groups], strict=True)):
            units = []
            for j in range(depth):
                units.append(ShuffleUnit(
                    channels, out_channels, 2 if j == 0 else 1, groups,
                    first_groups=1 if i == 0 and j == 0 else groups, se=se, stage=FIRST_STAGE + i,
                    drop_path=next(rates),
                ))
                channels = out_channels
            self.add_module(f"layer{i + 1}", CheckpointSequential(*units))
            self.feature_info.append(feature(f"layer{i + 1}", channels, 2 ** (FIRST_STAGE + i), FIRST_STAGE + i))
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def _shufflenet(groups: int, kwargs: dict[str, Any]) -> ShuffleNet:
    return ShuffleNet(groups, **kwargs)


register_family("shufflenet", ShuffleNet, placements=PLACEMENTS)
_CFG = PretrainedCfg(first_conv="conv1")


@register_model(family="shufflenet", has_se=False, cfg=_CFG)
def shufflenet_g3(**kwargs: Any) -> ShuffleNet:
    """ShuffleNet 1x (g=3) (Table 3): 1.87M params, 137.5 MFLOPs (paper: 1.8M, 140; see the module)."""
    return _shufflenet(3, kwargs)


@register_model(family="shufflenet", has_se=True, cfg=_CFG)
def se_shufflenet_g3(**kwargs: Any) -> ShuffleNet:
    """SE-ShuffleNet 1x (g=3) (Table 3): SE on each unit's branch; 2.48M params, 141.3 MFLOPs."""
    return _shufflenet(3, kwargs)

"""Wide ResNets with and without SE (Zagoruyko & Komodakis, "Wide Residual Networks",
BMVC 2016; SENet Table 4 uses WRN-16-8): one class, :class:`WideResNet`.

WRN-d-k: a 3x3 convolution with 16 filters, three stages of ``(d - 4) / 6`` pre-activation
basic blocks ``BN-ReLU-conv3x3, BN-ReLU-[dropout]-conv3x3`` with ``16k``, ``32k`` and ``64k``
channels (strides 1, 2, 2), a final BN-ReLU, global average pooling and a fully connected
layer. Where a block changes the shape, its shortcut is a 1x1 convolution (no BN) on the
block's pre-activated input, as in the authors' code. Dropout between the two convolutions
(the paper's "WRN-d-k with dropout") is the ``dropout`` keyword, 0 by default.

Stage numbering for ``se_stages``: the stem is stage 1, the three stages are 2, 3, 4.
``placement="conv3x3"`` puts SE after the BN-ReLU that follows the first 3x3 convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import PLACEMENTS, CheckpointSequential, SEConfig, drop_path_rates, make_block_se
from senet.models._base import SenetModel, feature
from senet.models.cifar_resnet import CIFAR_CFG, FIRST_STAGE, PreActUnit, check_se, init_cifar_weights
from senet.models.registry import register_family, register_model


class WideBasicBlock(PreActUnit):
    """Pre-activation basic block of a WRN (Zagoruyko & Komodakis, Fig. 1(c)/(d))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, dropout: float,
                 se: SEConfig | None, stage: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        self.init_residual(se=make_block_se(se, stage, in_channels, out_channels, out_channels),
                           placement=se.placement if se is not None else "standard", drop_path=drop_path)

    def tail(self, out: torch.Tensor) -> torch.Tensor:
        out = self.dropout(F.relu(self.bn2(self.conv1(out)), inplace=True))
        return self.conv2(self.se_inner(out))


class WideResNet(SenetModel):
    """WRN-``depth``-``widen_factor`` (see the module docstring).

    Args:
        depth: ``6n + 4`` (16, 22, 28, 40 ...).
        widen_factor: ``k``; stage widths are ``16k``, ``32k``, ``64k``.
        dropout: dropout probability between the two convolutions of each block.
        num_classes: classifier outputs (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the residual branches, rising linearly to this rate.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        *,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28 ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be a positive integer, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_se(se)
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.feature_info = [feature("conv1", 16, 1, 1)]
        channels = 16
        rates = iter(drop_path_rates(drop_path_rate, 3 * n))
        for i, base in enumerate((16, 32, 64)):
            width = base * widen_factor
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(WideBasicBlock(channels, width, stride, dropout=dropout, se=se, stage=FIRST_STAGE + i,
                                             drop_path=next(rates)))
                channels = width
            self.add_module(f"layer{i + 1}", CheckpointSequential(*blocks))
            self.feature_info.append(feature(f"layer{i + 1}", channels, 2**i, FIRST_STAGE + i))
        self.final_bn = nn.BatchNorm2d(channels)
        self.final_act = nn.ReLU(inplace=True)
        self.feature_info[-1] = feature("final_act", channels, 4, FIRST_STAGE + 2)
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_cifar_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.final_act(self.final_bn(x))


def _wrn(depth: int, k: int, kwargs: dict[str, Any]) -> WideResNet:
    return WideResNet(depth, k, **kwargs)


register_family("wide_resnet", WideResNet, placements=PLACEMENTS)
_REG = {"cfg": CIFAR_CFG}


@register_model(family="wide_resnet", has_se=False, **_REG)
def wrn16_8(**kwargs: Any) -> WideResNet:
    """WRN-16-8 (Zagoruyko & Komodakis: 11.0M parameters); SENet Table 4 baseline."""
    return _wrn(16, 8, kwargs)


@register_model(family="wide_resnet", has_se=True, **_REG)
def se_wrn16_8(**kwargs: Any) -> WideResNet:
    """SE-WRN-16-8 (SENet Table 4: 3.88% CIFAR-10 error)."""
    return _wrn(16, 8, kwargs)


@register_model(family="wide_resnet", has_se=False, **_REG)
def wrn28_10(**kwargs: Any) -> WideResNet:
    """WRN-28-10 (Zagoruyko & Komodakis: 36.5M parameters)."""
    return _wrn(28, 10, kwargs)


@register_model(family="wide_resnet", has_se=True, **_REG)
def se_wrn28_10(**kwargs: Any) -> WideResNet:
    """SE-WRN-28-10."""
    return _wrn(28, 10, kwargs)

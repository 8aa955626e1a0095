"""Shake-Shake networks with and without SE (Gastaldi 2017; spec section 7b; SENet Table 4):
one class, :class:`ShakeResNet`.

Layout of "26 2x32d" (after the reference Torch code, github.com/xgastaldi/shake-shake,
``models/shakeshake.lua`` and ``models/shakeshakeblock.lua``):

* stem: 3x3 convolution with 16 filters and BN (no ReLU: every branch and every
  downsampling shortcut starts with one);
* three stages of ``(depth - 2) / 6`` blocks, widths ``w``, ``2w``, ``4w`` (``w`` = 32, 64,
  96 for 2x32d, 2x64d, 2x96d), strides 1, 2, 2;
* each block: two branches ``ReLU-conv3x3-BN-ReLU-conv3x3-BN`` combined by
  :func:`~senet.layers.shake.shake_shake`, plus the identity; no activation after the sum;
* where the shape changes (also the first block, 16 -> ``w`` channels at stride 1), the
  shortcut is ReLU, then two paths concatenated on channels, then BN: path 1 is a stride-``s``
  1x1 average pooling (subsampling) and a 1x1 convolution to half the channels; path 2 shifts
  the input one pixel right and down (zero fill, as the reference's
  ``SpatialZeroPadding(1, -1, 1, -1)``) before the same, so it sees the other pixels;
* final ReLU, global average pooling, fully connected layer.

"Shake-Even 29 2x4x64d" (the paper's CIFAR-100 model) uses ResNeXt-29 bottleneck branches
(Xie et al. 2017): ``(depth - 2) / 9 = 3`` blocks per stage, a 64-filter stem, each branch
``ReLU-conv1x1-BN-ReLU-conv3x3(groups=4)-BN-ReLU-conv1x1-BN`` with a grouped width of
``4 x 64 = 256``, 512, 1024 and outputs of 256, 512, 1024 (ResNeXt-29's ``4 * 64 * 2^i``).
The two 4x64d branches together have the width of ResNeXt-29 8x64d, whose 34.4M parameters
(Xie et al., Table 7) are also the count the Shake-Shake paper gives for this model; this
layout gives 34.4M for 100 classes. The reference repository's CIFAR-100 code was not
available to check it against, so the leading ReLU of each branch and the two-path shortcut
follow the 26 2x32d block above. Its default is the paper's Shake-Even-Image (forward Shake,
backward Even, level Image).

SE (``se_`` models): the SE block acts on the shaken combination of the two branches, before
the sum with the identity (``placement="standard"``); ``placement="conv3x3"`` gives each
branch its own SE block after the BN-ReLU that follows its (first) 3x3 convolution. Stage
numbering for ``se_stages``: the stem is stage 1, the three stages are 2, 3, 4.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import PLACEMENTS, CheckpointSequential, ResidualUnit, SEConfig, SqueezeExcite, drop_path_rates, make_block_se
from senet.layers.shake import check_shake_options, shake_shake
from senet.models._base import SenetModel, feature
from senet.models.cifar_resnet import CIFAR_CFG, FIRST_STAGE, check_se, init_cifar_weights
from senet.models.registry import register_family, register_model


# a leaf for fx: it checks shapes and draws random coefficients, which symbolic tracing cannot follow
torch.fx.wrap("shake_shake")


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class TwoPathShortcut(nn.Module):
    """Shake-Shake's downsampling shortcut (spec section 7b): ReLU, then
    ``concat(conv1x1(subsample(x)), conv1x1(subsample(shift(x))))``, then BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.conv2 = nn.Conv2d(in_channels, out_channels - half, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        s = self.stride
        shifted = F.pad(x, (1, -1, 1, -1))  # one pixel right and down, zeros enter at top/left
        return self.bn(torch.cat([self.conv1(x[:, :, ::s, ::s]), self.conv2(shifted[:, :, ::s, ::s])], 1))


class ShakeBranch(nn.Module):
    """One residual branch: ``ReLU-conv3x3-BN-ReLU-conv3x3-BN`` or, with ``bottleneck``,
    ``ReLU-conv1x1-BN-ReLU-conv3x3(groups)-BN-ReLU-conv1x1-BN``.
    ``se`` (``placement="conv3x3"`` only) scales the activation after the (first) 3x3
    convolution's BN-ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, *,
                 bottleneck: bool, groups: int, se: SqueezeExcite | None) -> None:
        super().__init__()
        if bottleneck:
            self.pre = nn.Sequential(*_conv_bn(in_channels, mid_channels, 1), nn.ReLU(inplace=True),
                                     *_conv_bn(mid_channels, mid_channels, 3, stride, groups))
            self.post = nn.Sequential(*_conv_bn(mid_channels, out_channels, 1))
        else:
            self.pre = nn.Sequential(*_conv_bn(in_channels, mid_channels, 3, stride))
            self.post = nn.Sequential(*_conv_bn(mid_channels, out_channels, 3))
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.pre(F.relu(x)), inplace=True)
        if self.se is not None:
            out = self.se(out)
        return self.post(out)


class ShakeBlock(ResidualUnit):
    """``x + shake(F1(x), F2(x))`` (Gastaldi 2017, eq. 1) with SE placed by :class:`ResidualUnit`."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int, *,
                 bottleneck: bool, groups: int, shake: tuple[str, str, str], se: SEConfig | None,
                 stage: int, drop_path: float = 0.0) -> None:
        super().__init__()
        placement = se.placement if se is not None else "standard"
        in_branch = placement == "conv3x3"

        def branch() -> ShakeBranch:
            branch_se = make_block_se(se, stage, in_channels, out_channels, mid_channels) if in_branch else None
            return ShakeBranch(in_channels, mid_channels, out_channels, stride, bottleneck=bottleneck,
                               groups=groups, se=branch_se)

        self.branch1, self.branch2 = branch(), branch()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = TwoPathShortcut(in_channels, out_channels, stride)
        self.shake_forward, self.shake_backward, self.shake_level = shake
        block_se = None if in_branch else make_block_se(se, stage, in_channels, out_channels, mid_channels)
        self.init_residual(se=block_se, placement=placement, drop_path=drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.branch1(x), self.branch2(x)
        if not torch.jit.is_scripting():
            return shake_shake(x1, x2, self.shake_forward, self.shake_backward, self.shake_level, self.training)
        # TorchScript has no autograd functions: a scripted model keeps the evaluation path only
        if self.training:
            raise RuntimeError("Shake-Shake training needs eager PyTorch (TorchScript keeps the evaluation path)")
        return 0.5 * (x1 + x2)

    def extra_repr(self) -> str:
        return (f"shake_forward={self.shake_forward!r}, shake_backward={self.shake_backward!r}, "
                f"shake_level={self.shake_level!r}")


class ShakeResNet(SenetModel):
    """Shake-Shake ResNet "depth 2x``base_width``d" or "depth 2x``cardinality``x``base_width``d"
    (see the module docstring).

    Args:
        depth: ``6n + 2`` for basic branches (26), ``9n + 2`` for bottleneck branches (29).
        base_width: width of the first stage (basic) or of one group of the first stage's
            grouped convolution (bottleneck).
        bottleneck: ResNeXt-style bottleneck branches (Shake-Even 29) instead of basic ones.
        cardinality: groups of a bottleneck branch's 3x3 convolution.
        stem_width: filters of the stem convolution (16 basic, 64 bottleneck by default).
        shake_forward: ``"shake"`` or ``"even"``; shake_backward: ``"shake"``, ``"even"`` or
            ``"keep"``; shake_level: ``"image"`` or ``"batch"`` (:mod:`senet.layers.shake`).
        num_classes: classifier outputs (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the residual blocks, rising linearly to this rate.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE.
    """

    def __init__(
        self,
        depth: int = 26,
        base_width: int = 32,
        *,
        bottleneck: bool = False,
        cardinality: int = 1,
        stem_width: int | None = None,
        shake_forward: Literal["shake", "even"] = "shake",
        shake_backward: Literal["shake", "even", "keep"] = "shake",
        shake_level: Literal["image", "batch"] = "image",
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        check_shake_options(shake_forward, shake_backward, shake_level)
        per_block = 3 if bottleneck else 2
        if depth < 2 + 3 * per_block or (depth - 2) % (3 * per_block):
            kind = "bottleneck" if bottleneck else "basic"
            raise ValueError(
                f"depth of a Shake-Shake network with {kind} branches must be {3 * per_block}n + 2, got {depth}"
            )
        if cardinality < 1 or (not bottleneck and cardinality != 1):
            raise ValueError(f"cardinality must be 1 for basic branches and >= 1 for bottlenecks, got {cardinality}")
        check_se(se)
        n = (depth - 2) // (3 * per_block)
        stem_width = stem_width or (64 if bottleneck else 16)
        self.stem = nn.Sequential(*_conv_bn(in_chans, stem_width, 3))
        self.feature_info = [feature("stem", stem_width, 1, 1)]
        shake = (shake_forward, shake_backward, shake_level)
        channels = stem_width
        rates = iter(drop_path_rates(drop_path_rate, 3 * n))
        for i in range(3):
            if bottleneck:
                mid, out = cardinality * base_width * 2**i, 4 * stem_width * 2**i
            else:
                mid = out = base_width * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(ShakeBlock(channels, mid, out, stride, bottleneck=bottleneck, groups=cardinality,
                                         shake=shake, se=se, stage=FIRST_STAGE + i, drop_path=next(rates)))
                channels = out
            self.add_module(f"layer{i + 1}", CheckpointSequential(*blocks))
            self.feature_info.append(feature(f"layer{i + 1}", channels, 2**i, FIRST_STAGE + i))
        self.final_act = nn.ReLU()
        self.feature_info[-1] = feature("final_act", channels, 4, FIRST_STAGE + 2)
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_cifar_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.final_act(x)


def _shake26(width: int, kwargs: dict[str, Any]) -> ShakeResNet:
    return ShakeResNet(26, width, **kwargs)


def _shake_even29(kwargs: dict[str, Any]) -> ShakeResNet:
    defaults = {"bottleneck": True, "cardinality": 4, "shake_forward": "shake", "shake_backward": "even"}
    return ShakeResNet(29, 64, **{**defaults, **kwargs})


register_family("shake_shake", ShakeResNet, placements=PLACEMENTS)
_REG = {"cfg": replace(CIFAR_CFG, first_conv="stem.0")}


@register_model(family="shake_shake", has_se=False, **_REG)
def shake_shake26_2x32d(**kwargs: Any) -> ShakeResNet:
    """Shake-Shake 26 2x32d (Gastaldi 2017: 2.9M parameters, 3.55% CIFAR-10 error, S-S-I)."""
    return _shake26(32, kwargs)


@register_model(family="shake_shake", has_se=False, **_REG)
def shake_shake26_2x64d(**kwargs: Any) -> ShakeResNet:
    """Shake-Shake 26 2x64d (11.7M parameters, 2.98%)."""
    return _shake26(64, kwargs)


@register_model(family="shake_shake", has_se=False, **_REG)
def shake_shake26_2x96d(**kwargs: Any) -> ShakeResNet:
    """Shake-Shake 26 2x96d (26.2M parameters, 2.86%); SENet Table 4 baseline (with Cutout)."""
    return _shake26(96, kwargs)


@register_model(family="shake_shake", has_se=True, **_REG)
def se_shake_shake26_2x32d(**kwargs: Any) -> ShakeResNet:
    """SE-Shake-Shake 26 2x32d."""
    return _shake26(32, kwargs)


@register_model(family="shake_shake", has_se=True, **_REG)
def se_shake_shake26_2x64d(**kwargs: Any) -> ShakeResNet:
    """SE-Shake-Shake 26 2x64d."""
    return _shake26(64, kwargs)


@register_model(family="shake_shake", has_se=True, **_REG)
def se_shake_shake26_2x96d(**kwargs: Any) -> ShakeResNet:
    """SE-Shake-Shake 26 2x96d (SENet Table 4: 2.12% CIFAR-10 error with Cutout)."""
    return _shake26(96, kwargs)


@register_model(family="shake_shake", has_se=False, **_REG)
def shake_even29_2x4x64d(**kwargs: Any) -> ShakeResNet:
    """Shake-Even 29 2x4x64d (Gastaldi 2017: 34.4M parameters, 15.85% CIFAR-100 error).
    Pass ``num_classes=100`` for CIFAR-100."""
    return _shake_even29(kwargs)


@register_model(family="shake_shake", has_se=True, **_REG)
def se_shake_even29_2x4x64d(**kwargs: Any) -> ShakeResNet:
    """SE-Shake-Even 29 2x4x64d (SENet Table 5: 15.41% CIFAR-100 error with Cutout)."""
    return _shake_even29(kwargs)

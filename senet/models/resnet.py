"""ResNet, ResNeXt, SE-ResNet, SE-ResNeXt and SENet-154: one class (paper section 4, Table 1).

Every model here is a configuration of :class:`ResNet`. Its blocks take the SE settings
(:class:`~senet.layers.SEConfig`) as an argument; the SE block itself lives in
:mod:`senet.layers.se` and its placement in :mod:`senet.layers.residual`.

Layout options, all visible in the weights' behaviour but not in their shapes:

* ``stride_in_1x1``: a downsampling bottleneck strides its first 1x1 convolution, as the
  original Caffe ResNet and the released SE-ResNet models do (ResNet-50: 3.86 GFLOPs), or
  its 3x3 convolution, as torchvision and timm do ("ResNet V1.5", about 4.1 GFLOPs).
* ``stem_pool``: the stem's 3x3 stride-2 max pooling without padding and with ``ceil_mode``
  (``"caffe"``, the released models) or with padding 1 (``"torch"``).
* ``branch_act``: a ReLU at the end of the residual branch, before SE (only Cadene's port
  of SE-ResNet-18/34 has it, so its weights need it).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import SEConfig, make_block_se, residual_forward
from senet.models._common import init_conv_bn
from senet.models.registry import register_model

FIRST_STAGE = 2  # stage 1 is the stem (paper Table 1: conv1 then conv2_x ... conv5_x)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). ``placement="conv3x3"`` puts SE after the first."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        *,
        se: SEConfig | None,
        stage: int,
        branch_act: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        first_ratio: float = 1.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64")
        self.conv1, self.bn1 = _conv_bn(in_channels, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        self.downsample = downsample
        self.branch_act = branch_act
        self.placement = se.placement if se is not None else "standard"
        self.se = make_block_se(se, stage, in_channels, planes, planes)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.se is not None and self.placement == "conv3x3":
            out = self.se(out)
        out = self.bn2(self.conv2(out))
        if self.branch_act:
            out = F.relu(out, inplace=True)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_forward(x, self._branch, self.downsample, self.se, self.placement, F.relu_)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (grouped for ResNeXt) - 1x1, output ``4 * planes`` channels.

    ``width = planes * width_per_group / 64 * groups`` is the 3x3 convolution's width; its
    input (the first 1x1's output) is ``width * first_ratio`` (SENet-154 halves it).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        *,
        se: SEConfig | None,
        stage: int,
        branch_act: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        first_ratio: float = 1.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        first = int(width * first_ratio)
        out_channels = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1, self.bn1 = _conv_bn(in_channels, first, 1, s1)
        self.conv2, self.bn2 = _conv_bn(first, width, 3, s3, groups)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1)
        self.downsample = downsample
        self.branch_act = branch_act
        self.placement = se.placement if se is not None else "standard"
        self.se = make_block_se(se, stage, in_channels, out_channels, width)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        if self.se is not None and self.placement == "conv3x3":
            out = self.se(out)
        out = self.bn3(self.conv3(out))
        if self.branch_act:
            out = F.relu(out, inplace=True)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_forward(x, self._branch, self.downsample, self.se, self.placement, F.relu_)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Stem(nn.Module):
    """``conv 7x7/2`` (ResNet) or three 3x3 convolutions (SENet-154), then max pooling 3x3/2."""

    def __init__(self, in_chans: int, kind: Literal["7x7", "deep"], pool: Literal["caffe", "torch"]) -> None:
        super().__init__()
        if kind == "7x7":
            self.conv1, self.bn1 = _conv_bn(in_chans, 64, 7, 2)
            self.out_channels = 64
            self.depth = 1
        elif kind == "deep":
            self.conv1, self.bn1 = _conv_bn(in_chans, 64, 3, 2)
            self.conv2, self.bn2 = _conv_bn(64, 64, 3)
            self.conv3, self.bn3 = _conv_bn(64, 128, 3)
            self.out_channels = 128
            self.depth = 3
        else:
            raise ValueError(f"unknown stem {kind!r}; allowed: '7x7', 'deep'")
        if pool == "caffe":
            self.pool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
        elif pool == "torch":
            self.pool = nn.MaxPool2d(3, 2, padding=1)
        else:
            raise ValueError(f"unknown stem_pool {pool!r}; allowed: 'caffe', 'torch'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.depth == 3:
            x = F.relu(self.bn2(self.conv2(x)), inplace=True)
            x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        return self.pool(x)


class ResNet(nn.Module):
    """ResNet-family network: stem, four stages (paper stages 2-5), global pooling, classifier.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage.
        num_classes: classifier outputs (0: no classifier, :meth:`forward` returns features).
        in_chans: input channels.
        groups, width_per_group: ResNeXt cardinality and width (``32, 4`` for 32x4d).
        first_ratio: width of a bottleneck's first 1x1 relative to its 3x3 (SENet-154: 0.5).
        stem: ``"7x7"`` or ``"deep"`` (three 3x3 convolutions, SENet-154).
        stem_pool: ``"caffe"`` or ``"torch"`` (see the module docstring).
        stride_in_1x1: stride a downsampling bottleneck's first 1x1 (see the module docstring).
        down_kernel: kernel of the strided projection shortcut (SENet-154: 3).
        branch_act: ReLU at the end of the residual branch (Cadene SE-ResNet-18/34).
        drop_rate: dropout before the classifier (SENet-154: 0.2).
        se: SE settings, ``None`` for no SE.
        zero_init_last: initialise each block's last BN scale to zero.
    """

    def __init__(
        self,
        block: Literal["basic", "bottleneck"],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        groups: int = 1,
        width_per_group: int = 64,
        first_ratio: float = 1.0,
        stem: Literal["7x7", "deep"] = "7x7",
        stem_pool: Literal["caffe", "torch"] = "caffe",
        stride_in_1x1: bool = True,
        down_kernel: int = 1,
        branch_act: bool = False,
        drop_rate: float = 0.0,
        se: SEConfig | None = None,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; allowed: {sorted(BLOCKS)}")
        if len(layers) != 4:
            raise ValueError(f"layers must give 4 stage depths, got {list(layers)}")
        if se is not None:
            se.check_stages(range(FIRST_STAGE, FIRST_STAGE + len(layers)))
        block_cls = BLOCKS[block]
        self.stem = Stem(in_chans, stem, stem_pool)
        channels = self.stem.out_channels
        for i, depth in enumerate(layers):
            planes = 64 * 2**i
            stride = 1 if i == 0 else 2
            out_channels = planes * block_cls.expansion
            blocks = []
            for j in range(depth):
                downsample = None
                if j == 0 and (stride != 1 or channels != out_channels):
                    k = down_kernel if stride != 1 else 1
                    downsample = nn.Sequential(*_conv_bn(channels, out_channels, k, stride))
                blocks.append(
                    block_cls(
                        channels,
                        planes,
                        stride if j == 0 else 1,
                        downsample,
                        se=se,
                        stage=FIRST_STAGE + i,
                        branch_act=branch_act,
                        groups=groups,
                        width_per_group=width_per_group,
                        first_ratio=first_ratio,
                        stride_in_1x1=stride_in_1x1,
                    )
                )
                channels = out_channels
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = channels
        self.drop_rate = drop_rate
        self.fc = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        # He et al. initialisation (paper section 5.1).
        init_conv_bn(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(block: str, layers: Sequence[int], *, has_se: bool, defaults: dict[str, Any], kwargs: dict[str, Any]) -> ResNet:
    se_kwargs = SEConfig.pop_kwargs(kwargs)
    if has_se:
        se = SEConfig.from_kwargs(se_kwargs)
    elif se_kwargs:
        raise ValueError(
            f"SE options {sorted(se_kwargs)} given to a model without SE blocks; use its se_ variant"
        )
    else:
        se = None
    if "se" in kwargs:
        raise ValueError("pass SE settings as keywords (reduction=, placement=, ...), not se=")
    return ResNet(block, layers, se=se, **{**defaults, **kwargs})


_RESNEXT = {"groups": 32, "width_per_group": 4, "stride_in_1x1": False}
_SENET154 = {
    "groups": 64,
    "width_per_group": 4,
    "first_ratio": 0.5,
    "stem": "deep",
    "down_kernel": 3,
    "stride_in_1x1": False,
    "drop_rate": 0.2,
}

_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
           101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


def _resnet(depth: int, has_se: bool, kwargs: dict[str, Any]) -> ResNet:
    block, layers = _DEPTHS[depth]
    return _build(block, layers, has_se=has_se, defaults={}, kwargs=kwargs)


def _resnext(layers: Sequence[int], has_se: bool, kwargs: dict[str, Any]) -> ResNet:
    return _build("bottleneck", layers, has_se=has_se, defaults=_RESNEXT, kwargs=kwargs)


@register_model(family="resnet", has_se=False)
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2016)."""
    return _resnet(18, False, kwargs)


@register_model(family="resnet", has_se=False)
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34."""
    return _resnet(34, False, kwargs)


@register_model(family="resnet", has_se=False)
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (Table 1, left column). 3.86 GFLOPs with the stride in the first 1x1."""
    return _resnet(50, False, kwargs)


@register_model(family="resnet", has_se=False)
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101."""
    return _resnet(101, False, kwargs)


@register_model(family="resnet", has_se=False)
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152."""
    return _resnet(152, False, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnet18(**kwargs: Any) -> ResNet:
    """SE-ResNet-18."""
    return _resnet(18, True, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnet34(**kwargs: Any) -> ResNet:
    """SE-ResNet-34."""
    return _resnet(34, True, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnet50(**kwargs: Any) -> ResNet:
    """SE-ResNet-50 (Table 1, middle column): 28.1M params, 3.87 GFLOPs."""
    return _resnet(50, True, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnet101(**kwargs: Any) -> ResNet:
    """SE-ResNet-101."""
    return _resnet(101, True, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnet152(**kwargs: Any) -> ResNet:
    """SE-ResNet-152."""
    return _resnet(152, True, kwargs)


@register_model(family="resnet", has_se=False)
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-50 (32x4d), Xie et al. 2017."""
    return _resnext((3, 4, 6, 3), False, kwargs)


@register_model(family="resnet", has_se=False)
def resnext101_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 (32x4d)."""
    return _resnext((3, 4, 23, 3), False, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnext26_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-26 (32x4d): two blocks per stage."""
    return _resnext((2, 2, 2, 2), True, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnext50_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-50 (32x4d) (Table 1, right column)."""
    return _resnext((3, 4, 6, 3), True, kwargs)


@register_model(family="resnet", has_se=True)
def se_resnext101_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 (32x4d)."""
    return _resnext((3, 4, 23, 3), True, kwargs)


@register_model(family="resnet", has_se=True)
def senet154(**kwargs: Any) -> ResNet:
    """SENet-154 (section 3 of the spec / paper appendix): SE in a 64x4d ResNeXt-152 with a
    halved first 1x1, a three-conv 3x3 stem, 3x3 stride-2 projections and dropout 0.2."""
    return _build("bottleneck", (3, 8, 36, 3), has_se=True, defaults=_SENET154, kwargs=kwargs)

"""ResNet, ResNeXt, SE-ResNet, SE-ResNeXt and SENet-154: one class (paper section 4, Table 1).

Every model here is a configuration of :class:`ResNet`. Its blocks take the SE settings
(:class:`~senet.layers.SEConfig`) as an argument; the SE block itself lives in
:mod:`senet.layers.se` and its placement in :mod:`senet.layers.residual`. The weights (other
projects' checkpoints and layouts, released weights, timm's names) are in
:mod:`senet.models.resnet_weights`.

Layout options, all visible in the weights' behaviour but not in their shapes:

* ``stride_in_1x1``: a downsampling bottleneck strides its first 1x1 convolution, as the
  original Caffe ResNet and the released SE-ResNet models do (ResNet-50: 3.86 GFLOPs), or
  its 3x3 convolution, as torchvision and timm do ("ResNet V1.5", about 4.1 GFLOPs).
* ``stem_pool``: the stem's 3x3 stride-2 max pooling without padding and with ``ceil_mode``
  (``"caffe"``, the released models) or with padding 1 (``"torch"``).
* ``branch_act``: a ReLU at the end of the residual branch, before SE (only Cadene's port
  of SE-ResNet-18/34 has it, so its weights need it).

``output_stride=16`` or ``8`` (timm's keyword, for segmentation) replaces the stride of the last
one or two stages by dilation of their 3x3 convolutions (Chen et al., DeepLab): the same
weights, larger feature maps, ``feature_info`` reductions capped at the output stride.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import PLACEMENTS, CheckpointSequential, ResidualUnit, SEConfig, drop_path_rates, make_block_se
from senet.models._base import SenetModel, dilate, feature
from senet.models._common import init_conv_bn
from senet.models import resnet_weights
from senet.models.registry import register_family, register_model
from senet.models.resnet_weights import RELEASED

FIRST_STAGE = 2  # stage 1 is the stem (paper Table 1: conv1 then conv2_x ... conv5_x)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             dilation: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout)


class _ResNetUnit(ResidualUnit):
    """A ResNet block's shortcut is named ``downsample`` (the released models' and timm's key)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.merge(x, identity)


class BasicBlock(_ResNetUnit):
    """Two 3x3 convolutions (ResNet-18/34). ``placement="conv3x3"`` puts SE after the first.
    ``first_dilation`` / ``dilation``: of the first / second 3x3 convolution (``output_stride``)."""

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
        drop_path: float = 0.0,
        dilation: int = 1,
        first_dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, planes, 3, stride, dilation=first_dilation)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, dilation=dilation)
        self.downsample = downsample
        self.branch_act = branch_act
        self.init_residual(se=make_block_se(se, stage, in_channels, planes, planes),
                           placement=se.placement if se is not None else "standard",
                           act=nn.ReLU(inplace=True), drop_path=drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se_inner(F.relu(self.bn1(self.conv1(x)), inplace=True))
        out = self.bn2(self.conv2(out))
        if self.branch_act:
            out = F.relu(out, inplace=True)
        return out


class Bottleneck(_ResNetUnit):
    """1x1 - 3x3 (grouped for ResNeXt) - 1x1, output ``4 * planes`` channels.

    ``width = planes * width_per_group / 64 * groups`` is the 3x3 convolution's width; its
    input (the first 1x1's output) is ``width * first_ratio`` (SENet-154 halves it).
    ``dilation``: of the 3x3 convolution (``output_stride``).
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
        drop_path: float = 0.0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        first = int(width * first_ratio)
        out_channels = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1, self.bn1 = _conv_bn(in_channels, first, 1, s1)
        self.conv2, self.bn2 = _conv_bn(first, width, 3, s3, groups, dilation=dilation)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1)
        self.downsample = downsample
        self.branch_act = branch_act
        self.init_residual(se=make_block_se(se, stage, in_channels, out_channels, width),
                           placement=se.placement if se is not None else "standard",
                           act=nn.ReLU(inplace=True), drop_path=drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se_inner(F.relu(self.bn2(self.conv2(out)), inplace=True))
        out = self.bn3(self.conv3(out))
        if self.branch_act:
            out = F.relu(out, inplace=True)
        return out


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class Stem(nn.Sequential):
    """``conv 7x7/2`` (ResNet) or three 3x3 convolutions (SENet-154), each with BN and ReLU.
    (The max pooling that follows is the model's ``maxpool``.)"""

    def __init__(self, in_chans: int, kind: Literal["7x7", "deep"]) -> None:
        if kind == "7x7":
            convs = [(in_chans, 64, 7, 2)]
        elif kind == "deep":
            convs = [(in_chans, 64, 3, 2), (64, 64, 3, 1), (64, 128, 3, 1)]
        else:
            raise ValueError(f"unknown stem {kind!r}; allowed: '7x7', 'deep'")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (cin, cout, k, stride) in enumerate(convs, 1):
            layers[f"conv{i}"], layers[f"bn{i}"] = _conv_bn(cin, cout, k, stride)
            layers[f"act{i}"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.out_channels = convs[-1][1]


def _stem_pool(kind: str) -> nn.MaxPool2d:
    if kind == "caffe":
        return nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
    if kind == "torch":
        return nn.MaxPool2d(3, 2, padding=1)
    raise ValueError(f"unknown stem_pool {kind!r}; allowed: 'caffe', 'torch'")


class ResNet(SenetModel):
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
        drop_path_rate: stochastic depth of the residual branches, rising linearly to this rate.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE.
        zero_init_last: initialise each block's last BN scale to zero.
        output_stride: 32, or 16 / 8 for dilated last stages (see the module docstring).
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
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
        zero_init_last: bool = False,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; allowed: {sorted(BLOCKS)}")
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must give 4 positive stage depths, got {list(layers)}")
        if se is not None:
            se.check_stages(range(FIRST_STAGE, FIRST_STAGE + len(layers)))
        if block == "basic" and (groups != 1 or width_per_group != 64):
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64")
        block_cls = BLOCKS[block]
        self.stem = Stem(in_chans, stem)
        self.maxpool = _stem_pool(stem_pool)
        channels = self.stem.out_channels
        self.feature_info = [feature("stem", channels, 2, 1)]
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        strides = [1] + [2] * (len(layers) - 1)
        for i, (depth, dilated) in enumerate(zip(layers, dilate(strides, output_stride, 4), strict=True)):
            planes = 64 * 2**i
            stride, strided = dilated.stride, strides[i] != 1
            out_channels = planes * block_cls.expansion
            blocks = []
            for j in range(depth):
                downsample = None
                if j == 0 and (strided or channels != out_channels):
                    k = down_kernel if strided else 1
                    d = dilated.first_dilation if k > 1 else 1
                    downsample = nn.Sequential(*_conv_bn(channels, out_channels, k, stride, dilation=d))
                first_dilation = dilated.first_dilation if j == 0 else dilated.dilation
                if block == "basic":
                    shape = {"dilation": dilated.dilation, "first_dilation": first_dilation}
                else:
                    shape = {"groups": groups, "width_per_group": width_per_group, "first_ratio": first_ratio,
                             "stride_in_1x1": stride_in_1x1, "dilation": first_dilation}
                blocks.append(block_cls(channels, planes, stride if j == 0 else 1, downsample, se=se,
                                        stage=FIRST_STAGE + i, branch_act=branch_act, drop_path=next(rates), **shape))
                channels = out_channels
            self.add_module(f"layer{i + 1}", CheckpointSequential(*blocks))
            self.feature_info.append(feature(f"layer{i + 1}", channels, dilated.reduction, FIRST_STAGE + i))
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        # He et al. initialisation (paper section 5.1).
        init_conv_bn(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def _build(block: str, layers: Sequence[int], *, defaults: dict[str, Any], kwargs: dict[str, Any]) -> ResNet:
    return ResNet(block, layers, **{**defaults, **kwargs})


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


def _resnet(depth: int, kwargs: dict[str, Any]) -> ResNet:
    block, layers = _DEPTHS[depth]
    return _build(block, layers, defaults={}, kwargs=kwargs)


def _resnext(layers: Sequence[int], kwargs: dict[str, Any]) -> ResNet:
    return _build("bottleneck", layers, defaults=_RESNEXT, kwargs=kwargs)


register_family("resnet", ResNet, placements=PLACEMENTS, converters=(resnet_weights.from_legacy, resnet_weights.from_timm),
                layout_keys=resnet_weights.LAYOUT_KEYS, layout_of=resnet_weights.model_layout,
                writers={"legacy": resnet_weights.to_legacy, "timm": resnet_weights.to_timm})

@register_model(family="resnet", has_se=False, released=RELEASED["resnet18"])
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2016)."""
    return _resnet(18, kwargs)


@register_model(family="resnet", has_se=False, released=RELEASED["resnet34"])
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34."""
    return _resnet(34, kwargs)


@register_model(family="resnet", has_se=False, released=RELEASED["resnet50"])
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (Table 1, left column). 3.86 GFLOPs with the stride in the first 1x1."""
    return _resnet(50, kwargs)


@register_model(family="resnet", has_se=False, released=RELEASED["resnet101"])
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101."""
    return _resnet(101, kwargs)


@register_model(family="resnet", has_se=False, released=RELEASED["resnet152"])
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152."""
    return _resnet(152, kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnet18"])
def se_resnet18(**kwargs: Any) -> ResNet:
    """SE-ResNet-18."""
    return _resnet(18, kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnet34"])
def se_resnet34(**kwargs: Any) -> ResNet:
    """SE-ResNet-34."""
    return _resnet(34, kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnet50"])
def se_resnet50(**kwargs: Any) -> ResNet:
    """SE-ResNet-50 (Table 1, middle column): 28.1M params, 3.87 GFLOPs."""
    return _resnet(50, kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnet101"])
def se_resnet101(**kwargs: Any) -> ResNet:
    """SE-ResNet-101."""
    return _resnet(101, kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnet152"])
def se_resnet152(**kwargs: Any) -> ResNet:
    """SE-ResNet-152."""
    return _resnet(152, kwargs)


@register_model(family="resnet", has_se=False, released=RELEASED["resnext50_32x4d"])
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-50 (32x4d), Xie et al. 2017."""
    return _resnext((3, 4, 6, 3), kwargs)


@register_model(family="resnet", has_se=False, released=RELEASED["resnext101_32x4d"])
def resnext101_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-101 (32x4d)."""
    return _resnext((3, 4, 23, 3), kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnext26_32x4d"])
def se_resnext26_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-26 (32x4d): two blocks per stage."""
    return _resnext((2, 2, 2, 2), kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnext50_32x4d"])
def se_resnext50_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-50 (32x4d) (Table 1, right column)."""
    return _resnext((3, 4, 6, 3), kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["se_resnext101_32x4d"])
def se_resnext101_32x4d(**kwargs: Any) -> ResNet:
    """SE-ResNeXt-101 (32x4d)."""
    return _resnext((3, 4, 23, 3), kwargs)


@register_model(family="resnet", has_se=True, released=RELEASED["senet154"])
def senet154(**kwargs: Any) -> ResNet:
    """SENet-154 (section 3 of the spec / paper appendix): SE in a 64x4d ResNeXt-152 with a
    halved first 1x1, a three-conv 3x3 stem, 3x3 stride-2 projections and dropout 0.2."""
    return _build("bottleneck", (3, 8, 36, 3), defaults=_SENET154, kwargs=kwargs)

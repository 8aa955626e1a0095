"""CIFAR ResNets with and without SE (paper section 5, Table 4): one class, :class:`CifarResNet`.

* ResNet-20/32/44/56/110 (He et al., "Deep Residual Learning for Image Recognition", CVPR
  2016, section 4.2): a 3x3 convolution with 16 filters, then three stages of ``n`` basic
  blocks (two 3x3 convolutions, post-activation) with 16, 32 and 64 channels on 32x32,
  16x16 and 8x8 maps, global average pooling and a fully connected layer; depth ``6n + 2``.
  Shortcuts that change the shape use option A (parameter-free: stride-2 subsampling and
  zero channels appended), as in the paper's CIFAR experiments, or option B (1x1
  projection and BN) with ``shortcut="B"``.
* Pre-activation ResNet-164 (He et al., "Identity Mappings in Deep Residual Networks",
  ECCV 2016): bottleneck blocks ``BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1`` with 16/32/64
  bottleneck widths and 64/128/256 outputs, 18 per stage (depth ``9n + 2``), projection
  shortcuts where the shape changes (taking the block's pre-activated input, as in the
  authors' code), and a final BN-ReLU before pooling.

Stage numbering for ``se_stages``: the stem is stage 1, the three CIFAR stages are 2, 3, 4.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import PLACEMENTS, CheckpointSequential, ResidualUnit, SEConfig, drop_path_rates, make_block_se
from senet.models._base import SenetModel, feature
from senet.models._common import init_conv_bn
from senet.models.registry import register_family, register_model
from senet.preprocess import PretrainedCfg

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FIRST_STAGE = 2  # stage 1 is the stem
CIFAR_STAGES = (2, 3, 4)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


def init_cifar_weights(model: nn.Module) -> None:
    """He initialisation for convolutions, BN at identity, zero linear biases."""
    init_conv_bn(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def check_se(se: SEConfig | None) -> None:
    if se is not None:
        se.check_stages(CIFAR_STAGES)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut (He et al. 2016, section 4.2): subsample by ``stride`` and append
    zero channels up to ``out_channels``. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


def _shortcut(kind: str, cin: int, cout: int, stride: int, bn: bool = True) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    if kind == "A":
        return ZeroPadShortcut(cin, cout, stride)
    conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if bn else conv


class CifarBasicBlock(ResidualUnit):
    """``conv3x3-BN-ReLU-conv3x3-BN`` plus shortcut, then ReLU (He et al. 2016, Fig. 2 left).
    ``placement="conv3x3"`` puts SE after the first convolution's BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, shortcut: str,
                 se: SEConfig | None, stage: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, out_channels, 3, stride), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = _conv(out_channels, out_channels, 3), nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride)
        self.init_residual(se=make_block_se(se, stage, in_channels, out_channels, out_channels),
                           placement=se.placement if se is not None else "standard",
                           act=nn.ReLU(inplace=True), drop_path=drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se_inner(F.relu(self.bn1(self.conv1(x)), inplace=True))
        return self.bn2(self.conv2(out))


class PreActUnit(ResidualUnit):
    """A pre-activation unit (He et al. 2016b): ``bn1``-ReLU, then :meth:`tail`. An identity
    shortcut carries the raw input; a projection shortcut takes the pre-activated one, as in the
    paper. The ``pre`` placement scales the pre-activated input, which is what the branch sees.
    Subclasses define ``bn1``, ``shortcut`` and ``tail``."""

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        return self.merge(out, x if self.shortcut is None else self.shortcut(out))


class PreActBottleneck(PreActUnit):
    """Pre-activation bottleneck (He et al. 2016b, Fig. 4(e)): ``BN-ReLU-conv1x1,
    BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1`` to ``4 * mid`` channels, no activation after
    the sum. A block with a projection shortcut feeds the shortcut and the branch the same
    pre-activated input. ``placement="conv3x3"`` puts SE after the BN-ReLU that follows the
    3x3 convolution."""

    expansion = 4

    def __init__(self, in_channels: int, mid_channels: int, stride: int, *, shortcut: str,
                 se: SEConfig | None, stage: int, drop_path: float = 0.0) -> None:
        super().__init__()
        out_channels = mid_channels * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), _conv(in_channels, mid_channels, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(mid_channels), _conv(mid_channels, mid_channels, 3, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(mid_channels), _conv(mid_channels, out_channels, 1)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride, bn=False)
        self.init_residual(se=make_block_se(se, stage, in_channels, out_channels, mid_channels),
                           placement=se.placement if se is not None else "standard", drop_path=drop_path)

    def tail(self, out: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.bn2(self.conv1(out)), inplace=True))
        out = self.se_inner(F.relu(self.bn3(out), inplace=True))
        return self.conv3(out)


BLOCKS = ("basic", "preact_bottleneck")


class CifarResNet(SenetModel):
    """CIFAR ResNet of depth ``6n + 2`` (``block="basic"``) or ``9n + 2``
    (``block="preact_bottleneck"``); see the module docstring.

    Args:
        depth: total depth (20, 32, 44, 56, 110 for basic blocks; 164 for bottlenecks).
        block: ``"basic"`` (post-activation, He et al. 2016) or ``"preact_bottleneck"``
            (He et al. 2016b).
        shortcut: ``"A"`` zero-padding or ``"B"`` projection where the shape changes.
        widths: channels of the three stages (bottleneck widths for bottleneck blocks).
        num_classes: classifier outputs (0: no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the residual branches, rising linearly to this rate.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE.
    """

    def __init__(
        self,
        depth: int = 110,
        *,
        block: Literal["basic", "preact_bottleneck"] = "basic",
        shortcut: Literal["A", "B"] = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; allowed: {', '.join(map(repr, BLOCKS))}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"unknown shortcut {shortcut!r}; allowed: 'A' (zero padding), 'B' (projection)")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must give 3 positive stage widths, got {list(widths)}")
        per_block = 2 if block == "basic" else 3
        if depth < 2 + 3 * per_block or (depth - 2) % (3 * per_block):
            raise ValueError(f"depth of a CIFAR ResNet with {block} blocks must be {3 * per_block}n + 2, got {depth}")
        check_se(se)
        n = (depth - 2) // (3 * per_block)
        preact = block == "preact_bottleneck"
        self.conv1 = _conv(in_chans, widths[0], 3)
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        self.act1 = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.feature_info = [feature("act1", widths[0], 1, 1)]
        channels = widths[0]
        rates = iter(drop_path_rates(drop_path_rate, 3 * n))
        for i, width in enumerate(widths):
            blocks: list[nn.Module] = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                if preact:
                    blocks.append(PreActBottleneck(channels, width, stride, shortcut=shortcut, se=se,
                                                   stage=FIRST_STAGE + i, drop_path=next(rates)))
                    channels = width * PreActBottleneck.expansion
                else:
                    blocks.append(CifarBasicBlock(channels, width, stride, shortcut=shortcut, se=se,
                                                  stage=FIRST_STAGE + i, drop_path=next(rates)))
                    channels = width
            self.add_module(f"layer{i + 1}", CheckpointSequential(*blocks))
            self.feature_info.append(feature(f"layer{i + 1}", channels, 2**i, FIRST_STAGE + i))
        # pre-activation networks end with BN-ReLU; the last stage's output is taken after it
        self.final_bn = nn.BatchNorm2d(channels) if preact else nn.Identity()
        self.final_act = nn.ReLU(inplace=True) if preact else nn.Identity()
        self.feature_info[-1] = feature("final_act", channels, 4, FIRST_STAGE + 2)
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_cifar_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.final_act(self.final_bn(x))


def _cifar(depth: int, kwargs: dict[str, Any], **defaults: Any) -> CifarResNet:
    return CifarResNet(depth, **{**defaults, **kwargs})


#: The pretrained config of every CIFAR-10 model (the CIFAR families share it).
CIFAR_CFG = PretrainedCfg(input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, num_classes=10,
                          first_conv="conv1")
register_family("cifar_resnet", CifarResNet, placements=PLACEMENTS)
_REG = {"cfg": CIFAR_CFG}


@register_model(family="cifar_resnet", has_se=False, **_REG)
def cifar_resnet20(**kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016, Table 6: 0.27M parameters)."""
    return _cifar(20, kwargs)


@register_model(family="cifar_resnet", has_se=False, **_REG)
def cifar_resnet32(**kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (0.46M)."""
    return _cifar(32, kwargs)


@register_model(family="cifar_resnet", has_se=False, **_REG)
def cifar_resnet44(**kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR (0.66M)."""
    return _cifar(44, kwargs)


@register_model(family="cifar_resnet", has_se=False, **_REG)
def cifar_resnet56(**kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (0.85M)."""
    return _cifar(56, kwargs)


@register_model(family="cifar_resnet", has_se=False, **_REG)
def cifar_resnet110(**kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (1.7M); SENet Table 4 baseline (6.37% CIFAR-10 error)."""
    return _cifar(110, kwargs)


@register_model(family="cifar_resnet", has_se=True, **_REG)
def cifar_se_resnet20(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-20 for CIFAR."""
    return _cifar(20, kwargs)


@register_model(family="cifar_resnet", has_se=True, **_REG)
def cifar_se_resnet32(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-32 for CIFAR."""
    return _cifar(32, kwargs)


@register_model(family="cifar_resnet", has_se=True, **_REG)
def cifar_se_resnet44(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-44 for CIFAR."""
    return _cifar(44, kwargs)


@register_model(family="cifar_resnet", has_se=True, **_REG)
def cifar_se_resnet56(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-56 for CIFAR."""
    return _cifar(56, kwargs)


@register_model(family="cifar_resnet", has_se=True, **_REG)
def cifar_se_resnet110(**kwargs: Any) -> CifarResNet:
    """SE-ResNet-110 for CIFAR (SENet Table 4: 5.21% CIFAR-10 error)."""
    return _cifar(110, kwargs)


@register_model(family="cifar_resnet", has_se=False, **_REG)
def cifar_preact_resnet164(**kwargs: Any) -> CifarResNet:
    """Pre-activation ResNet-164 (He et al. 2016b: 1.7M parameters; 5.46% CIFAR-10 error)."""
    return _cifar(164, kwargs, block="preact_bottleneck", shortcut="B")


@register_model(family="cifar_resnet", has_se=True, **_REG)
def cifar_se_preact_resnet164(**kwargs: Any) -> CifarResNet:
    """SE pre-activation ResNet-164 (SENet Table 4: 4.39% CIFAR-10 error)."""
    return _cifar(164, kwargs, block="preact_bottleneck", shortcut="B")

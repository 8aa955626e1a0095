"""MobileNet (v1) and SE-MobileNet (Howard et al. 2017; SE paper Table 3: 569 / 572 MFLOPs, 4.2M / 4.7M).

A strided 3x3 convolution, then 13 depthwise-separable units (3x3 depthwise convolution, BN,
activation, 1x1 pointwise convolution, BN, activation), global average pooling and one FC
layer. The activation is ReLU6 as in the released TF-slim model and timm's
``mobilenetv1_100`` (``act="relu"`` gives the paper's plain ReLU). ``width_mult`` is the
paper's width multiplier alpha.

SE (spec section 2): the units have no residual sum; the SE block scales each unit's output
(after the pointwise convolution's activation), which gives the paper's 4.7M parameters. Only
``placement="standard"`` exists here.

Stages (see :mod:`senet.models._common`): ``blocks.0`` (112x112 at 224) is stage 1, then one
stage per resolution down to ``blocks.4`` (7x7), stage 5. :func:`from_timm` renames timm's keys.
``output_stride=16`` or ``8`` dilates the depthwise convolutions of the last stages instead of
striding them (as timm's ``output_stride``; same weights).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from senet.layers import CheckpointSequential, SEConfig, make_divisible
from senet.models._base import SenetModel, dilate, feature
from senet.models._common import init_weights
from senet.models.registry import Released, register_family, register_model
from senet.preprocess import INCEPTION_MEAN, INCEPTION_STD, PretrainedCfg
from senet.weights.keymap import Foreign, prefix_rules, rename_keys

#: (output channels, stride) of the 13 depthwise-separable units, grouped by stage 1-5.
STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2),) + ((512, 1),) * 5,
    ((1024, 2), (1024, 1)),
)
ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class Stem(nn.Module):
    """3x3 stride-2 convolution, BN, activation."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = ACTS[act](inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 and pointwise 1x1 convolutions, each with BN and activation; then SE."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, se: SEConfig | None, dilation: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, dilation, dilation, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = ACTS[act](inplace=True)
        self.se = se.make(cout) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv_dw(x)))
        x = self.act(self.bn2(self.conv_pw(x)))
        se = self.se
        return x if se is None else se(x)


class MobileNet(SenetModel):
    """MobileNet v1, with or without SE on each depthwise-separable unit's output.

    Args:
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        width_mult: the width multiplier alpha (channels rounded to multiples of 8).
        act: ``"relu6"`` (released model, timm) or ``"relu"`` (the paper's figure).
        drop_rate: dropout before the classifier.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 1-5.
        output_stride: 32, or 16 / 8 for dilated last stages (see the module docstring).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        act: str = "relu6",
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if act not in ACTS:
            raise ValueError(f"unknown act {act!r}; allowed: {', '.join(map(repr, ACTS))}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
        if se is not None:
            se.check_stages(range(1, len(STAGES) + 1))
        channels = make_divisible(32 * width_mult)
        self.stem = Stem(in_chans, channels, act)
        stages = []
        self.feature_info = []
        dilated = iter(dilate([stride for units in STAGES for _, stride in units], output_stride, 2))
        for index, units in enumerate(STAGES):
            stage_se = se if se is not None and se.in_stage(index + 1) else None
            blocks = []
            for cout, _ in units:
                cout = make_divisible(cout * width_mult)
                unit = next(dilated)
                blocks.append(DepthwiseSeparable(channels, cout, unit.stride, act, stage_se, unit.first_dilation))
                channels = cout
            stages.append(CheckpointSequential(*blocks))
            self.feature_info.append(feature(f"blocks.{index}", channels, unit.reduction, index + 1))
        self.blocks = nn.Sequential(*stages)
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


def from_timm(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Foreign | None:
    """timm's ``mobilenetv1_100`` state dict with senet's keys (``None`` if ``state`` is not one).

    ``blocks.S.U.*`` keep their names; ``conv_stem`` / ``bn1`` become ``stem.conv`` /
    ``stem.bn`` and ``classifier`` becomes ``fc``.
    """
    if "conv_stem.weight" not in state or not any(k.startswith("blocks.") for k in state):
        return None
    renames = {"conv_stem.": "stem.conv.", "bn1.": "stem.bn.", "classifier.": "fc."}
    return Foreign("timm", *rename_keys(state, prefix_rules(renames), source), describe="timm MobileNet v1 weights")


def _mobilenet(kwargs: dict[str, Any]) -> MobileNet:
    return MobileNet(**kwargs)


register_family("mobilenet", MobileNet, converters=(from_timm,))
_CFG = PretrainedCfg(first_conv="stem.conv")


@register_model(family="mobilenet", has_se=False, cfg=_CFG, released=Released(
    "mobilenetv1_100.ra4_e3600_r224_in1k", hf_hub_id="timm/", origin="timm (ReLU6, trained by timm)",
    cfg={"mean": INCEPTION_MEAN, "std": INCEPTION_STD, "crop_pct": 0.875, "interpolation": "bicubic",
         "test_input_size": (3, 256, 256), "test_crop_pct": 0.95}))
def mobilenet(**kwargs: Any) -> MobileNet:
    """MobileNet v1 1.0-224 (Table 3): 4.2M params, 569 MFLOPs."""
    return _mobilenet(kwargs)


@register_model(family="mobilenet", has_se=True, cfg=_CFG)
def se_mobilenet(**kwargs: Any) -> MobileNet:
    """SE-MobileNet 1.0-224 (Table 3): an SE block on each of the 13 units; 4.7M params, 572 MFLOPs."""
    return _mobilenet(kwargs)

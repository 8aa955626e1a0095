"""VGG and SE-VGG (Simonyan & Zisserman 2015; SE paper Table 2: VGG-16 with BN, 15.47 / 15.48 GFLOPs).

Plain networks have no residual branch: the SE block goes after the non-linearity that follows
each convolution (spec section 2), so SE-VGG-16 has 13 SE blocks.

Stages (see :mod:`senet.models._common`): ``layer1`` (``conv1_x``, full resolution) is stage 0,
``layer2`` stage 1, ... ``layer5`` (``conv5_x``, 1/16) stage 4.

The classifier is VGG's three fully connected layers, the first two stored as convolutions
(``pre_logits.fc1``: 7x7, ``pre_logits.fc2``: 1x1) as timm does, so the network runs at any
input size: a feature map smaller than 7x7 is first average-pooled up to 7x7 (at 224x224 the
map is 7x7 and ``fc1`` is exactly VGG's first FC layer); a larger one gives a map of FC
outputs that is averaged before the last layer. :func:`from_timm` renames timm's keys.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import SEConfig, SqueezeExcite
from senet.models._common import init_weights, se_config
from senet.models.registry import register_model

#: Convolution widths of each of the five blocks (VGG paper, Table 1: configurations A, B, D, E).
CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class ConvUnit(nn.Module):
    """3x3 convolution, batch norm (optional), ReLU, then the SE block (when given)."""

    def __init__(self, cin: int, cout: int, *, batch_norm: bool, se: SqueezeExcite | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout) if batch_norm else nn.Identity()
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        return x if self.se is None else self.se(x)


class MlpHead(nn.Module):
    """VGG's first two FC layers as a 7x7 and a 1x1 convolution, each followed by ReLU and dropout."""

    def __init__(self, cin: int, width: int, kernel: int, drop_rate: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.drop_rate = drop_rate
        self.fc1 = nn.Conv2d(cin, width, kernel)
        self.fc2 = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < self.kernel or w < self.kernel:
            x = F.adaptive_avg_pool2d(x, (max(h, self.kernel), max(w, self.kernel)))
        x = F.dropout(F.relu(self.fc1(x), inplace=True), self.drop_rate, self.training)
        return F.relu(self.fc2(x), inplace=True)


class VGG(nn.Module):
    """VGG-11/13/16/19, with or without batch norm, with or without SE.

    Args:
        depth: 11, 13, 16 or 19 weight layers.
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        batch_norm: batch norm after each convolution (the paper's "VGG-16 (BN)").
        mlp_width: width of the two hidden FC layers (4096).
        drop_rate: dropout after each hidden FC layer (0.5 in VGG; no effect in eval mode).
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 0-4.
    """

    def __init__(
        self,
        depth: int = 16,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = True,
        mlp_width: int = 4096,
        drop_rate: float = 0.5,
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"unknown VGG depth {depth!r}; allowed: {sorted(CONFIGS)}")
        widths = CONFIGS[depth]
        if se is not None:
            se.check_stages(range(len(widths)))
        channels = in_chans
        for stage, stage_widths in enumerate(widths):
            units = []
            for width in stage_widths:
                block_se = se.make(width) if se is not None and se.in_stage(stage) else None
                units.append(ConvUnit(channels, width, batch_norm=batch_norm, se=block_se))
                channels = width
            self.add_module(f"layer{stage + 1}", nn.Sequential(*units))
        self.pre_logits = MlpHead(channels, mlp_width, 7, drop_rate)
        self.num_features = mlp_width
        self.drop_rate = drop_rate
        self.fc = nn.Linear(mlp_width, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, fc_convs=(self.pre_logits.fc1, self.pre_logits.fc2))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4, self.layer5]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = F.max_pool2d(stage(x), 2, 2)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_logits(x).mean((2, 3))
        x = F.dropout(x, self.drop_rate, self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def from_timm(state: Mapping[str, torch.Tensor], depth: int = 16) -> dict[str, torch.Tensor]:
    """timm's ``vgg{depth}_bn`` state dict with senet's keys (``features.N`` -> ``layerS.U.conv/bn``).

    timm numbers the layers of one ``nn.Sequential`` (conv, BN, ReLU per unit, a max pooling
    after each block); the renaming follows :data:`CONFIGS`. ``pre_logits`` keeps its names and
    ``head.fc`` becomes ``fc``. Keys that match nothing keep their name (and are then reported
    by ``load_state_dict``).
    """
    rename: dict[str, str] = {}
    index = 0
    for stage, widths in enumerate(CONFIGS[depth]):
        for unit in range(len(widths)):
            rename[f"features.{index}."] = f"layer{stage + 1}.{unit}.conv."
            rename[f"features.{index + 1}."] = f"layer{stage + 1}.{unit}.bn."
            index += 3
        index += 1  # the max pooling
    out = {}
    for key, value in state.items():
        match = re.match(r"(features\.\d+\.)(.*)", key)
        if match and match.group(1) in rename:
            key = rename[match.group(1)] + match.group(2)
        elif key.startswith("head.fc."):
            key = key[len("head."):]
        out[key] = value
    return out


def _vgg(depth: int, has_se: bool, kwargs: dict[str, Any]) -> VGG:
    se = se_config(kwargs, has_se=has_se, family="VGG (SE follows each convolution's ReLU)")
    return VGG(depth, se=se, **kwargs)


@register_model(family="vgg", has_se=False)
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with batch norm (Table 2): 138.4M params, 15.47 GFLOPs."""
    return _vgg(16, False, kwargs)


@register_model(family="vgg", has_se=True)
def se_vgg16_bn(**kwargs: Any) -> VGG:
    """SE-VGG-16 (BN) (Table 2): an SE block after each of the 13 convolutions' ReLU; 15.48 GFLOPs."""
    return _vgg(16, True, kwargs)

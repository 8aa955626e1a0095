"""VGG and SE-VGG (Simonyan & Zisserman 2015; SE paper Table 2: VGG-16 with BN, 15.47 / 15.48 GFLOPs).

Plain networks have no residual branch: the SE block goes after the non-linearity that follows
each convolution (spec section 2), so SE-VGG-16 has 13 SE blocks.

Stages (see :mod:`senet.models._common`): ``layer1`` (``conv1_x``, full resolution) is stage 0,
``layer2`` stage 1, ... ``layer5`` (``conv5_x``, 1/16) stage 4; the max pooling after each block
is the model's ``pool1`` ... ``pool5``, and ``pool5`` (1/32) ends the trunk.

The classifier is VGG's three fully connected layers, the first two stored as convolutions
(``pre_logits.fc1``: 7x7, ``pre_logits.fc2``: 1x1) as timm does, so the network runs at any
input size: a feature map smaller than 7x7 is first average-pooled up to 7x7 (at 224x224 the
map is 7x7 and ``fc1`` is exactly VGG's first FC layer); a larger one gives a map of FC
outputs that is averaged before the last layer. :func:`from_timm` renames timm's keys.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import CheckpointSequential, SEConfig, SqueezeExcite
from senet.models._base import SenetModel, feature
from senet.models._common import init_weights
from senet.models.registry import Released, register_family, register_model
from senet.preprocess import PretrainedCfg
from senet.weights.keymap import Foreign, prefix_rules, rename_keys

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


def pool_up_to(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """``x`` average-pooled up to ``kernel`` x ``kernel`` where it is smaller (unchanged otherwise)."""
    h, w = x.shape[-2:]
    if h < kernel or w < kernel:
        x = F.adaptive_avg_pool2d(x, (max(h, kernel), max(w, kernel)))
    return x


# a leaf for fx: its branch is on the input's size, which symbolic tracing cannot follow
torch.fx.wrap("pool_up_to")


class MlpHead(nn.Module):
    """VGG's first two FC layers as a 7x7 and a 1x1 convolution, each followed by ReLU and dropout."""

    def __init__(self, cin: int, width: int, kernel: int, drop_rate: float) -> None:
        super().__init__()
        self.kernel = kernel
        self.fc1 = nn.Conv2d(cin, width, kernel)
        self.act1 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Conv2d(width, width, 1)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act1(self.fc1(pool_up_to(x, self.kernel))))
        return self.act2(self.fc2(x))


class VGG(SenetModel):
    """VGG-11/13/16/19, with or without batch norm, with or without SE.

    Args:
        depth: 11, 13, 16 or 19 weight layers.
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        batch_norm: batch norm after each convolution (the paper's "VGG-16 (BN)").
        mlp_width: width of the two hidden FC layers (4096).
        drop_rate: dropout after each hidden FC layer (0.5 in VGG; no effect in eval mode).
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""`` (after the FC layers stored as
            convolutions).
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
        global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"unknown VGG depth {depth!r}; allowed: {sorted(CONFIGS)}")
        widths = CONFIGS[depth]
        if se is not None:
            se.check_stages(range(len(widths)))
        channels = in_chans
        self.feature_info = []
        for stage, stage_widths in enumerate(widths):
            units = []
            for width in stage_widths:
                block_se = se.make(width) if se is not None and se.in_stage(stage) else None
                units.append(ConvUnit(channels, width, batch_norm=batch_norm, se=block_se))
                channels = width
            self.add_module(f"layer{stage + 1}", CheckpointSequential(*units))
            self.add_module(f"pool{stage + 1}", nn.MaxPool2d(2, 2))
            self.feature_info.append(feature(f"layer{stage + 1}", channels, 2**stage, stage))
        self.feature_info.append(feature(f"pool{len(widths)}", channels, 2 ** len(widths), len(widths)))
        self.pre_logits = MlpHead(channels, mlp_width, 7, drop_rate)
        self.init_head(mlp_width, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_weights(self, fc_convs=(self.pre_logits.fc1, self.pre_logits.fc2))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.layer1(x))
        x = self.pool2(self.layer2(x))
        x = self.pool3(self.layer3(x))
        x = self.pool4(self.layer4(x))
        return self.pool5(self.layer5(x))

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_logits(x)

    def remove_pre_pool(self) -> None:
        self.pre_logits = nn.Identity()


def from_timm(state: Mapping[str, torch.Tensor], source: str = "checkpoint", depth: int = 16) -> Foreign | None:
    """timm's ``vgg{depth}_bn`` state dict with senet's keys (``features.N`` -> ``layerS.U.conv/bn``),
    or ``None`` if ``state`` has no timm VGG keys.

    timm numbers the layers of one ``nn.Sequential`` (conv, BN, ReLU per unit, a max pooling
    after each block); the renaming follows :data:`CONFIGS`. ``pre_logits`` keeps its names and
    ``head.fc`` becomes ``fc``. Keys that match nothing keep their name (and are then reported
    by the loader).
    """
    if "features.0.weight" not in state:
        return None
    rename: dict[str, str] = {}
    index = 0
    for stage, widths in enumerate(CONFIGS[depth]):
        for unit in range(len(widths)):
            rename[f"features.{index}."] = f"layer{stage + 1}.{unit}.conv."
            rename[f"features.{index + 1}."] = f"layer{stage + 1}.{unit}.bn."
            index += 3
        index += 1  # the max pooling
    rename["head.fc."] = "fc."
    return Foreign("timm", *rename_keys(state, prefix_rules(rename), source), describe=f"timm VGG-{depth} weights")


def _vgg(depth: int, kwargs: dict[str, Any]) -> VGG:
    return VGG(depth, **kwargs)


register_family("vgg", VGG, converters=(from_timm,))


@register_model(family="vgg", has_se=False, cfg=PretrainedCfg(first_conv="layer1.0.conv"), released=Released(
    "vgg16_bn.tv_in1k", hf_hub_id="timm/", origin="torchvision, via timm"))
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with batch norm (Table 2): 138.4M params, 15.47 GFLOPs."""
    return _vgg(16, kwargs)


@register_model(family="vgg", has_se=True, cfg=PretrainedCfg(first_conv="layer1.0.conv"))
def se_vgg16_bn(**kwargs: Any) -> VGG:
    """SE-VGG-16 (BN) (Table 2): an SE block after each of the 13 convolutions' ReLU; 15.48 GFLOPs."""
    return _vgg(16, kwargs)

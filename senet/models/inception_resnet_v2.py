"""Inception-ResNet-v2 and SE-Inception-ResNet-v2 (Szegedy et al. 2017; SE paper Table 2, 299x299).

The network is the released (TF-slim) Inception-ResNet-v2, the one timm and Cadene's port
carry: a stem of valid-padded convolutions down to 35x35, the ``mixed_5b`` Inception module,
10 / 20 / 10 residual Inception blocks at 35x35 / 17x17 / 8x8 (``Block35``, ``Block17``,
``Block8``; their branch is scaled by 0.17 / 0.10 / 0.20 before the sum; the very last block has
no ReLU and an unscaled branch), the reductions ``mixed_6a`` / ``mixed_7a`` between them, a 1x1
convolution to 1536 channels, global average pooling and one FC layer. Batch norm uses
``eps=1e-3``.

SE (spec section 2): in each residual block, on the residual branch (its concatenated Inception
branches, projected by the 1x1 convolution and scaled) before the sum with the identity, through
:func:`~senet.layers.residual_forward`, so the placements ``pre``, ``post`` and ``identity``
work too (``conv3x3`` does not: the branches have no single 3x3 convolution).

Stages (see :mod:`senet.models._common`): the 35x35 blocks (``repeat``) are stage 3, the 17x17
ones (``repeat_1``) stage 4 and the 8x8 ones (``repeat_2``) stage 5.

Complexity: this network counts 13.16 GFLOPs (multiply-adds) at 299x299, the figure timm gives
for it (13.2 GMACs), not the 11.75 of the SE paper's Table 2, which does not say what it counted
(the Inception-v4 paper's 5/10/5 block counts would give 8.5, so they do not explain it either).
``senet/paper/complexity.csv`` keeps the paper's figure with a note: a documented exception.

The smallest input is 75x75 (the valid-padded stem and the two valid stride-2 reductions).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import CheckpointSequential, ResidualUnit, SEConfig, drop_path_rates, make_block_se
from senet.models._base import SenetModel, feature
from senet.models._common import RESIDUAL_PLACEMENTS, init_weights
from senet.models.registry import Released, register_family, register_model
from senet.preprocess import INCEPTION_MEAN, INCEPTION_STD, PretrainedCfg
from senet.weights.keymap import Foreign, prefix_rules, rename_keys

MIN_INPUT = 75


class ConvBnAct(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU; valid padding unless given."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _seq(*convs: nn.Module) -> nn.Sequential:
    return nn.Sequential(*convs)


class _Branches(nn.Module):
    """Two to four parallel branches ``branch0`` ... ``branch3`` (the released names), concatenated
    along channels by :meth:`concat`."""

    def add_branches(self, branches: Sequence[nn.Module]) -> None:
        if not 2 <= len(branches) <= 4:
            raise ValueError(f"2 to 4 branches expected, got {len(branches)}")
        for i in range(4):
            setattr(self, f"branch{i}", branches[i] if i < len(branches) else None)

    def concat(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.branch0(x), self.branch1(x)]
        if self.branch2 is not None:
            outs.append(self.branch2(x))
        if self.branch3 is not None:
            outs.append(self.branch3(x))
        return torch.cat(outs, 1)


class Concat(_Branches):
    """Parallel branches ``branch0``, ``branch1`` ... concatenated along channels."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.add_branches(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.concat(x)


def mixed_5b() -> Concat:
    """35x35 Inception module, 192 -> 320 channels."""
    return Concat([
        ConvBnAct(192, 96, 1),
        _seq(ConvBnAct(192, 48, 1), ConvBnAct(48, 64, 5, padding=2)),
        _seq(ConvBnAct(192, 64, 1), ConvBnAct(64, 96, 3, padding=1), ConvBnAct(96, 96, 3, padding=1)),
        _seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBnAct(192, 64, 1)),
    ])


def mixed_6a() -> Concat:
    """Reduction-A, 35x35 -> 17x17, 320 -> 1088 channels."""
    return Concat([
        ConvBnAct(320, 384, 3, 2),
        _seq(ConvBnAct(320, 256, 1), ConvBnAct(256, 256, 3, padding=1), ConvBnAct(256, 384, 3, 2)),
        nn.MaxPool2d(3, 2),
    ])


def mixed_7a() -> Concat:
    """Reduction-B, 17x17 -> 8x8, 1088 -> 2080 channels."""
    return Concat([
        _seq(ConvBnAct(1088, 256, 1), ConvBnAct(256, 384, 3, 2)),
        _seq(ConvBnAct(1088, 256, 1), ConvBnAct(256, 288, 3, 2)),
        _seq(ConvBnAct(1088, 256, 1), ConvBnAct(256, 288, 3, padding=1), ConvBnAct(288, 320, 3, 2)),
        nn.MaxPool2d(3, 2),
    ])


def block35_branches() -> list[nn.Module]:
    return [
        ConvBnAct(320, 32, 1),
        _seq(ConvBnAct(320, 32, 1), ConvBnAct(32, 32, 3, padding=1)),
        _seq(ConvBnAct(320, 32, 1), ConvBnAct(32, 48, 3, padding=1), ConvBnAct(48, 64, 3, padding=1)),
    ]


def block17_branches() -> list[nn.Module]:
    return [
        ConvBnAct(1088, 192, 1),
        _seq(ConvBnAct(1088, 128, 1), ConvBnAct(128, 160, (1, 7), padding=(0, 3)),
             ConvBnAct(160, 192, (7, 1), padding=(3, 0))),
    ]


def block8_branches() -> list[nn.Module]:
    return [
        ConvBnAct(2080, 192, 1),
        _seq(ConvBnAct(2080, 192, 1), ConvBnAct(192, 224, (1, 3), padding=(0, 1)),
             ConvBnAct(224, 256, (3, 1), padding=(1, 0))),
    ]


class InceptionResidual(ResidualUnit, _Branches):
    """``act(x + scale * conv2d(concat(branches(x))))`` with SE on the residual branch.

    ``conv2d`` is the 1x1 projection (with bias, no batch norm) back to ``channels``.
    """

    def __init__(self, channels: int, branches: Sequence[nn.Module], scale: float, *, act: bool,
                 se: SEConfig | None, stage: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.add_branches(branches)
        width = sum(_out_channels(b) for b in branches)
        self.conv2d = nn.Conv2d(width, channels, 1)
        self.scale = scale
        self.shortcut = None
        self.init_residual(se=make_block_se(se, stage, channels, channels, width),
                           placement=se.placement if se is not None else "standard",
                           act=nn.ReLU() if act else None, drop_path=drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.concat(x)) * self.scale


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


_BLOCKS: tuple[tuple[int, Callable[[], list[nn.Module]], float, int], ...] = (
    (320, block35_branches, 0.17, 3),
    (1088, block17_branches, 0.10, 4),
    (2080, block8_branches, 0.20, 5),
)


def _residual_stage(n: int, channels: int, make: Callable[[], list[nn.Module]], scale: float, stage: int,
                    se: SEConfig | None, rates: Iterator[float]) -> CheckpointSequential:
    """``n`` residual blocks; the network's very last block (stage 5) has no ReLU and scale 1."""
    blocks = []
    for i in range(n):
        last = stage == 5 and i == n - 1
        blocks.append(InceptionResidual(channels, make(), 1.0 if last else scale, act=not last, se=se, stage=stage,
                                        drop_path=next(rates)))
    return CheckpointSequential(*blocks)


class InceptionResNetV2(SenetModel):
    """Inception-ResNet-v2, with or without SE in its residual blocks.

    Args:
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        blocks: residual blocks at 35x35, 17x17 and 8x8 (the released network: 10, 20, 10; the
            last 8x8 block has no ReLU and scale 1).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the residual blocks, rising linearly to this rate.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 3, 4, 5.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        blocks: Sequence[int] = (10, 20, 10),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"blocks must give 3 positive block counts (35x35, 17x17, 8x8), got {list(blocks)}")
        if se is not None:
            se.check_stages((3, 4, 5))
        self.stem = nn.Sequential(OrderedDict([
            ("conv2d_1a", ConvBnAct(in_chans, 32, 3, 2)),
            ("conv2d_2a", ConvBnAct(32, 32, 3)),
            ("conv2d_2b", ConvBnAct(32, 64, 3, padding=1)),
            ("maxpool_3a", nn.MaxPool2d(3, 2)),
            ("conv2d_3b", ConvBnAct(64, 80, 1)),
            ("conv2d_4a", ConvBnAct(80, 192, 3)),
            ("maxpool_5a", nn.MaxPool2d(3, 2)),
        ]))
        rates = iter(drop_path_rates(drop_path_rate, sum(blocks)))
        stages = [_residual_stage(n, channels, make, scale, stage, se, rates)
                  for n, (channels, make, scale, stage) in zip(blocks, _BLOCKS, strict=True)]
        # registered in the order of the forward pass (features_only runs the children in order)
        self.mixed_5b = mixed_5b()
        self.repeat = stages[0]
        self.mixed_6a = mixed_6a()
        self.repeat_1 = stages[1]
        self.mixed_7a = mixed_7a()
        self.repeat_2 = stages[2]
        self.conv2d_7b = ConvBnAct(2080, 1536, 1)
        self.min_input = MIN_INPUT
        self.feature_info = [feature("stem.conv2d_2b", 64, 2, 1), feature("stem.conv2d_4a", 192, 4, 2),
                             feature("repeat", 320, 8, 3), feature("repeat_1", 1088, 16, 4),
                             feature("conv2d_7b", 1536, 32, 5)]
        self.init_head(1536, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        x = self.mixed_5b(self.stem(x))
        x = self.mixed_6a(self.repeat(x))
        x = self.mixed_7a(self.repeat_1(x))
        return self.conv2d_7b(self.repeat_2(x))


_TIMM_STEM = ("conv2d_1a.", "conv2d_2a.", "conv2d_2b.", "conv2d_3b.", "conv2d_4a.")


def from_timm(state: Mapping[str, torch.Tensor], source: str = "checkpoint",
              blocks: Sequence[int] = (10, 20, 10)) -> Foreign | None:
    """timm's ``inception_resnet_v2`` state dict with senet's keys (``None`` if ``state`` is not one).

    The names are timm's (TF-slim's) except: the stem convolutions move under ``stem.``,
    timm's separate last block ``block8`` becomes ``repeat_2.{blocks[2] - 1}`` and the
    classifier ``classif`` becomes ``fc``.
    """
    if "conv2d_1a.conv.weight" not in state or not any(k.startswith("mixed_5b.") for k in state):
        return None
    renames = {p: "stem." + p for p in _TIMM_STEM}
    renames.update({"block8.": f"repeat_2.{blocks[2] - 1}.", "classif.": "fc."})
    return Foreign("timm", *rename_keys(state, prefix_rules(renames), source), describe="timm Inception-ResNet-v2 weights")


def _irv2(kwargs: dict[str, Any]) -> InceptionResNetV2:
    return InceptionResNetV2(**kwargs)


register_family("inception_resnet_v2", InceptionResNetV2, placements=RESIDUAL_PLACEMENTS, converters=(from_timm,))
_CFG = PretrainedCfg(input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.8975,
                     interpolation="bicubic", min_input_size=(3, MIN_INPUT, MIN_INPUT), first_conv="stem.conv2d_1a.conv")


@register_model(family="inception_resnet_v2", has_se=False, cfg=_CFG, released=Released(
    "inception_resnet_v2.tf_in1k", hf_hub_id="timm/", origin="TF-slim (Google), via timm"))
def inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    """Inception-ResNet-v2 (Table 2, 299x299): 55.8M params, 13.2 GFLOPs (paper: 11.75, see the module)."""
    return _irv2(kwargs)


@register_model(family="inception_resnet_v2", has_se=True, cfg=_CFG)
def se_inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    """SE-Inception-ResNet-v2 (Table 2): SE on the branch of each of the 40 residual blocks."""
    return _irv2(kwargs)

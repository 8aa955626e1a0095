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
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import SEConfig, make_block_se, residual_forward
from senet.models._common import RESIDUAL_PLACEMENTS, init_weights, se_config
from senet.models.registry import register_model

MIN_INPUT = 75
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


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


class Concat(nn.Module):
    """Parallel branches ``branch0``, ``branch1`` ... concatenated along channels."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], 1)


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


class InceptionResidual(nn.Module):
    """``act(x + scale * conv2d(concat(branches(x))))`` with SE on the residual branch.

    ``conv2d`` is the 1x1 projection (with bias, no batch norm) back to ``channels``.
    """

    def __init__(self, channels: int, branches: Sequence[nn.Module], scale: float, *, act: bool,
                 se: SEConfig | None, stage: int) -> None:
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)
        self.num_branches = len(branches)
        width = sum(_out_channels(b) for b in branches)
        self.conv2d = nn.Conv2d(width, channels, 1)
        self.scale = scale
        self.act = act
        self.placement = se.placement if se is not None else "standard"
        self.se = make_block_se(se, stage, channels, channels, width)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)
        return self.conv2d(out) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_forward(x, self._branch, None, self.se, self.placement, F.relu if self.act else None)


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


_BLOCKS: tuple[tuple[int, Callable[[], list[nn.Module]], float, int], ...] = (
    (320, block35_branches, 0.17, 3),
    (1088, block17_branches, 0.10, 4),
    (2080, block8_branches, 0.20, 5),
)


def _residual_stage(n: int, channels: int, make: Callable[[], list[nn.Module]], scale: float, stage: int,
                    se: SEConfig | None) -> nn.Sequential:
    """``n`` residual blocks; the network's very last block (stage 5) has no ReLU and scale 1."""
    blocks = []
    for i in range(n):
        last = stage == 5 and i == n - 1
        blocks.append(InceptionResidual(channels, make(), 1.0 if last else scale, act=not last, se=se, stage=stage))
    return nn.Sequential(*blocks)


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2, with or without SE in its residual blocks.

    Args:
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        blocks: residual blocks at 35x35, 17x17 and 8x8 (the released network: 10, 20, 10; the
            last 8x8 block has no ReLU and scale 1).
        drop_rate: dropout before the classifier.
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 3, 4, 5.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        blocks: Sequence[int] = (10, 20, 10),
        drop_rate: float = 0.0,
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
        self.mixed_5b = mixed_5b()
        self.repeat, self.repeat_1, self.repeat_2 = (
            _residual_stage(n, channels, make, scale, stage, se)
            for n, (channels, make, scale, stage) in zip(blocks, _BLOCKS, strict=True)
        )
        self.mixed_6a = mixed_6a()
        self.mixed_7a = mixed_7a()
        self.conv2d_7b = ConvBnAct(2080, 1536, 1)
        self.num_features = 1536
        self.drop_rate = drop_rate
        self.fc = nn.Linear(1536, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < MIN_INPUT:
            raise ValueError(f"Inception-ResNet-v2 needs inputs of at least {MIN_INPUT}x{MIN_INPUT}, got {h}x{w}")
        x = self.mixed_5b(self.stem(x))
        x = self.mixed_6a(self.repeat(x))
        x = self.mixed_7a(self.repeat_1(x))
        return self.conv2d_7b(self.repeat_2(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x.mean((2, 3)), self.drop_rate, self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_TIMM_STEM = ("conv2d_1a.", "conv2d_2a.", "conv2d_2b.", "conv2d_3b.", "conv2d_4a.")


def from_timm(state: Mapping[str, torch.Tensor], blocks: Sequence[int] = (10, 20, 10)) -> dict[str, torch.Tensor]:
    """timm's ``inception_resnet_v2`` state dict with senet's keys.

    The names are timm's (TF-slim's) except: the stem convolutions move under ``stem.``,
    timm's separate last block ``block8`` becomes ``repeat_2.{blocks[2] - 1}`` and the
    classifier ``classif`` becomes ``fc``.
    """
    out = {}
    for key, value in state.items():
        if key.startswith(_TIMM_STEM):
            key = "stem." + key
        elif key.startswith("block8."):
            key = f"repeat_2.{blocks[2] - 1}." + key[len("block8."):]
        elif key.startswith("classif."):
            key = "fc." + key[len("classif."):]
        out[key] = value
    return out


def _irv2(has_se: bool, kwargs: dict[str, Any]) -> InceptionResNetV2:
    se = se_config(kwargs, has_se=has_se, family="Inception-ResNet-v2", placements=RESIDUAL_PLACEMENTS)
    return InceptionResNetV2(se=se, **kwargs)


_REG = dict(input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD, min_input_size=MIN_INPUT)


@register_model(family="inception_resnet_v2", has_se=False, **_REG)
def inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    """Inception-ResNet-v2 (Table 2, 299x299): 55.8M params, 13.2 GFLOPs (paper: 11.75, see the module)."""
    return _irv2(False, kwargs)


@register_model(family="inception_resnet_v2", has_se=True, **_REG)
def se_inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    """SE-Inception-ResNet-v2 (Table 2): SE on the branch of each of the 40 residual blocks."""
    return _irv2(True, kwargs)

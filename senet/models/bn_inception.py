"""BN-Inception and SE-BN-Inception (Ioffe & Szegedy 2015; SE paper Table 2: 2.03 / 2.04 GFLOPs).

The network is the Caffe BN-Inception that the released SE-BN-Inception builds on (the layout of
Cadene's ``bninception`` port): a 7x7 and a 3x3 convolution with max pooling, ten Inception
modules (``3a``-``3c``, ``4a``-``4e``, ``5a``, ``5b``; ``3c`` and ``4e`` halve the resolution),
global average pooling and one FC layer. Every convolution has a bias and is followed by batch
norm and ReLU. Max pooling uses Caffe's ``ceil_mode``.

SE-Inception (paper Fig. 2, spec section 2): ``F_tr`` is a whole Inception module, so one SE
block scales each module's concatenated output. Only ``placement="standard"`` exists here.

Stages (see :mod:`senet.models._common`): a module belongs to the stage of its output, like the
strided first block of a ResNet stage: ``3a``, ``3b`` (28x28 at 224) are stage 3; ``3c``, which
halves the resolution, and ``4a``-``4d`` stage 4; ``4e``, ``5a``, ``5b`` stage 5.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import SEConfig
from senet.models._common import init_weights, se_config
from senet.models.registry import register_model


class ModuleSpec(NamedTuple):
    """One Inception module: output widths of its branches (0: branch absent)."""

    name: str
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    double_reduce: int
    double: int
    pool: str  # "avg" or "max"
    pool_proj: int
    stride: int


#: The ten modules of BN-Inception (Caffe prototxt; Ioffe & Szegedy 2015, Fig. 5).
MODULES = (
    ModuleSpec("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ModuleSpec("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ModuleSpec("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ModuleSpec("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ModuleSpec("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ModuleSpec("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ModuleSpec("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ModuleSpec("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ModuleSpec("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ModuleSpec("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


class ConvBnReLU(nn.Sequential):
    """Convolution (with bias, as in Caffe), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2)),
            ("bn", nn.BatchNorm2d(cout)),
            ("act", nn.ReLU(inplace=True)),
        ]))


class _Pool(nn.Module):
    """Pooling branch. Stride-2 max pooling (``ceil_mode``, no padding) is the Caffe one; at an
    odd input side, where Caffe's reduction modules cannot concatenate (the strided convolutions
    give one row more), one row and column of ``-inf`` are appended so that sizes agree. Even
    sides, such as every side of a 224x224 input, are unaffected."""

    def __init__(self, kind: str, stride: int) -> None:
        super().__init__()
        self.kind = kind
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            return F.avg_pool2d(x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
        if self.stride == 1:
            return F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), value=float("-inf"))
        return F.max_pool2d(x, 3, 2, ceil_mode=True)


class InceptionModule(nn.Module):
    """Parallel 1x1, 3x3 and double-3x3 convolutions and a pooling branch, concatenated; then SE."""

    def __init__(self, cin: int, spec: ModuleSpec, se: SEConfig | None) -> None:
        super().__init__()
        s = spec.stride
        self.branch1x1 = ConvBnReLU(cin, spec.c1x1, 1) if spec.c1x1 else None
        self.branch3x3 = nn.Sequential(
            ConvBnReLU(cin, spec.c3x3_reduce, 1), ConvBnReLU(spec.c3x3_reduce, spec.c3x3, 3, s)
        )
        self.branch_double = nn.Sequential(
            ConvBnReLU(cin, spec.double_reduce, 1),
            ConvBnReLU(spec.double_reduce, spec.double, 3),
            ConvBnReLU(spec.double, spec.double, 3, s),
        )
        self.pool = _Pool(spec.pool, s)
        self.pool_proj = ConvBnReLU(cin, spec.pool_proj, 1) if spec.pool_proj else None
        self.out_channels = spec.c1x1 + spec.c3x3 + spec.double + (spec.pool_proj or cin)
        self.se = se.make(self.out_channels) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [] if self.branch1x1 is None else [self.branch1x1(x)]
        outs += [self.branch3x3(x), self.branch_double(x)]
        pooled = self.pool(x)
        outs.append(pooled if self.pool_proj is None else self.pool_proj(pooled))
        out = torch.cat(outs, 1)
        return out if self.se is None else self.se(out)


class BNInception(nn.Module):
    """BN-Inception, with or without SE on each Inception module's output.

    Args:
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 3, 4, 5.
    """

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, se: SEConfig | None = None
    ) -> None:
        super().__init__()
        if se is not None:
            se.check_stages((3, 4, 5))
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", ConvBnReLU(in_chans, 64, 7, 2)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2_reduce", ConvBnReLU(64, 64, 1)),
            ("conv2", ConvBnReLU(64, 192, 3)),
            ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ]))
        modules = []
        channels = 192
        for spec in MODULES:
            stage = int(spec.name[0]) + (spec.stride == 2)  # the stage of the module's output
            module = InceptionModule(channels, spec, se if se is not None and se.in_stage(stage) else None)
            modules.append((spec.name, module))
            channels = module.out_channels
        self.inception = nn.Sequential(OrderedDict(modules))
        self.num_features = channels
        self.drop_rate = drop_rate
        self.fc = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inception(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x.mean((2, 3)), self.drop_rate, self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _bn_inception(has_se: bool, kwargs: dict[str, Any]) -> BNInception:
    se = se_config(kwargs, has_se=has_se, family="BN-Inception (SE scales each Inception module's output)")
    return BNInception(se=se, **kwargs)


@register_model(family="bn_inception", has_se=False)
def bn_inception(**kwargs: Any) -> BNInception:
    """BN-Inception (Table 2): 2.03 GFLOPs."""
    return _bn_inception(False, kwargs)


@register_model(family="bn_inception", has_se=True)
def se_bn_inception(**kwargs: Any) -> BNInception:
    """SE-BN-Inception (Table 2): an SE block on each of the ten Inception modules; 2.04 GFLOPs."""
    return _bn_inception(True, kwargs)

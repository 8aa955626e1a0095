"""BN-Inception and SE-BN-Inception (Ioffe & Szegedy 2015; SE paper Table 2: 2.03 / 2.04 GFLOPs).

The network is the Caffe BN-Inception that the released SE-BN-Inception builds on (the layout of
Cadene's ``bninception`` port): a 7x7 and a 3x3 convolution with max pooling, ten Inception
modules (``3a``-``3c``, ``4a``-``4e``, ``5a``, ``5b``; ``3c`` and ``4e`` halve the resolution),
global average pooling and one FC layer. Every convolution is followed by batch norm and ReLU and
has no bias, as in the released definition (``bias_term: false``; a bias before batch norm is
absorbed by it): SE-BN-Inception has 11,931,622 parameters at 1,000 classes. Weight files with
such biases (older senet files) still load: each bias is folded into its batch norm's running
mean, which computes the same function. Max pooling rounds as Caffe's (``ceil_mode``).

SE-Inception (paper Fig. 2, spec section 2): ``F_tr`` is a whole Inception module, so one SE
block scales each module's concatenated output. Only ``placement="standard"`` exists here.

Stages (see :mod:`senet.models._common`): a module belongs to the stage of its output, like the
strided first block of a ResNet stage: ``3a``, ``3b`` (28x28 at 224) are stage 3; ``3c``, which
halves the resolution, and ``4a``-``4d`` stage 4; ``4e``, ``5a``, ``5b`` stage 5.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from senet.layers import CheckpointSequential, SEConfig
from senet.models._base import SenetModel, feature
from senet.models._common import init_weights
from senet.models.registry import register_family, register_model
from senet.preprocess import PretrainedCfg


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
    """Convolution (no bias: batch norm follows), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)),
            ("bn", nn.BatchNorm2d(cout)),
            ("act", nn.ReLU(inplace=True)),
        ]))


def fold_conv_biases(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each ``*.conv.bias`` folded into the following ``*.bn.running_mean``:
    ``BN(conv(x) + b)`` is ``BN'(conv(x))`` with the running mean lowered by ``b`` (and in training
    batch statistics absorb ``b`` anyway), so files of the biased layout load exactly."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".conv.bias")]:
        mean = key[: -len("conv.bias")] + "bn.running_mean"
        if mean in out:
            out[mean] = out[mean] - out.pop(key).to(out[mean].dtype)
    return out


class CeilMaxPool(nn.Module):
    """3x3 stride-2 max pooling of Caffe's rounding, written as ``-inf`` padding at the bottom and
    right (``pad`` rows and columns) and floor rounding: the same outputs at every input size,
    without the size-dependent rounding that tracers with symbolic sizes cannot follow.

    ``pad=1`` is Caffe's ``ceil_mode`` pooling; ``pad=2`` also gives odd sides the extra row and
    column that the strided convolutions of a reduction module produce (``ceil(n / 2)`` outputs),
    where Caffe's network could not concatenate; even sides, such as those of a 224x224 input,
    get exactly Caffe's pooling either way.
    """

    def __init__(self, pad: int = 1) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, self.pad, 0, self.pad), value=float("-inf")), 3, 2)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class _Pool(nn.Module):
    """Pooling branch: 3x3 average or max pooling, stride 1 (padding 1) or 2 (:class:`CeilMaxPool`)."""

    def __init__(self, kind: str, stride: int) -> None:
        super().__init__()
        self.kind = kind
        self.stride = stride
        self.reduce = CeilMaxPool(pad=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
        if self.stride == 1:
            return F.max_pool2d(x, 3, 1, 1)
        return self.reduce(x)


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


class BNInception(SenetModel):
    """BN-Inception, with or without SE on each Inception module's output.

    Args:
        num_classes: classifier outputs (0: :meth:`forward` returns the pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"`` or ``""``.
        se: SE settings, ``None`` for no SE. ``se.stages`` picks among stages 3, 4, 5.
    """

    def __init__(
        self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg",
        se: SEConfig | None = None,
    ) -> None:
        super().__init__()
        if se is not None:
            se.check_stages((3, 4, 5))
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", ConvBnReLU(in_chans, 64, 7, 2)),
            ("pool1", CeilMaxPool()),
            ("conv2_reduce", ConvBnReLU(64, 64, 1)),
            ("conv2", ConvBnReLU(64, 192, 3)),
            ("pool2", CeilMaxPool()),
        ]))
        self.feature_info = [feature("stem.conv1", 64, 2, 1), feature("stem.conv2", 192, 4, 2)]
        modules = []
        channels = 192
        for i, spec in enumerate(MODULES):
            stage = int(spec.name[0]) + (spec.stride == 2)  # the stage of the module's output
            module = InceptionModule(channels, spec, se if se is not None and se.in_stage(stage) else None)
            modules.append((spec.name, module))
            channels = module.out_channels
            last_of_stage = i + 1 == len(MODULES) or MODULES[i + 1].stride == 2
            if last_of_stage:
                self.feature_info.append(feature(f"inception.{spec.name}", channels, 2**stage, stage))
        self.inception = CheckpointSequential(OrderedDict(modules))
        self.init_head(channels, num_classes, global_pool=global_pool, drop_rate=drop_rate, in_chans=in_chans)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inception(self.stem(x))


def _bn_inception(kwargs: dict[str, Any]) -> BNInception:
    return BNInception(**kwargs)


register_family("bn_inception", BNInception, upgrade=fold_conv_biases)
_CFG = PretrainedCfg(first_conv="stem.conv1.conv")


@register_model(family="bn_inception", has_se=False, cfg=_CFG)
def bn_inception(**kwargs: Any) -> BNInception:
    """BN-Inception (Table 2): 2.03 GFLOPs."""
    return _bn_inception(kwargs)


@register_model(family="bn_inception", has_se=True, cfg=_CFG)
def se_bn_inception(**kwargs: Any) -> BNInception:
    """SE-BN-Inception (Table 2): an SE block on each of the ten Inception modules; 2.04 GFLOPs."""
    return _bn_inception(kwargs)

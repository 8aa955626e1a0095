"""Helpers shared by the VGG, BN-Inception, Inception-ResNet-v2, MobileNet and ShuffleNet families.

Stage numbers in these families follow one rule, the paper's ResNet numbering (Table 1,
Table 13: ``conv2_x`` at 56x56 is stage 2): **stage ``s`` holds the units whose output is
``1/2**s`` of the input side**. :func:`senet.add_se` numbers stages the same way.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from senet.layers import PLACEMENTS

RESIDUAL_PLACEMENTS = tuple(p for p in PLACEMENTS if p != "conv3x3")


def init_conv_bn(model: nn.Module) -> None:
    """He initialisation (He et al. 2015, fan-out) for every convolution, SE layers included;
    zero conv biases; BN at identity. The part every senet family shares."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_weights(model: nn.Module, fc_convs: Iterable[nn.Conv2d] = ()) -> None:
    """:func:`init_conv_bn`, then ``N(0, 0.01)`` for linear layers and for ``fc_convs`` (fully
    connected layers stored as convolutions): the paper's ImageNet initialisation (section 5.1)."""
    init_conv_bn(model)
    fc = {id(m) for m in fc_convs}
    for m in model.modules():
        if isinstance(m, nn.Linear) or id(m) in fc:
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

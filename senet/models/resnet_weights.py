"""Checkpoints of other projects for the ResNet family, and their layouts.

Two sources are understood (each a :data:`~senet.weights.keymap.Converter`):

* timm's ``ResNet`` class (``resnet*``, ``resnext*_32x4d``, ``seresnet*``, ``seresnext*_32x4d``,
  ``senet154``): ``conv1`` / ``bn1`` stem (``conv1.0/1/3/4/6`` + ``bn1`` for the deep stem),
  ``layerN.M.se.fc1``, classifier ``fc``;
* ``"legacy"``: Cadene's ``pretrainedmodels`` port of the released Caffe SENets and timm's
  ``legacy_*`` copies of it: ``layer0.*`` stem, ``layerN.M.se_module.*``, ``last_linear``.

The shapes of a checkpoint do not tell how it was trained to run; the source does
(:func:`source_layout`): timm strides the 3x3 convolution and pads its stem pooling; the
released SENets stride the first 1x1 of SE-ResNet bottlenecks (not of SE-ResNeXt ones), pool
with ``ceil_mode`` and no padding, and their SE-ResNet-18/34 end the residual branch with a
ReLU. timm rounds SE widths to multiples of 8 (SE-ResNet-18's first stage: 8, not 64/16 = 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from senet.weights.keymap import Foreign, prefix_rules, rename_keys

LAYOUT_KEYS = ("stride_in_1x1", "stem_pool", "branch_act")

_TIMM_DEEP_STEM = {"conv1.0.": "stem.conv1.", "conv1.1.": "stem.bn1.", "conv1.3.": "stem.conv2.",
                   "conv1.4.": "stem.bn2.", "conv1.6.": "stem.conv3.", "bn1.": "stem.bn3."}
_TIMM_STEM = {"conv1.": "stem.conv1.", "bn1.": "stem.bn1."}
_LEGACY = [*prefix_rules({"layer0.": "stem.", "last_linear.": "fc."}), (r"(.*)\.se_module\.", r"\1.se.")]
_TO_LEGACY = [*prefix_rules({"stem.": "layer0.", "fc.": "last_linear."}), (r"(.*)\.se\.", r"\1.se_module.")]


@dataclass(frozen=True)
class Architecture:
    """What a ResNet-family state dict (senet keys) says about its network."""

    stem: str
    block: str
    layers: tuple[int, ...]
    groups: int
    has_se: bool
    num_classes: int

    def __str__(self) -> str:
        return (f"{self.block} blocks {self.layers}, groups {self.groups}, {self.stem} stem, "
                f"{'with' if self.has_se else 'without'} SE, {self.num_classes} classes")


def describe(state: Mapping[str, torch.Tensor]) -> Architecture | None:
    """Stem, block type, blocks per stage, cardinality and SE presence of a ResNet-family state
    dict in senet's keys (``None`` if it is not one)."""
    if "layer1.0.conv1.weight" not in state or "layer1.0.conv2.weight" not in state:
        return None
    layers = []
    for i in range(1, 5):
        n = 0
        while f"layer{i}.{n}.conv1.weight" in state:
            n += 1
        layers.append(n)
    conv1, conv2 = state["layer1.0.conv1.weight"], state["layer1.0.conv2.weight"]
    groups = max(1, conv1.shape[0] // conv2.shape[1]) if conv2.ndim == 4 else 1
    fc = state.get("fc.weight")
    return Architecture(
        stem="deep" if "stem.conv3.weight" in state else "7x7",
        block="bottleneck" if "layer1.0.conv3.weight" in state else "basic",
        layers=tuple(layers),
        groups=groups,
        has_se=any(".se." in k for k in state),
        num_classes=int(fc.shape[0]) if fc is not None else 0,
    )


def source_layout(source: str, arch: Architecture) -> dict[str, Any]:
    """Model keywords that make senet compute what ``source`` computes with these weights."""
    bottleneck = arch.block == "bottleneck"
    if source == "timm":
        layout: dict[str, Any] = {"stem_pool": "torch", "branch_act": False}
        if bottleneck:
            layout["stride_in_1x1"] = False
        if arch.has_se:
            layout["se_divisor"] = 8
        return layout
    if source == "legacy":
        layout = {"stem_pool": "caffe", "branch_act": not bottleneck}
        if bottleneck:  # SEResNetBottleneck strides conv1; SEResNeXtBottleneck / SEBottleneck conv2
            layout["stride_in_1x1"] = arch.groups == 1
        return layout
    raise ValueError(f"unknown ResNet checkpoint source {source!r}; known: 'timm', 'legacy'")


def _foreign(source: str, state: dict[str, torch.Tensor], origin: dict[str, str]) -> Foreign | None:
    arch = describe(state)
    if arch is None:
        return None
    return Foreign(source, state, origin, source_layout(source, arch), str(arch))


def from_legacy(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Foreign | None:
    """Cadene's / timm's ``legacy_*`` SENet keys -> senet's (``None`` if they are not such keys)."""
    if not any(k.startswith(("layer0.", "last_linear.")) or ".se_module." in k for k in state):
        return None
    return _foreign("legacy", *rename_keys(state, _LEGACY, source))


def to_legacy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """senet's keys -> timm's ``legacy_*`` (Cadene's) keys: the inverse of :func:`from_legacy`."""
    return rename_keys(state, _TO_LEGACY)[0]


def to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """senet's keys -> timm's ``ResNet`` keys: the inverse of :func:`from_timm`."""
    stem = _TIMM_DEEP_STEM if "stem.conv3.weight" in state else _TIMM_STEM
    return rename_keys(state, prefix_rules({new: old for old, new in stem.items()}))[0]


def from_timm(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Foreign | None:
    """timm's ``ResNet`` keys -> senet's (``None`` if they are not such keys)."""
    if not (("conv1.weight" in state or "conv1.0.weight" in state) and any(k.startswith("layer1.") for k in state)):
        return None
    stem = _TIMM_DEEP_STEM if "conv1.0.weight" in state else _TIMM_STEM
    return _foreign("timm", *rename_keys(state, prefix_rules(stem), source))

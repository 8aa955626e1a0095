"""Which project a state dict comes from, how its keys map to senet's, and its layout.

Three sources are understood:

* ``"senet"``: this package's own names (``stem.conv1``, ``layer1.0.se.fc1`` ...), with the
  model name and keywords in the safetensors metadata when written by :func:`save_weights`.
* ``"timm"``: timm's ``ResNet`` class (``resnet*``, ``resnext*_32x4d``, ``seresnet*``,
  ``seresnext*_32x4d``, ``senet154``): ``conv1`` / ``bn1`` stem (``conv1.0/1/3/4/6`` + ``bn1``
  for the deep stem), ``layerN.M.se.fc1``, classifier ``fc``.
* ``"legacy"``: Cadene's ``pretrainedmodels`` port of the released Caffe SENets and timm's
  ``legacy_*`` copies of it: ``layer0.*`` stem, ``layerN.M.se_module.*``, ``last_linear``.

The shapes of a checkpoint do not tell how it was trained to run; the source does
(:func:`weights_layout`): timm strides the 3x3 convolution and pads its stem pooling; the
released SENets stride the first 1x1 of SE-ResNet bottlenecks (not of SE-ResNeXt ones), pool
with ``ceil_mode`` and no padding, and their SE-ResNet-18/34 end the residual branch with a
ReLU. timm rounds SE widths to multiples of 8 (SE-ResNet-18's first stage: 8, not 64/16 = 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from senet.errors import WeightsError

FORMATS = ("senet", "timm", "legacy")

#: Model keywords that describe how weights compute, not just their shapes.
LAYOUT_KEYS = ("stride_in_1x1", "stem_pool", "branch_act")

_TIMM_DEEP_STEM = {"0": "stem.conv1", "1": "stem.bn1", "3": "stem.conv2", "4": "stem.bn2", "6": "stem.conv3"}


def is_batch_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: training bookkeeping that old checkpoints lack."""
    return key.endswith("num_batches_tracked")


def detect_format(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str = "checkpoint") -> str:
    """``"senet"``, ``"timm"`` or ``"legacy"`` for a state dict (and its safetensors metadata)."""
    if metadata.get("format") == "senet":
        return "senet"
    keys = list(state)
    if any(k.startswith("stem.") for k in keys):
        return "senet"
    if any(k.startswith(("layer0.", "last_linear.")) or ".se_module." in k for k in keys):
        return "legacy"
    if ("conv1.weight" in state or "conv1.0.weight" in state) and any(k.startswith("layer1.") for k in keys):
        return "timm"
    shown = ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "")
    raise WeightsError(
        f"{source}: unrecognised checkpoint; expected senet, timm ResNet-family or Cadene/timm-legacy "
        f"SENet keys, found: {shown or 'no keys'}"
    )


def _timm_key(key: str, deep: bool) -> str:
    head, _, rest = key.partition(".")
    if head == "conv1":
        if not deep:
            return f"stem.conv1.{rest}"
        index, _, tail = rest.partition(".")
        return f"{_TIMM_DEEP_STEM[index]}.{tail}" if index in _TIMM_DEEP_STEM else key
    if head == "bn1":
        return f"stem.{'bn3' if deep else 'bn1'}.{rest}"
    return key


def _legacy_key(key: str) -> str:
    if key.startswith("layer0."):
        return "stem." + key[len("layer0."):]
    if key.startswith("last_linear."):
        return "fc." + key[len("last_linear."):]
    return key.replace(".se_module.", ".se.")


def to_senet_keys(
    state: Mapping[str, torch.Tensor], fmt: str, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` renamed to senet's keys, and a map ``senet key -> key in the file``.

    Keys with no senet counterpart keep their name, so that they are reported as unexpected.
    """
    if fmt == "senet":
        rename = lambda k: k  # noqa: E731
    elif fmt == "timm":
        deep = "conv1.0.weight" in state
        rename = lambda k: _timm_key(k, deep)  # noqa: E731
    elif fmt == "legacy":
        rename = _legacy_key
    else:
        raise ValueError(f"unknown weight format {fmt!r}; allowed: {', '.join(FORMATS)}")
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = rename(key)
        if new in out:
            raise WeightsError(f"{source}: keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new] = value
        origin[new] = key
    return out, origin


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


def describe(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Architecture:
    """Stem, block type, blocks per stage, cardinality and SE presence of a ResNet-family state dict."""
    if "layer1.0.conv1.weight" not in state or "layer1.0.conv2.weight" not in state:
        raise WeightsError(f"{source}: not a ResNet-family checkpoint (no layer1.0.conv1/conv2 weights)")
    layers = []
    for i in range(1, 5):
        n = 0
        while f"layer{i}.{n}.conv1.weight" in state:
            n += 1
        layers.append(n)
    bottleneck = "layer1.0.conv3.weight" in state
    conv1, conv2 = state["layer1.0.conv1.weight"], state["layer1.0.conv2.weight"]
    groups = max(1, conv1.shape[0] // conv2.shape[1]) if conv2.ndim == 4 else 1
    fc = state.get("fc.weight")
    return Architecture(
        stem="deep" if "stem.conv3.weight" in state else "7x7",
        block="bottleneck" if bottleneck else "basic",
        layers=tuple(layers),
        groups=groups,
        has_se=any(".se." in k for k in state),
        num_classes=int(fc.shape[0]) if fc is not None else 0,
    )


def weights_layout(fmt: str, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, Any]:
    """Model keywords that make senet compute what the source project computes with ``state``.

    ``state`` has senet keys (see :func:`to_senet_keys`). For ``"senet"`` files the layout is
    in their metadata instead, and this returns ``{}``.
    """
    if fmt == "senet":
        return {}
    arch = describe(state, source)
    bottleneck = arch.block == "bottleneck"
    if fmt == "timm":
        layout: dict[str, Any] = {"stem_pool": "torch", "branch_act": False}
        if bottleneck:
            layout["stride_in_1x1"] = False
        if arch.has_se:
            layout["se_divisor"] = 8
        return layout
    if fmt == "legacy":
        layout = {"stem_pool": "caffe", "branch_act": not bottleneck}
        if bottleneck:  # SEResNetBottleneck strides conv1; SEResNeXtBottleneck / SEBottleneck conv2
            layout["stride_in_1x1"] = arch.groups == 1
        return layout
    raise ValueError(f"unknown weight format {fmt!r}; allowed: {', '.join(FORMATS)}")


def model_layout(model: nn.Module) -> dict[str, Any]:
    """The :data:`LAYOUT_KEYS` an existing senet ResNet-family model runs with (``{}`` for others)."""
    from senet.models.resnet import Bottleneck, ResNet

    if not isinstance(model, ResNet):
        return {}
    pool = model.stem.pool
    padding = pool.padding if isinstance(pool.padding, int) else pool.padding[0]
    layout: dict[str, Any] = {
        "stem_pool": "caffe" if pool.ceil_mode and padding == 0 else "torch",
        "branch_act": any(getattr(b, "branch_act", False) for stage in model.stages for b in stage),
    }
    first = model.layer2[0]
    if isinstance(first, Bottleneck):
        layout["stride_in_1x1"] = first.conv1.stride[0] != 1
    return layout


def same_value(a: Any, b: Any) -> bool:
    """Equality of keyword values as stored in JSON (a tuple equals the list it is saved as)."""
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except TypeError:
        return a == b

"""The ResNet family's weights: checkpoints of other projects and their layouts, the released
weights of each model (:data:`RELEASED`) and timm's names for the networks (registered here).

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
from torch import nn

from senet.models.registry import Released, register_alias
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


def model_layout(model: nn.Module) -> dict[str, Any]:
    """The layout keywords (``stem_pool``, ``branch_act``, ``stride_in_1x1``) the ResNet-family
    ``model`` runs with (the family's ``layout_of``)."""
    pool = model.maxpool
    padding = pool.padding if isinstance(pool.padding, int) else pool.padding[0]
    layout: dict[str, Any] = {
        "stem_pool": "caffe" if pool.ceil_mode and padding == 0 else "torch",
        "branch_act": any(getattr(b, "branch_act", False) for b in model.modules()),
    }
    first = model.layer2[0]
    if hasattr(first, "conv3"):  # a bottleneck
        layout["stride_in_1x1"] = first.conv1.stride[0] != 1
    return layout


_TV_URL = "https://download.pytorch.org/models/"
_TIMM_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_RSB_URL = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-rsb-weights/"
_GLUON_URL = "https://github.com/rwightman/pytorch-pretrained-gluonresnet/releases/download/v0.1/"
_BICUBIC = {"interpolation": "bicubic"}
_TIMM_TRAINED = "timm (timm layout: stride on the 3x3, SE widths rounded to 8)"


def _tv(arch: str, file: str) -> Released:
    return Released(f"{arch}.tv_in1k", hf_hub_id="timm/", url=_TV_URL + file,
                    origin="torchvision (timm layout: stride on the 3x3)")


def _legacy(arch: str, file: str, **cfg: Any) -> Released:
    """The authors' released weights: timm records no hub repo for them, only its release URL."""
    return Released(f"legacy_{arch}.in1k", url=_TIMM_URL + file, cfg=cfg,
                    origin="the authors' released Caffe SENets via Cadene's port (timm legacy_*)")


def _timm(name: str, url: str, origin: str = _TIMM_TRAINED, **cfg: Any) -> Released:
    return Released(name, hf_hub_id="timm/", url=url, cfg={**_BICUBIC, **cfg}, origin=origin)


#: timm's names -> the released weights of each (timm's tags, its default first)
_LEGACY_WEIGHTS = {
    "seresnet18": _legacy("seresnet18", "v0.1-weights/seresnet18-4bb0ce65.pth", **_BICUBIC),
    "seresnet34": _legacy("seresnet34", "v0.1-weights/seresnet34-a4004e63.pth"),
    "seresnet50": _legacy("seresnet50", "v0.1-cadene/se_resnet50-ce0d4300.pth"),
    "seresnet101": _legacy("seresnet101", "v0.1-cadene/se_resnet101-7e38fcc6.pth"),
    "seresnet152": _legacy("seresnet152", "v0.1-cadene/se_resnet152-d17c99b7.pth"),
    "seresnext26_32x4d": _legacy("seresnext26_32x4d", "v0.1-weights/seresnext26_32x4d-65ebdb501.pth", **_BICUBIC),
    "seresnext50_32x4d": _legacy("seresnext50_32x4d", "v0.1-weights/legacy_se_resnext50_32x4d-f3651bad.pth"),
    "seresnext101_32x4d": _legacy("seresnext101_32x4d", "v0.1-weights/legacy_se_resnext101_32x4d-37725eac.pth"),
    "senet154": _legacy("senet154", "v0.1-weights/legacy_senet154-e9eb9fe6.pth"),
}
_RSB_CFG = {"crop_pct": 0.95, "test_input_size": (3, 288, 288), "test_crop_pct": 1.0}
_GLUON_SENET154 = _timm("senet154.gluon_in1k", _GLUON_URL + "gluon_senet154-70a1a3c0.pth", origin="GluonCV (timm layout)")
_TIMM_SE_WEIGHTS = {
    "seresnet50": (
        _timm("seresnet50.a1_in1k", _RSB_URL + "seresnet50_a1_0-ffa00869.pth", **_RSB_CFG),
        _timm("seresnet50.a2_in1k", _RSB_URL + "seresnet50_a2_0-850de0d9.pth", **_RSB_CFG),
        _timm("seresnet50.a3_in1k", _RSB_URL + "seresnet50_a3_0-317ecd56.pth", crop_pct=0.95, input_size=(3, 160, 160),
              test_input_size=(3, 224, 224), test_crop_pct=0.95),
        _timm("seresnet50.ra2_in1k", _TIMM_URL + "v0.1-weights/seresnet50_ra_224-8efdb4bb.pth",
              test_input_size=(3, 288, 288), test_crop_pct=0.95),
    ),
    "seresnext50_32x4d": (
        _timm("seresnext50_32x4d.racm_in1k", _TIMM_URL + "v0.1-weights/seresnext50_32x4d_racm-a304a460.pth",
              test_input_size=(3, 288, 288), test_crop_pct=0.95),
        _timm("seresnext50_32x4d.gluon_in1k", _GLUON_URL + "gluon_seresnext50_32x4d-90cf2d6e.pth",
              origin="GluonCV (timm layout)"),
    ),
    "seresnext101_32x4d": (
        _timm("seresnext101_32x4d.gluon_in1k", _GLUON_URL + "gluon_seresnext101_32x4d-cf52900d.pth",
              origin="GluonCV (timm layout)"),
    ),
}

#: senet's models -> their released weights (the default, ``pretrained=True``, first)
RELEASED: dict[str, Released | tuple[Released, ...]] = {
    **{name: _tv(name, file) for name, file in (
        ("resnet18", "resnet18-f37072fd.pth"), ("resnet34", "resnet34-b627a593.pth"),
        ("resnet50", "resnet50-0676ba61.pth"), ("resnet101", "resnet101-63fe2227.pth"),
        ("resnet152", "resnet152-394f9c45.pth"), ("resnext50_32x4d", "resnext50_32x4d-7cdf4587.pth"))},
    "resnext101_32x4d": _timm("resnext101_32x4d.gluon_in1k", _GLUON_URL + "gluon_resnext101_32x4d-b253c8c4.pth",
                              origin="GluonCV (timm layout: stride on the 3x3)"),
    **{name.replace("seres", "se_res"): w for name, w in _LEGACY_WEIGHTS.items() if name != "senet154"},
    "senet154": (_LEGACY_WEIGHTS["senet154"], _GLUON_SENET154),
}


def _register_timm_names() -> None:
    """timm's names for these networks, building the layout timm builds (``legacy_*``: the
    released Caffe layout), with the weights timm has under each. timm's ``resnet*``,
    ``resnext*`` and ``senet154`` names are senet's own names too; they keep senet's (the
    paper's) layout."""
    basic = Architecture("7x7", "basic", (2, 2, 2, 2), 1, True, 1000)
    bottleneck = Architecture("7x7", "bottleneck", (3, 4, 6, 3), 1, True, 1000)
    grouped = Architecture("7x7", "bottleneck", (3, 4, 6, 3), 32, True, 1000)

    def both(timm_name: str, senet_name: str, arch: Architecture, timm_style: bool = True) -> None:
        if timm_style:
            register_alias(timm_name, senet_name, source_layout("timm", arch),
                           released=_TIMM_SE_WEIGHTS.get(timm_name), keys="timm")
        register_alias(f"legacy_{timm_name}", senet_name, source_layout("legacy", arch),
                       released=_LEGACY_WEIGHTS[timm_name], keys="legacy")

    for depth in (18, 34, 50, 101, 152):
        both(f"seresnet{depth}", f"se_resnet{depth}", basic if depth < 50 else bottleneck)
    for depth in (26, 50, 101):
        both(f"seresnext{depth}_32x4d", f"se_resnext{depth}_32x4d", grouped, timm_style=depth != 26)
    register_alias("legacy_senet154", "senet154", source_layout("legacy", grouped),
                   released=_LEGACY_WEIGHTS["senet154"], keys="legacy")


_register_timm_names()

"""A senet model as a detection trunk: frozen batch normalisation, frozen early stages, an FPN
over its stages (paper section 5.3), as torchvision's ``resnet_fpn_backbone`` /
``_resnet_fpn_extractor`` build theirs, for any model with ``feature_info``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from senet.errors import WeightsUnavailable
from senet.models import FeatureNet, create_model, module_stages
from senet.models import Pretrained

#: torchvision's default for a pretrained trunk: the last three stages train (ResNet: layer2-4)
DEFAULT_TRAINABLE = 3


def _frozen_copy(bn: nn.modules.batchnorm._BatchNorm, name: str) -> FrozenBatchNorm2d:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{name}: a BatchNorm without running statistics (track_running_stats=False) "
                         "cannot be frozen")
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen.to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace, in place and under the same names, every ``BatchNorm2d`` (and ``SyncBatchNorm``)
    of ``module`` with torchvision's ``FrozenBatchNorm2d`` holding its statistics and affine
    parameters as buffers, so no optimizer step or train mode changes them (what torchvision's
    detection trunks get from ``norm_layer=FrozenBatchNorm2d``).

    Module paths are kept, so ``feature_info`` and :func:`~senet.models.module_stages` still
    name the same modules and a state dict (less ``num_batches_tracked``) loads either way.
    Returns ``module``, or the frozen layer when ``module`` is itself a batch norm.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _frozen_copy(module, type(module).__name__)
    done: dict[int, FrozenBatchNorm2d] = {}  # a layer shared by two parents stays shared
    for name, child in list(module.named_modules(remove_duplicate=False)):
        if not name or not isinstance(child, nn.modules.batchnorm._BatchNorm):
            continue
        if not isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            raise ValueError(f"{name}: {type(child).__name__} is not a 2d batch norm; FrozenBatchNorm2d "
                             "cannot replace it")
        parent, _, attr = name.rpartition(".")
        if id(child) not in done:
            done[id(child)] = _frozen_copy(child, name)
        module.get_submodule(parent).register_module(attr, done[id(child)])
    return module


def _stage_numbers(model: nn.Module) -> list[int]:
    """The paper stages of ``model`` that hold parameters (VGG's ``pool5`` ends a stage of its own
    and holds none: counting it would make ``trainable_layers=1`` train nothing)."""
    if not getattr(model, "feature_info", None):
        raise ValueError(f"{type(model).__name__} has no feature_info: a detection trunk needs a senet model")
    return sorted({stage for path, stage in module_stages(model).items()
                   if next(model.get_submodule(path).parameters(recurse=False), None) is not None})


def _check_trainable(model: nn.Module, trainable_layers: int) -> None:
    stages = _stage_numbers(model)
    n = len(stages)
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= n:
        ends = ", ".join(f"{e['stage']}: {e['module']}" for e in model.feature_info)
        raise ValueError(f"trainable_layers must be an integer in [0, {n}] (the number of stages trained, "
                         f"counted from the last; {n}: all), got {trainable_layers!r}; the stages of "
                         f"{type(model).__name__} end at {ends}")


def freeze_stages(model: nn.Module, trainable_layers: int) -> list[int]:
    """``requires_grad=False`` for the parameters of every stage of ``model`` but the last
    ``trainable_layers`` (paper stages from ``feature_info`` that hold parameters, the stem
    counting as the first),
    as torchvision's ``_resnet_fpn_extractor`` does with ``layer4, layer3, layer2, layer1,
    conv1``: on a ResNet, 0-5 mean the same as there. Returns the frozen stage numbers."""
    _check_trainable(model, trainable_layers)
    stages = _stage_numbers(model)
    frozen = set(stages[: len(stages) - trainable_layers])
    for path, stage in module_stages(model).items():  # module_stages: every module of every stage
        if stage in frozen:
            for p in model.get_submodule(path).parameters(recurse=False):
                p.requires_grad_(False)
    return sorted(frozen)


def default_out_indices(feature_info: Sequence[dict[str, Any]], min_reduction: int = 4) -> list[int]:
    """The stages an FPN taps by default: those at stride ``min_reduction`` (4: FPN's P2, as
    torchvision's Faster R-CNN; 8: P3, as its RetinaNet) or coarser."""
    picked = [i for i, e in enumerate(feature_info) if e["reduction"] >= min_reduction]
    if not picked:
        raise ValueError(f"no stage at stride {min_reduction} or coarser (strides: "
                         f"{[e['reduction'] for e in feature_info]}); pass out_indices")
    return picked


def _extra_levels(extra_blocks: ExtraFPNBlock) -> list[tuple[str, int]] | None:
    """Names and strides (relative to the last tapped stage) of the levels torchvision's extra
    FPN blocks add; ``None`` for another block."""
    if isinstance(extra_blocks, LastLevelMaxPool):
        return [("pool", 2)]
    if isinstance(extra_blocks, LastLevelP6P7):
        return [("p6", 2), ("p7", 4)]
    return None


def fpn_backbone(
    name: str,
    *,
    weights_backbone: Pretrained = None,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    out_indices: Sequence[int] | None = None,
    min_reduction: int = 4,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    **model_kwargs: Any,
) -> BackboneWithFPN:
    """A senet model's stages under torchvision's ``FeaturePyramidNetwork`` (a ``BackboneWithFPN``).

    Args:
        name: any registered model (``se_resnet50``, ``resnet50``, ``se_resnext101_32x4d``,
            ``senet154``, ...) or timm's name for one.
        weights_backbone: ``create_model``'s ``pretrained``: a weight file, ``True`` (the
            released ImageNet weights, fetched where timm fetches them) or ``None`` (random init).
            The file's layout (stride on the 1x1 or the 3x3) is used.
        trainable_layers: stages trained, counted from the last (see :func:`freeze_stages`).
            ``None``: 3 with weights, all without, as torchvision. Unlike torchvision, a value
            given without weights is honoured rather than replaced by "all".
        frozen_bn: batch norms as ``FrozenBatchNorm2d`` (:func:`freeze_batch_norm`). ``None``:
            frozen with weights, trainable ``BatchNorm2d`` without, as torchvision.
        out_indices: positions in the model's ``feature_info`` the FPN taps; default: every
            stage at stride ``min_reduction`` or coarser (4: ResNet's ``layer1``-``layer4``,
            torchvision's default).
        out_channels: FPN width (256 in the paper's detector).
        extra_blocks: torchvision's extra FPN levels; default ``LastLevelMaxPool`` ("pool").
        **model_kwargs: ``create_model`` keywords (e.g. ``stride_in_1x1=False`` for
            torchvision's ResNet V1.5 layout, SE options).

    The result has ``feature_info`` (the tapped stages), ``strides`` (FPN output name ->
    stride; ``None`` with an extra block other than torchvision's two) and the trunk's
    ``pretrained_cfg``.
    """
    trained = weights_backbone is not None and weights_backbone is not False
    try:
        model = create_model(name, pretrained=weights_backbone, **model_kwargs)
    except WeightsUnavailable as e:  # the file goes in through this function's option
        raise e.for_option("weights_backbone=PATH") from None
    if trainable_layers is None:
        n = len(_stage_numbers(model))
        trainable_layers = min(DEFAULT_TRAINABLE, n) if trained else n
    freeze_stages(model, trainable_layers)  # before the BN swap turns BN parameters into buffers
    if frozen_bn if frozen_bn is not None else trained:
        freeze_batch_norm(model)
    if out_indices is None:
        out_indices = default_out_indices(model.feature_info, min_reduction)
    body = FeatureNet(model, out_indices)
    extra_blocks = LastLevelMaxPool() if extra_blocks is None else extra_blocks
    backbone = BackboneWithFPN(body, body.return_layers, body.feature_info.channels(), out_channels,
                               extra_blocks=extra_blocks)
    strides = dict(zip(body.return_layers.values(), body.feature_info.reduction()))
    extra = _extra_levels(extra_blocks)
    last = body.feature_info.reduction()[-1]
    backbone.strides = None if extra is None else {**strides, **{n: f * last for n, f in extra}}
    backbone.feature_info = body.feature_info
    backbone.pretrained_cfg = model.pretrained_cfg
    return backbone

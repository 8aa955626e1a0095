"""Faster R-CNN and RetinaNet on an FPN over a senet trunk (paper section 5.3, Table 7).

Built as torchvision's ``fasterrcnn_resnet50_fpn`` / ``retinanet_resnet50_fpn`` are, with
:func:`~senet.detection.fpn_backbone` in place of its ResNet trunk: the same FPN, anchors
(one size per level, 8x its stride for Faster R-CNN, 32 at stride 4; three per octave at 4x
the stride for RetinaNet), RoI pooling and heads. Only the trunk differs between
``fasterrcnn_fpn("se_resnet50")`` and ``fasterrcnn_fpn("resnet50")``, as in the paper's rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from senet.detection.backbone import fpn_backbone
from senet.models import Pretrained

ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _image_norm(backbone: Any, kwargs: dict[str, Any]) -> None:
    """The trunk's own mean/std (its ``pretrained_cfg``) for the detector's input transform,
    unless given: images go in as 0-1 RGB, as torchvision's detectors take them."""
    kwargs.setdefault("image_mean", list(backbone.pretrained_cfg["mean"]))
    kwargs.setdefault("image_std", list(backbone.pretrained_cfg["std"]))


def _strides(backbone: Any, what: str) -> dict[str, int]:
    if backbone.strides is None:
        raise ValueError(f"the strides of this FPN's extra levels are unknown: pass {what}")
    return backbone.strides


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes counts the background too (torchvision's convention: COCO is 91); "
                         f"it must be an integer >= 2, got {num_classes!r}")


def fasterrcnn_fpn(
    backbone: str,
    num_classes: int = 91,
    *,
    weights_backbone: Pretrained = None,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    out_indices: Sequence[int] | None = None,
    fpn_channels: int = 256,
    backbone_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision's ``FasterRCNN`` on an FPN over the senet model ``backbone`` (paper Table 7).

    Args:
        backbone: a registered model name (``se_resnet50``, ``resnet50``, ``se_resnext50_32x4d``,
            ``senet154``, ...).
        num_classes: classes including the background (label 0), as torchvision's.
        weights_backbone, trainable_layers, frozen_bn, out_indices: see
            :func:`~senet.detection.fpn_backbone` (``None``: torchvision's defaults, which
            depend on whether weights are given).
        fpn_channels: FPN width (256).
        backbone_kwargs: ``create_model`` keywords for the trunk (layout, SE options).
        **kwargs: ``FasterRCNN`` options (``min_size``, ``max_size``, ``rpn_*``, ``box_*``,
            ``rpn_anchor_generator``, ``box_roi_pool``, ...). ``image_mean``/``image_std``
            default to the trunk's ``pretrained_cfg``.
    """
    _check_classes(num_classes)
    body = fpn_backbone(backbone, weights_backbone=weights_backbone, trainable_layers=trainable_layers,
                        frozen_bn=frozen_bn, out_indices=out_indices, out_channels=fpn_channels,
                        **dict(backbone_kwargs or {}))
    _image_norm(body, kwargs)
    if kwargs.get("rpn_anchor_generator") is None:
        strides = _strides(body, "rpn_anchor_generator")
        sizes = tuple((8 * s,) for s in strides.values())
        kwargs["rpn_anchor_generator"] = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
    if kwargs.get("box_roi_pool") is None:  # torchvision's default names exactly four levels "0"-"3"
        kwargs["box_roi_pool"] = MultiScaleRoIAlign(list(body.body.return_layers.values()), 7, 2)
    return FasterRCNN(body, num_classes, **kwargs)


def retinanet_fpn(
    backbone: str,
    num_classes: int = 91,
    *,
    weights_backbone: Pretrained = None,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    out_indices: Sequence[int] | None = None,
    fpn_channels: int = 256,
    backbone_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> RetinaNet:
    """torchvision's ``RetinaNet`` on an FPN over the senet model ``backbone``, as its
    ``retinanet_resnet50_fpn``: the stages at stride 8 and coarser (ResNet: ``layer2``-``layer4``)
    and P6/P7 from P5. Arguments as :func:`fasterrcnn_fpn`; ``**kwargs`` go to ``RetinaNet``
    (``anchor_generator``, ``head``, ``score_thresh``, ...)."""
    _check_classes(num_classes)
    # P3-P5 by default, as torchvision: P2 would give too many anchors (the RetinaNet paper)
    body = fpn_backbone(backbone, weights_backbone=weights_backbone, trainable_layers=trainable_layers,
                        frozen_bn=frozen_bn, out_indices=out_indices, min_reduction=8, out_channels=fpn_channels,
                        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels), **dict(backbone_kwargs or {}))
    _image_norm(body, kwargs)
    if kwargs.get("anchor_generator") is None:
        strides = _strides(body, "anchor_generator")
        sizes = tuple(tuple(int(4 * s * 2 ** (k / 3)) for k in range(3)) for s in strides.values())
        kwargs["anchor_generator"] = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
    return RetinaNet(body, num_classes, **kwargs)


def _table7(trunk: str) -> Any:
    def build(num_classes: int = 91, **kwargs: Any) -> FasterRCNN:
        return fasterrcnn_fpn(trunk, num_classes, **kwargs)

    build.__name__ = build.__qualname__ = f"fasterrcnn_{trunk}_fpn"
    build.__doc__ = (f"Faster R-CNN + FPN on a senet ``{trunk}`` trunk, a row of the paper's Table 7: "
                     f"``fasterrcnn_fpn({trunk!r}, num_classes, **kwargs)`` (see :func:`fasterrcnn_fpn`).")
    return build


fasterrcnn_resnet50_fpn = _table7("resnet50")
fasterrcnn_se_resnet50_fpn = _table7("se_resnet50")
fasterrcnn_resnet101_fpn = _table7("resnet101")
fasterrcnn_se_resnet101_fpn = _table7("se_resnet101")

"""Object detectors on senet trunks (paper section 5.3, Table 7: Faster R-CNN, SE-ResNet-50/101).

torchvision's ``FasterRCNN`` and ``RetinaNet`` on an FPN over any senet model's stages
(``create_model(..., features_only=True)``), with frozen batch normalisation, a frozen stem and
the last ``trainable_layers`` stages trainable, as torchvision builds its ResNet trunks; the SE
and the plain trunk are one argument apart::

    from senet.detection import fasterrcnn_fpn
    se = fasterrcnn_fpn("se_resnet50", num_classes=91, weights_backbone=True)
    plain = fasterrcnn_fpn("resnet50", num_classes=91, weights_backbone=True)

Also here: :func:`mean_average_precision` (COCO's AP@[.5:.95] and AP@.5) and
:class:`SyntheticShapes`, a small detection set made on the fly for tests and CPU experiments.
Needs torchvision (``pip install torchvision``; a test extra of senet), which
``import senet`` does not.
"""

try:
    import torchvision  # noqa: F401
except ImportError as e:  # a clear message instead of an import error deep inside a builder
    raise ImportError("senet.detection needs torchvision: pip install torchvision "
                      "(or pip install 'senet[test]')") from e

from senet.detection.backbone import default_out_indices, fpn_backbone, freeze_batch_norm, freeze_stages
from senet.detection.builders import (
    fasterrcnn_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet101_fpn,
    fasterrcnn_se_resnet50_fpn,
    fasterrcnn_se_resnet101_fpn,
    retinanet_fpn,
)
from senet.detection.metrics import mean_average_precision
from senet.detection.synthetic import SyntheticShapes, collate

__all__ = [
    "SyntheticShapes",
    "collate",
    "default_out_indices",
    "fasterrcnn_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet101_fpn",
    "fasterrcnn_se_resnet50_fpn",
    "fasterrcnn_se_resnet101_fpn",
    "fpn_backbone",
    "freeze_batch_norm",
    "freeze_stages",
    "mean_average_precision",
    "retinanet_fpn",
]

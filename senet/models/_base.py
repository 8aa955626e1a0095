"""The interface every senet model family shares: :class:`SenetModel` (timm's model interface).

A family builds its trunk, then calls :meth:`SenetModel.init_head` and sets ``feature_info``.
Everything after the trunk (global pooling, dropout, classifier) and the methods that act on it
are defined here once:

* ``forward_features(x)``: the trunk's last feature map; ``forward_head(x, pre_logits=False)``:
  pooling, dropout (``drop_rate``) and the classifier (or the pooled features);
* ``reset_classifier(num_classes, global_pool=None)``, ``get_classifier()``;
* ``num_classes``, ``num_features``, ``in_chans``, ``drop_rate``, ``global_pool`` (a
  :class:`~senet.layers.GlobalPool`, ``.pool_type`` one of ``avg``, ``max``, ``avgmax``, ``""``);
* ``feature_info``: per stage, ``dict(module=..., num_chs=..., reduction=..., stage=...)``, the
  stage in the paper's numbering (the one ``se_stages``, ``senet analyze``, ``senet ablate`` and
  ``add_se`` use). ``forward_features`` must be the children of the model applied in order up to
  the last stage's module (a nested ``nn.Sequential`` may hold a stage's module): that is what
  lets ``features_only`` (:class:`~senet.models.FeatureNet`) and torchvision's
  ``IntermediateLayerGetter`` tap the stages without re-implementing any forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from senet.layers.pool import GlobalPool


def feature(module: str, num_chs: int, reduction: int, stage: int) -> dict[str, Any]:
    """One ``feature_info`` entry: the output of ``module`` (``num_chs`` channels, ``1/reduction``
    of the input side) ends paper stage ``stage``."""
    return {"module": module, "num_chs": num_chs, "reduction": reduction, "stage": stage}


class SenetModel(nn.Module):
    """Base class of every senet network (see the module docstring)."""

    def init_head(
        self, num_features: int, num_classes: int, *, global_pool: str = "avg", drop_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        """Pooling, dropout and classifier over ``num_features`` channels (0 classes: no classifier)."""
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.num_features = num_features
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.global_pool = GlobalPool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if num_classes and self.global_pool.is_identity():
            raise ValueError("global_pool='' (no pooling) gives feature maps: use it with num_classes=0")
        self.num_classes = num_classes
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Layers between the trunk and the pooling (VGG's convolutional FC layers); none by default."""
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(self.pre_pool(x)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, freshly initialised classifier of ``num_classes`` outputs (0: none), and
        optionally another global pooling."""
        if global_pool is not None:
            self.global_pool = GlobalPool(global_pool)
        like = next(self.parameters(), None)
        self.fc = self._classifier(num_classes)
        if like is not None:
            self.fc.to(device=like.device, dtype=like.dtype)

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

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from senet.layers.checkpoint import CheckpointSequential
from senet.layers.pool import GlobalPool
from senet.models._features import (
    DefaultCfg,
    Segment,
    run_segment,
    set_grad_checkpointing,
    take_indices,
    trunk_segments,
)


def feature(module: str, num_chs: int, reduction: int, stage: int) -> dict[str, Any]:
    """One ``feature_info`` entry: the output of ``module`` (``num_chs`` channels, ``1/reduction``
    of the input side) ends paper stage ``stage``."""
    return {"module": module, "num_chs": num_chs, "reduction": reduction, "stage": stage}


OUTPUT_STRIDES = (8, 16, 32)


class Dilated(NamedTuple):
    """One strided unit under ``output_stride`` (:func:`dilate`)."""

    stride: int  # the unit's stride (1 where dilation replaces it)
    first_dilation: int  # dilation of the unit's first (strided) 3x3 convolution
    dilation: int  # dilation of its later 3x3 convolutions, and of the units after it
    reduction: int  # the network's stride after the unit


def dilate(strides: Sequence[int], output_stride: int, stem_stride: int) -> list[Dilated]:
    """timm's ``output_stride`` rule (DeepLab's atrous trunk) for units of ``strides`` after a
    stem of ``stem_stride``: once the network's stride reaches ``output_stride``, a unit's
    stride becomes 1 and the dilation grows by that stride instead; the unit's first 3x3
    convolution keeps the dilation before it, the later ones (and the next units) use the grown
    one. Shapes of weights are unchanged."""
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {output_stride!r}")
    out, reduction, dilation = [], stem_stride, 1
    for stride in strides:
        first = dilation
        if stride != 1 and reduction >= output_stride:
            stride, dilation = 1, dilation * stride
        reduction *= stride
        out.append(Dilated(stride, first, dilation, reduction))
    return out


class SenetModel(DefaultCfg, nn.Module):
    """Base class of every senet network (see the module docstring)."""

    #: smallest input side the trunk accepts (checked by :meth:`check_input_size`)
    min_input = 1

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
        self.grad_checkpointing = False

    def _classifier(self, num_classes: int) -> nn.Module:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if num_classes and self.global_pool.is_identity():
            raise ValueError("global_pool='' (no pooling) gives feature maps: use it with num_classes=0")
        self.num_classes = num_classes
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_input_size(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` for an input smaller than :attr:`min_input` (concrete sizes only:
        tracers see symbols)."""
        h, w = x.shape[-2], x.shape[-1]
        least = self.min_input
        if isinstance(h, int) and min(h, w) < least:
            raise ValueError(f"this model needs inputs of at least {least}x{least}, got {h}x{w}")

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

    # --- timm's interface beyond the head, derived from feature_info -----------------------------

    def _trunk(self) -> list[Segment]:
        return trunk_segments(self, [e["module"] for e in self.feature_info])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block (each unit of the trunk's stages; the stem and
        the modules between stages run as usual): a training step keeps only each block's input
        and recomputes the rest in the backward pass. Loss, gradients and batch-norm statistics
        are those of a step without it (:mod:`senet.layers.checkpoint`)."""
        self.grad_checkpointing = bool(enable)
        set_grad_checkpointing(self, enable)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the outputs of the stages ``indices`` (positions in
        ``feature_info``; ``None`` all, an int the last that many, negative positions count from
        the end), in the order of the network, and the final features (``forward_features(x)``;
        with ``stop_early``, the last requested stage's output and nothing after it is run).
        ``norm`` has no effect: no senet trunk ends with a separate norm layer."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; senet models give 'NCHW'")
        info = self.feature_info
        taken, last = take_indices(info, indices)
        wanted = {info[i]["module"] for i in taken}
        self.check_input_size(x)
        intermediates = []
        for segment in self._trunk():
            x = run_segment(segment, x)
            if segment.path in wanted:
                intermediates.append(x)
            if stop_early and segment.path == info[last]["module"]:
                break
        return intermediates if intermediates_only else (x, intermediates)

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop the modules after the last stage
        ``indices`` needs (they become empty ``nn.Sequential``s, so ``forward_features`` ends at
        that stage and ``feature_info`` lists the stages up to it) and, with ``prune_head`` or
        when stages were dropped, the head (pooling, classifier and VGG's convolutional FC
        layers: ``forward`` then returns the feature map). Returns the positions ``indices``
        selects. ``prune_norm`` has no effect (no separate final norm)."""
        info = self.feature_info
        taken, last = take_indices(info, indices)
        segments = self._trunk()
        end = next(k for k, s in enumerate(segments) if s.path == info[last]["module"])
        for segment in segments[end + 1:]:
            parent, _, name = segment.path.rpartition(".")
            setattr(self.get_submodule(parent), name, nn.Sequential())
        pruned = last < len(info) - 1
        self.feature_info = [dict(e) for e in info[: last + 1]]
        if prune_head or pruned:
            self.num_features = info[last]["num_chs"]
            self.remove_pre_pool()
            self.reset_classifier(0, "")
        return taken

    def remove_pre_pool(self) -> None:
        """Replace the layers of :meth:`pre_pool` by the identity (part of pruning the head)."""

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups, for layer-wise learning-rate decay
        (``timm.optim.create_optimizer_v2(model, layer_decay=...)``): ``stem`` (the modules
        before the end of the first stage that are not blocks) and ``blocks``, one group per
        block of the trunk (each unit of a stage; each other module with parameters), or with
        ``coarse`` one per stage, in the order of the network. The head's parameters match
        nothing: timm puts them in the last group."""
        info = self.feature_info
        ends = {e["module"]: k for k, e in enumerate(info)}
        units: list[tuple[int, str, nn.Module, bool]] = []  # (stage position, path, module, is a block)
        position = 0
        for segment in self._trunk():
            module = segment.module
            if isinstance(module, CheckpointSequential) and not coarse:
                units += [(position, f"{segment.path}.{n}", m, True) for n, m in module.named_children()]
            else:
                is_block = segment.container is not None or isinstance(module, CheckpointSequential)
                units.append((position, segment.path, module, is_block))
            if segment.path in ends:
                position = ends[segment.path] + 1
        units = [u for u in units if next(u[2].parameters(), None) is not None]
        stem = [path for position, path, _, is_block in units if position == 0 and not is_block]
        groups: dict[Any, list[str]] = {}
        for position, path, _, _ in units:
            if path not in stem:
                groups.setdefault(position if coarse else path, []).append(path)

        def pattern(paths: list[str]) -> str:
            return "^(?:" + "|".join(re.escape(p) for p in paths) + r")\."

        return {"stem": pattern(stem) if stem else None,
                "blocks": [(pattern(paths), (k,)) for k, paths in enumerate(groups.values())]}

"""Stages of any senet model, read from its ``feature_info``: the trunk as modules run in order
(:func:`trunk_segments`, which ``features_only``, ``forward_intermediates`` and ``group_matcher``
share), ``features_only`` (:class:`FeatureNet`, with timm's :class:`FeatureInfo`), timm's index
rules (:func:`take_indices`) and the paper's stage numbering of every module
(:func:`module_stages`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from senet.layers.checkpoint import CheckpointSequential, checkpoint_call, runs_children_in_order


class FeatureInfo:
    """The stages a :class:`FeatureNet` returns, with timm's ``FeatureInfo`` interface (same
    constructor, same answers): ``info`` is every stage of the model (``feature_info`` entries,
    each with its ``index``), ``out_indices`` the positions returned.

    ``get(key)``, ``channels()``, ``reduction()``, ``module_name()``, ``stage()`` and
    ``get_dicts(keys=None)`` answer for the returned stages, in order; given ``idx`` (an int or a
    list) they answer for those positions in ``info``, whatever is returned, as timm's do.
    ``len()`` and ``[i]`` are over ``info``.
    """

    def __init__(self, feature_info: Sequence[dict[str, Any]], out_indices: int | Sequence[int]) -> None:
        self.info = [{**entry, "index": entry.get("index", i)} for i, entry in enumerate(feature_info)]
        self.out_indices = tuple(range(-out_indices, 0)) if isinstance(out_indices, int) else tuple(out_indices)

    def from_other(self, out_indices: int | Sequence[int]) -> "FeatureInfo":
        """The same stages with other ``out_indices``."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The entries (only ``keys`` of each, when given) of the returned stages, or of ``idx``."""

        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def stage(self, idx: int | Sequence[int] | None = None) -> Any:
        """The paper's stage numbers (see :mod:`senet.models._base`)."""
        return self.get("stage", idx)

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info}, out_indices={self.out_indices})"


def _describe(feature_info: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{k}: {e['module']}" for k, e in enumerate(feature_info))


def take_indices(
    feature_info: Sequence[dict[str, Any]], indices: int | Sequence[int] | None, option: str = "indices"
) -> tuple[list[int], int]:
    """Positions in ``feature_info`` that ``indices`` selects, and the largest, as timm's
    ``feature_take_indices``: ``None`` every stage, an int the last that many, a sequence those
    positions (negative ones count from the end) in the order given. Anything else is a
    ``ValueError`` naming ``option`` and the model's stages."""
    n = len(feature_info)
    if indices is None:
        indices = n
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= n:
            raise ValueError(f"{option}={indices}: an int takes the last n stages, n from 1 to {n}; this model's "
                             f"stages are {_describe(feature_info)}")
        taken = list(range(n - indices, n))
    elif not isinstance(indices, Sequence) or isinstance(indices, str):
        raise ValueError(f"{option} must be an int, a sequence of ints or None, got {indices!r}")
    else:
        taken = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f"{option} {list(indices)}: {i!r} is not a stage index; this model has {n} "
                                 f"({_describe(feature_info)})")
            taken.append(i % n)
        if not taken:
            raise ValueError(f"{option} is empty; this model's stages are {_describe(feature_info)}")
    return taken, max(taken)


def resolve_out_indices(feature_info: Sequence[dict[str, Any]], out_indices: int | Sequence[int] | None) -> list[int]:
    """``out_indices`` (as :func:`take_indices` reads them) as sorted positions in ``feature_info``."""
    return sorted(set(take_indices(feature_info, out_indices, "out_indices")[0]))


class Segment(NamedTuple):
    """One module of a model's trunk, run in order: its name in a :class:`FeatureNet`, its path
    in the model, the module, and the :class:`~senet.layers.CheckpointSequential` it was taken
    out of (its children are checkpointed one by one), if any."""

    key: str
    path: str
    module: nn.Module
    container: CheckpointSequential | None


def trunk_segments(model: nn.Module, modules: Iterable[str]) -> list[Segment]:
    """The children of ``model`` in order, up to the last of ``modules`` (paths of feature
    modules); a child ``nn.Sequential`` that holds one of them is unrolled one level (its
    children are named ``parent_child``), as timm's ``FeatureListNet`` does. Applied in order,
    the segments are the model's ``forward_features`` up to that module (the contract of
    :mod:`senet.models._base`)."""
    remaining = set(modules)
    out: list[Segment] = []
    for name, child in model.named_children():
        if not remaining:
            break
        inside = {w for w in remaining if w.startswith(name + ".")}
        if not inside:
            out.append(Segment(name, name, child, None))
            remaining.discard(name)
            continue
        if not runs_children_in_order(child):
            raise ValueError(f"feature module(s) {sorted(inside)} lie inside {name!r}, which is not an "
                             "nn.Sequential; its stages cannot be tapped")
        container = child if isinstance(child, CheckpointSequential) else None
        for sub, grandchild in child.named_children():
            out.append(Segment(f"{name}_{sub}", f"{name}.{sub}", grandchild, container))
            remaining.discard(f"{name}.{sub}")
            if not remaining:
                break
    if remaining:
        raise ValueError(f"feature modules {sorted(remaining)} are not children of the model (or of a child "
                         "nn.Sequential)")
    return out


def run_segment(segment: Segment, x: torch.Tensor) -> torch.Tensor:
    """``segment.module(x)``, checkpointed when the container it came from checkpoints its blocks."""
    container = segment.container
    if container is not None and container.grad_checkpointing:
        return checkpoint_call(segment.module, x)
    return segment.module(x)


def set_grad_checkpointing(module: nn.Module, enable: bool) -> None:
    """Checkpoint (or not) the blocks of every :class:`~senet.layers.CheckpointSequential` in ``module``."""
    for m in module.modules():
        if isinstance(m, CheckpointSequential):
            m.grad_checkpointing = bool(enable)


class DefaultCfg:
    """``default_cfg``: timm's other name of a model's ``pretrained_cfg`` (the same dict)."""

    __jit_unused_properties__ = ["default_cfg"]

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg


class FeatureNet(DefaultCfg, nn.ModuleDict):
    """The trunk of a senet model up to its last requested stage; ``forward`` returns the
    outputs of the stages ``out_indices`` (positions in the model's ``feature_info``, as timm
    reads them: an int is the last that many) as a list, in the order of the network.

    The model's own modules are reused (same parameters), as :func:`trunk_segments` lists them.
    ``feature_info`` is a :class:`FeatureInfo` (timm's interface: ``channels()`` and
    ``reduction()`` for FPNs); the module is also a plain sequence of children, so torchvision's
    ``IntermediateLayerGetter`` / ``BackboneWithFPN`` accept it with
    ``return_layers=net.return_layers``. ``set_grad_checkpointing()`` checkpoints the model's
    blocks, as on the model.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        info = getattr(model, "feature_info", None)
        if not info:
            raise ValueError(f"{type(model).__name__} has no feature_info: features_only needs a senet model")
        indices = resolve_out_indices(info, out_indices)
        wanted = {info[i]["module"] for i in indices}
        segments = trunk_segments(model, wanted)
        super().__init__(OrderedDict((s.key, s.module) for s in segments))
        self.feature_info = FeatureInfo(info, tuple(indices))
        #: child name -> output name, as torchvision's ``return_layers``
        self.return_layers = {s.key: str(k) for k, s in enumerate(s for s in segments if s.path in wanted)}
        self._outputs = list(self.return_layers)
        # children taken out of a CheckpointSequential: checkpointed here one by one
        self._unrolled = [s.key for s in segments if s.container is not None]
        self.out_indices = indices
        self.grad_checkpointing = bool(getattr(model, "grad_checkpointing", False))

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every block (see :mod:`senet.layers.checkpoint`)."""
        self.grad_checkpointing = bool(enable)
        set_grad_checkpointing(self, enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self.checkpointed(x)
        out: list[torch.Tensor] = []
        for name, module in self.items():
            x = module(x)
            if name in self._outputs:
                out.append(x)
        return out

    @torch.jit.unused
    def checkpointed(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for name, module in self.items():
            x = checkpoint_call(module, x) if name in self._unrolled else module(x)
            if name in self._outputs:
                out.append(x)
        return out


def module_stages(model: nn.Module) -> dict[str, int]:
    """Module path -> paper stage, for every module of ``model`` up to its last stage.

    A module belongs to the first stage whose ``feature_info`` module is, or comes after it,
    in the order of ``named_modules`` (the order of the forward pass, see
    :mod:`senet.models._base`): a block inside ``layer2`` is in ``layer2``'s stage; an
    Inception module ``3a`` is in the stage that ends with ``3b``.
    """
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has no feature_info")
    paths = [p for p, _ in model.named_modules()]
    ends = []
    for entry in info:
        name = entry["module"]
        inside = [i for i, p in enumerate(paths) if p == name or p.startswith(name + ".")]
        if not inside:
            raise ValueError(f"feature_info names {name!r}, which is not a module of {type(model).__name__}")
        ends.append((max(inside), entry["stage"]))
    out = {}
    for i, path in enumerate(paths):
        for end, stage in ends:
            if i <= end and path:
                out[path] = stage
                break
    return out

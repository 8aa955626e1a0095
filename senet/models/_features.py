"""Stage outputs of any senet model: ``features_only`` (:class:`FeatureNet`) and the paper's stage
numbering of every module (:func:`module_stages`), both read from the model's ``feature_info``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class FeatureInfo:
    """The ``feature_info`` entries a :class:`FeatureNet` returns, as timm's ``FeatureInfo``:
    ``channels()``, ``reduction()``, ``module_name()``, ``stage()``, each for all outputs or one."""

    def __init__(self, entries: Sequence[dict[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]

    def _get(self, key: str, idx: int | None) -> Any:
        return [e[key] for e in self.entries] if idx is None else self.entries[idx][key]

    def channels(self, idx: int | None = None) -> Any:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> Any:
        return self._get("reduction", idx)

    def module_name(self, idx: int | None = None) -> Any:
        return self._get("module", idx)

    def stage(self, idx: int | None = None) -> Any:
        return self._get("stage", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.entries[idx]

    def __repr__(self) -> str:
        return f"FeatureInfo({self.entries})"


def _is_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def resolve_out_indices(feature_info: Sequence[dict[str, Any]], out_indices: Sequence[int] | None) -> list[int]:
    """``out_indices`` as sorted positions in ``feature_info`` (negative ones count from the end;
    ``None``: every stage)."""
    n = len(feature_info)
    if out_indices is None:
        return list(range(n))
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    picked = set()
    for i in out_indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            stages = ", ".join(f"{k}: {e['module']}" for k, e in enumerate(feature_info))
            raise ValueError(f"out_indices {list(out_indices)}: {i!r} is not a stage index; this model has {n} "
                             f"({stages})")
        picked.add(i % n)
    return sorted(picked)


class FeatureNet(nn.ModuleDict):
    """The trunk of a senet model up to its last requested stage; ``forward`` returns the
    outputs of the stages ``out_indices`` (positions in the model's ``feature_info``) as a list.

    The model's own modules are reused (same parameters). Its children run in order; a child
    ``nn.Sequential`` that holds a requested module is unrolled one level (its children are named
    ``parent_child``), as timm's ``FeatureListNet`` does. ``feature_info`` is a
    :class:`FeatureInfo` with ``channels()`` and ``reduction()`` for FPNs; the module is also a
    plain sequence of children, so torchvision's ``IntermediateLayerGetter`` /
    ``BackboneWithFPN`` accept it with ``return_layers=net.return_layers``.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        info = getattr(model, "feature_info", None)
        if not info:
            raise ValueError(f"{type(model).__name__} has no feature_info: features_only needs a senet model")
        indices = resolve_out_indices(info, out_indices)
        wanted = {info[i]["module"]: i for i in indices}
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        names: dict[str, str] = {}
        remaining = set(wanted)
        for name, child in model.named_children():
            if not remaining:
                break
            inside = {w for w in remaining if w.startswith(name + ".")}
            if inside:
                if not _is_sequential(child):
                    raise ValueError(f"feature module(s) {sorted(inside)} lie inside {name!r}, which is not an "
                                     "nn.Sequential; features_only cannot tap them")
                for sub, grandchild in child.named_children():
                    key = f"{name}_{sub}"
                    layers[key] = grandchild
                    names[key] = f"{name}.{sub}"
                    remaining.discard(f"{name}.{sub}")
                    if not remaining:
                        break
            else:
                layers[name] = child
                names[name] = name
                remaining.discard(name)
        if remaining:
            raise ValueError(f"feature modules {sorted(remaining)} are not children of the model (or of a child "
                             "nn.Sequential)")
        super().__init__(layers)
        self.feature_info = FeatureInfo([info[i] for i in indices])
        #: child name -> output name, as torchvision's ``return_layers``
        self.return_layers = {key: str(k) for k, key in enumerate(key for key, full in names.items() if full in wanted)}
        self._outputs = list(self.return_layers)
        self.out_indices = indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for name, module in self.items():
            x = module(x)
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

"""Layer widths of a network, and narrowing a freshly built model to a pruned network's widths.

A pruned network (:mod:`senet.pruning`) is its model as :func:`~senet.models.create_model` builds
it with some layers narrower. Its weight file records only those layers' widths (metadata
``widths``: module path -> ``[in, out]`` channels); the builder builds the model, then
:func:`narrow` gives those layers their widths (before the file's tensors are loaded), so that
a pruned network rebuilds from its file alone, through the one builder, for every family.

The step is generic: it knows layers, not families. A layer with channel widths is a
``Conv2d`` (``in_channels``, ``out_channels``; a depthwise one keeps ``groups`` equal to its
channels, a grouped one keeps its ``groups``), a batch norm (``num_features``: in = out), a
``Linear`` (``in_features``, ``out_features``) or a layer without parameters that names its
widths ``in_channels`` / ``out_channels`` (the CIFAR ResNets' zero-padding shortcut). The
model-level widths that follow from the layers (``num_features``, the ``feature_info``
channels) are measured again afterwards by running the network once (:func:`refresh`); an SE
block reads its widths from its own layers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

Widths = dict[str, tuple[int, int]]


class WidthsError(ValueError):
    """Widths that do not narrow the model: a path that is not a layer with channel widths, a
    width above the model's, one that breaks a layer's grouping."""


def _plain_widths(module: nn.Module) -> bool:
    return (not isinstance(module, nn.Conv2d) and isinstance(getattr(module, "in_channels", None), int)
            and isinstance(getattr(module, "out_channels", None), int)
            and next(module.parameters(recurse=False), None) is None)


def widths_of(module: nn.Module) -> tuple[int, int] | None:
    """``(in, out)`` channels of a layer with channel widths, ``None`` for any other module."""
    if isinstance(module, nn.Conv2d) or _plain_widths(module):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features, module.num_features
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return None


def layer_widths(model: nn.Module) -> Widths:
    """Every layer with channel widths of ``model``: module path -> ``(in, out)``."""
    return {path: w for path, m in model.named_modules() if (w := widths_of(m)) is not None}


def changed_widths(model: nn.Module, reference: Mapping[str, tuple[int, int]]) -> Widths:
    """The layers of ``model`` whose widths differ from ``reference`` (:func:`layer_widths` of
    the model as built): what a pruned network's file records."""
    return {path: w for path, w in layer_widths(model).items() if tuple(reference.get(path, w)) != w}


def _tensor(like: torch.Tensor, shape: tuple[int, ...], fill: float = 0.0) -> torch.Tensor:
    return torch.full(shape, fill, dtype=like.dtype, device=like.device)


def _parameter(old: nn.Parameter, shape: tuple[int, ...], fill: float = 0.0) -> nn.Parameter:
    return nn.Parameter(_tensor(old, shape, fill), requires_grad=old.requires_grad)


def _narrow_layer(path: str, module: nn.Module, cin: int, cout: int) -> None:
    have = widths_of(module)
    if have is None:
        raise WidthsError(f"{path} is a {type(module).__name__}, not a layer with channel widths")
    if cin > have[0] or cout > have[1]:
        raise WidthsError(f"{path} would be [{cin}, {cout}], wider than the model's [{have[0]}, {have[1]}]; "
                          "a pruned network only narrows layers")
    if isinstance(module, nn.Conv2d):
        groups = module.groups
        if groups > 1 and groups == have[0] == have[1]:  # depthwise: one group per channel
            if cin != cout:
                raise WidthsError(f"{path} is depthwise: its in and out widths must be equal, got [{cin}, {cout}]")
            groups = cin
        elif cin % groups or cout % groups:
            raise WidthsError(f"{path} has {groups} groups: [{cin}, {cout}] must be multiples of it")
        module.in_channels, module.out_channels, module.groups = cin, cout, groups
        module.weight = _parameter(module.weight, (cout, cin // groups, *module.kernel_size))
        if module.bias is not None:
            module.bias = _parameter(module.bias, (cout,))
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if cin != cout:
            raise WidthsError(f"{path} is a batch norm: its in and out widths must be equal, got [{cin}, {cout}]")
        module.num_features = cout
        if module.affine:
            module.weight = _parameter(module.weight, (cout,), 1.0)
            module.bias = _parameter(module.bias, (cout,))
        if module.track_running_stats:
            module.running_mean = _tensor(module.running_mean, (cout,))
            module.running_var = _tensor(module.running_var, (cout,), 1.0)
    elif isinstance(module, nn.Linear):
        module.in_features, module.out_features = cin, cout
        module.weight = _parameter(module.weight, (cout, cin))
        if module.bias is not None:
            module.bias = _parameter(module.bias, (cout,))
    else:
        module.in_channels, module.out_channels = cin, cout


def narrow(model: nn.Module, widths: Mapping[str, tuple[int, int]]) -> None:
    """Give the layers ``widths`` names their ``(in, out)`` channels (new tensors, zeros: the
    weights are loaded afterwards), then :func:`refresh` the model's derived widths. Raises
    :class:`WidthsError` naming the first entry that does not fit."""
    modules = dict(model.named_modules())
    for path, (cin, cout) in widths.items():
        if path not in modules or not path:
            raise WidthsError(f"names {path!r}, which is no layer of this model")
        _narrow_layer(path, modules[path], int(cin), int(cout))
    refresh(model)


@torch.no_grad()
def refresh(model: nn.Module) -> None:
    """Measure again what follows from the layers' widths: ``num_features`` and the channels of
    each ``feature_info`` stage, by running the network once on a small input (on the model's
    device: the ``meta`` device computes nothing)."""
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_features"):
        return
    param = next(model.parameters(), None)
    if param is None:
        return
    modules = dict(model.named_modules())
    seen: dict[str, int] = {}
    hooks = [modules[e["module"]].register_forward_hook(
        lambda m, i, o, key=e["module"]: seen.__setitem__(key, o.shape[1])) for e in info if e["module"] in modules]
    side = max(32, getattr(model, "min_input", 1))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        x = torch.zeros(1, getattr(model, "in_chans", 3), side, side, dtype=param.dtype, device=param.device)
        features = model.forward_features(x)
        if hasattr(model, "pre_pool"):
            features = model.pre_pool(features)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    for entry in info:
        if entry["module"] in seen:
            entry["num_chs"] = seen[entry["module"]]
    model.num_features = int(features.shape[1])

"""Which channels of a network must be pruned together: the dependency graph of torch-pruning
(DepGraph, Fang et al., CVPR 2023) turned into *pruning groups* of interchangeable *units*.

A **unit** is the smallest set of channels that can go: a channel of a convolution's output
with every channel that is the same tensor elsewhere (its batch norm, the inputs of the layers
that consume it, the residual stream it is summed into, the SE block's FC inputs and outputs
that gate it), and, where a grouped convolution reads it (ResNeXt), the channel at the same
position in each of the convolution's groups, so that the groups stay equal. An **element** of
a unit is one ``(layer, side, index)``: ``side`` is ``"out"`` (the layer's output channel),
``"in"`` (its input channel) or ``"both"`` (a batch norm or a depthwise convolution: its input
and output channel are one).

A **pruning group** gathers the units that touch the same layers in the same way (equal
*signature*): removing any ``k`` of its units narrows the same layers by the same amounts, so a
pruning target fixes only how many units each group loses (:mod:`senet.pruning.core`), and a
criterion only chooses which (:mod:`senet.pruning.criteria`): every criterion prunes the same
layers to the same widths.

The CIFAR ResNets' zero-padding shortcut (option A) passes its input channels through as the
first output channels and appends zero channels. DepGraph has no such operation (it would map
the appended channels back onto channels that do not exist), so the shortcut is given to it as
a layer of its own (``customized_pruners``, torch-pruning's extension point for layers it does
not know) that couples nothing, and the units its passed-through channels join are merged here:
channel ``i < in`` of the stage after it is channel ``i`` of the stage before. The rule holds for
any parameter-free layer that names its widths ``in_channels`` / ``out_channels``.

Not prunable: the classifier's outputs (the classes), the SE blocks' bottleneck (their hidden
width ``C/r`` is kept: it holds a negligible share of the FLOPs, and keeping it keeps each
block's excitation capacity), and any unit whose removal would leave a layer without channels
(each group keeps at least one unit).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from senet.errors import SenetError
from senet.layers.se import SqueezeExcite
from senet.models._narrow import Widths, layer_widths, widths_of

Element = tuple[str, str, int]  # (layer path, "in" | "out" | "both", channel index)
EXTRA = "pip install 'senet[prune]'"


def torch_pruning() -> Any:
    """The ``torch_pruning`` module, or a one-line error naming the extra that installs it."""
    try:
        import torch_pruning
    except ImportError:
        raise SenetError(f"pruning needs torch-pruning: {EXTRA}") from None
    return torch_pruning


@dataclass
class Unit:
    """Channels pruned together (see the module docstring)."""

    elements: list[Element]

    def signature(self) -> tuple[tuple[str, str, int], ...]:
        """The layers this unit narrows and by how many channels each."""
        count: dict[tuple[str, str], int] = {}
        for path, side, _ in self.elements:
            count[path, side] = count.get((path, side), 0) + 1
        return tuple(sorted((p, s, n) for (p, s), n in count.items()))


@dataclass
class PruningGroup:
    """Units with one signature; ``units[k]`` is unit ``k`` of the group."""

    id: int
    units: list[Unit]
    prunable: bool = True
    why: str = ""  # why not prunable

    @property
    def size(self) -> int:
        return len(self.units)


@dataclass
class GroupedModel:
    """A model's pruning groups and what applying a choice of units needs."""

    model: nn.Module
    groups: list[PruningGroup]
    widths: Widths  # every layer's (in, out) as the model is now
    graph: Any = None  # the torch-pruning DependencyGraph (its model is ``model``)
    # tp groups: (root layer path, elements of the tp group as (path, side, idx, root idx))
    roots: list[tuple[str, list[tuple[str, str, int, int]]]] = field(default_factory=list)
    unit_roots: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)

    def prunable(self) -> list[PruningGroup]:
        return [g for g in self.groups if g.prunable]

    def widths_after(self, counts: dict[int, int]) -> Widths:
        """Every layer's widths once ``counts[group id]`` units of each group are gone (which
        units does not matter: they touch the same layers)."""
        shrink: dict[tuple[str, str], int] = {}
        for g in self.groups:
            k = counts.get(g.id, 0)
            if not k:
                continue
            for path, side, n in g.units[0].signature():
                shrink[path, side] = shrink.get((path, side), 0) + k * n
        out = {}
        for path, (cin, cout) in self.widths.items():
            both = shrink.get((path, "both"), 0)
            out[path] = (cin - both - shrink.get((path, "in"), 0), cout - both - shrink.get((path, "out"), 0))
        return out


class _PlainWidthsPruner:
    """torch-pruning's pruner of a parameter-free layer with ``in_channels`` / ``out_channels``
    (the zero-padding shortcut): it only keeps count; inputs and outputs are not coupled by
    DepGraph (the passed-through channels are merged by :func:`group_model`)."""

    @staticmethod
    def make() -> Any:
        tp = torch_pruning()

        class Pruner(tp.pruner.BasePruningFunc):
            TARGET_MODULES = None

            def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
                layer.out_channels -= len(idxs)
                return layer

            def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
                layer.in_channels -= len(idxs)
                return layer

            def get_out_channels(self, layer: nn.Module) -> int:
                return layer.out_channels

            def get_in_channels(self, layer: nn.Module) -> int:
                return layer.in_channels

        return Pruner()


def _plain(module: nn.Module) -> bool:
    return widths_of(module) is not None and not isinstance(
        module, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def example_input(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """A one-image input for tracing: ``input_size`` or the model's pretrained input size."""
    size = input_size or tuple((getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224))
    param = next(model.parameters())
    return torch.randn((1, *size), generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)


def build_graph(model: nn.Module, example: torch.Tensor) -> Any:
    """torch-pruning's dependency graph of ``model`` (traced once with ``example``)."""
    tp = torch_pruning()
    plain = {type(m): _PlainWidthsPruner.make() for m in model.modules() if _plain(m)}
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example, customized_pruners=plain or None, verbose=False)


def _tp_groups(model: nn.Module, graph: Any) -> Iterator[tuple[str, Any]]:
    """Every torch-pruning group, rooted at each convolution or linear layer's output channels
    that no earlier group holds (torch-pruning's own ``get_all_groups`` skips a layer once any of
    its channels is in a group, which would leave channels behind a zero-padding shortcut out)."""
    names = {m: p for p, m in model.named_modules()}
    covered: set[tuple[str, int]] = set()
    for path, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or m not in graph.module2node:
            continue
        pruner = graph.get_pruner_of_module(m)
        idxs = [i for i in range(pruner.get_out_channels(m)) if (path, i) not in covered]
        if not idxs:
            continue
        group = graph.get_pruning_group(m, pruner.prune_out_channels, idxs)
        for item in group:
            target = item.dep.target.module
            if isinstance(target, nn.Module) and target in names and graph.is_out_channel_pruning_fn(item.dep.handler):
                covered.update((names[target], i) for i in item.idxs)
        yield path, group


def group_model(model: nn.Module, input_size: tuple[int, int, int] | None = None,
                classifier: str | None = None) -> GroupedModel:
    """The pruning groups of ``model`` (see the module docstring); ``classifier``: the layer
    whose outputs are the classes (default: the model's ``get_classifier()``)."""
    graph = build_graph(model, example_input(model, input_size))
    names = {m: p for p, m in model.named_modules()}
    if classifier is None and hasattr(model, "get_classifier"):
        classifier = names.get(model.get_classifier())
    se_hidden = {f"{p}.fc1" for p, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    plain = {p for p, m in model.named_modules() if _plain(m)}

    # 1. torch-pruning's groups, each root index with its elements
    roots: list[tuple[str, list[tuple[str, str, int, int]]]] = []
    units: dict[tuple[int, int], list[Element]] = {}  # (tp group, root index) -> elements
    channel_groups: dict[int, int] = {}
    for t, (root, group) in enumerate(_tp_groups(model, graph)):
        items = []
        groups_here = 1
        for item in group:
            target = item.dep.target.module
            if not isinstance(target, nn.Module) or target not in names or widths_of(target) is None:
                continue
            pruner = graph.get_pruner_of_module(target)
            coupled = pruner.prune_out_channels == pruner.prune_in_channels
            side = "both" if coupled else ("out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in")
            if isinstance(target, nn.Conv2d) and target.groups > 1 and not coupled:
                groups_here = max(groups_here, target.groups)
            for idx, root_idx in zip(item.idxs, item.root_idxs):
                items.append((names[target], side, int(idx), int(root_idx)))
                units.setdefault((t, int(root_idx)), []).append((names[target], side, int(idx)))
        roots.append((root, items))
        channel_groups[t] = groups_here

    # 2. selectable units: a root index, or with grouped convolutions the same position in each group
    uf = _UnionFind()
    member_of: dict[tuple[int, int], tuple[int, int]] = {}  # (tp group, root idx) -> selectable unit id
    for t, (root, _) in enumerate(roots):
        idxs = sorted(r for (tt, r) in units if tt == t)
        g = channel_groups[t]
        if g > 1 and (len(idxs) % g or idxs != list(range(len(idxs)))):
            raise SenetError(f"{root}: its channels feed a grouped convolution of {g} groups unevenly; "
                             "this network cannot be pruned by senet")
        size = len(idxs) // g
        for r in idxs:
            member_of[t, r] = (t, r % size if g > 1 else r)
            uf.find(member_of[t, r])

    # 3. merge the channels a parameter-free shortcut passes through with the ones it receives
    where: dict[Element, tuple[int, int]] = {}
    for (t, r), elements in units.items():
        for e in elements:
            where.setdefault(e, member_of[t, r])
    widths = layer_widths(model)
    for path in plain:
        for i in range(widths[path][0]):
            a, b = where.get((path, "out", i)), where.get((path, "in", i))
            if a is not None and b is not None:
                uf.union(a, b)

    merged: dict[Any, list[Element]] = {}
    roots_of: dict[Any, list[tuple[int, int]]] = {}
    for (t, r), elements in units.items():
        key = uf.find(member_of[t, r])
        merged.setdefault(key, []).extend(elements)
        roots_of.setdefault(key, []).append((t, r))

    # 4. pruning groups: units of one signature, in the order of the network
    by_signature: dict[tuple, list[tuple[Any, Unit]]] = {}
    for key in sorted(merged):
        unit = Unit(sorted(set(merged[key])))
        by_signature.setdefault(unit.signature(), []).append((key, unit))
    groups, unit_roots = [], {}
    for gid, (signature, members) in enumerate(by_signature.items()):
        group = PruningGroup(gid, [u for _, u in members])
        paths = {p for p, _, _ in signature}
        if classifier is not None and any(p == classifier and s != "in" for p, s, _ in signature):
            group.prunable, group.why = False, "the classifier's outputs (the classes)"
        elif any(p in se_hidden and s != "in" for p, s, _ in signature):
            group.prunable, group.why = False, "an SE block's bottleneck (C/r is kept)"
        elif group.size < 2:
            group.prunable, group.why = False, "a single unit (a layer needs a channel)"
        elif not paths:
            group.prunable, group.why = False, "no layer"
        groups.append(group)
        for k, (key, _) in enumerate(members):
            unit_roots[gid, k] = roots_of[key]
    return GroupedModel(model, groups, widths, graph, roots, unit_roots)

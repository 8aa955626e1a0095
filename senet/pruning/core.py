"""Structured pruning of a senet model to a FLOPs or channel target: :func:`prune`.

1. The pruning groups (:mod:`senet.pruning.groups`, torch-pruning's dependency graph).
2. How many units each group loses, from the target alone (never from the criterion, so that
   every criterion prunes the same layers to the same widths): ``ratio=r`` keeps
   ``round(r * n)`` (at least one) of the ``n`` units of every group; ``flops=f`` searches the
   uniform kept fraction whose network has the FLOPs closest above ``f`` times the model's
   (bisection), then removes single units, each from the group that keeps the largest
   fraction, until the FLOPs are at or below the target, and takes whichever of the last two
   networks is closer (still more than 2% off: a local search moves a unit into or out of a
   group, or between two groups). FLOPs are senet's count (:func:`senet.complexity`, 1 multiply-add = 1
   FLOP) of the candidate network built on the ``meta`` device, and must end within 2% of the
   target.
3. Which units: the lowest-scored of each group (:mod:`senet.pruning.criteria`).
4. The units go (torch-pruning removes the channels of every coupled layer); the layers' widths
   are checked against the plan, and the pruned network's logits against those of the
   unpruned one with the pruned channels' activations set to zero (:func:`zeroed`): the two
   must compute the same function, which is what removing a channel means.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from senet.complexity import complexity
from senet.errors import SenetError
from senet.models._narrow import Widths, layer_widths, narrow, refresh
from senet.pruning.criteria import check_criterion, mean_excitations, score_units
from senet.pruning.groups import Element, GroupedModel, PruningGroup, group_model, torch_pruning

#: how far the pruned network's FLOPs may be from a ``flops`` target (relative)
FLOPS_TOLERANCE = 0.02
#: families whose graphs the dependency graph cannot follow, and why
UNSUPPORTED = {
    "shufflenet": "its channel shuffle (a reshape and transpose of the channels) is not followed by "
                  "torch-pruning's dependency graph, so coupled channels cannot be found",
}


@dataclass
class PruneResult:
    """What :func:`prune` did: the pruned ``model`` (pruned in place), the target, the
    complexity before and after, the layers' new widths, which units of which group went, and
    the largest difference between the pruned network's logits and the unpruned one's with
    those channels zeroed (``None`` when not checked)."""

    model: nn.Module
    criterion: str
    target: dict[str, float]
    input_size: tuple[int, int, int]
    params_before: int
    flops_before: int
    params_after: int
    flops_after: int
    widths: Widths
    removed: dict[int, list[int]] = field(default_factory=dict)
    groups: int = 0
    max_abs_diff: float | None = None

    @property
    def flops_kept(self) -> float:
        return self.flops_after / self.flops_before

    @property
    def params_kept(self) -> float:
        return self.params_after / self.params_before

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record (``prune.json``)."""
        return {"criterion": self.criterion, "target": self.target, "input_size": list(self.input_size),
                "params_before": self.params_before, "params_after": self.params_after,
                "flops_before": self.flops_before, "flops_after": self.flops_after,
                "flops_kept": self.flops_kept, "params_kept": self.params_kept,
                "groups": self.groups, "units_removed": sum(len(v) for v in self.removed.values()),
                "max_abs_diff_zeroed": self.max_abs_diff,
                "widths": {k: list(v) for k, v in sorted(self.widths.items())}}


def check_target(flops: float | None, ratio: float | None) -> tuple[str, float]:
    """``("flops", f)`` or ``("ratio", r)``: exactly one, a fraction to keep in (0, 1]."""
    if (flops is None) == (ratio is None):
        raise ValueError("give one pruning target: flops (fraction of the FLOPs to keep) or ratio (fraction of "
                         "the channels to keep)")
    name, value = ("flops", flops) if flops is not None else ("ratio", ratio)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 1:
        raise ValueError(f"--{name} must be a fraction to keep in (0, 1], got {value!r}")
    return name, float(value)


def check_prunable(model: nn.Module) -> None:
    """A senet model of a family the dependency graph can follow, or a one-line error."""
    spec = getattr(model, "senet_spec", None)
    if spec is None:
        raise SenetError("senet prunes models built by senet.create_model (it rebuilds the pruned network from "
                         "its file); this model has no senet_spec")
    from senet.models import model_info

    family = model_info(spec.name).family
    if family in UNSUPPORTED:
        raise SenetError(f"{spec.name} cannot be pruned: {UNSUPPORTED[family]}")


class _FlopsOf:
    """FLOPs (senet's count) of the network with some units removed, built on the meta device."""

    def __init__(self, model: nn.Module, grouped: GroupedModel, input_size: tuple[int, int, int]) -> None:
        from senet.models import model_info
        from senet.models._builder import build

        spec = model.senet_spec
        kwargs = dict(spec.kwargs)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.base = build(model_info(spec.name), kwargs.pop("num_classes", None), kwargs, spec.widths)
        self.grouped, self.input_size = grouped, input_size
        self.cache: dict[tuple, int] = {}

    def __call__(self, counts: dict[int, int]) -> int:
        key = tuple(sorted((g, k) for g, k in counts.items() if k))
        if key not in self.cache:
            net = copy.deepcopy(self.base)
            after = self.grouped.widths_after(counts)
            narrow(net, {p: w for p, w in after.items() if w != self.grouped.widths[p]})
            self.cache[key] = complexity(net, self.input_size).flops
        return self.cache[key]


def counts_for_ratio(grouped: GroupedModel, keep: float) -> dict[int, int]:
    """Units each prunable group loses to keep ``keep`` of them (rounded, at least one)."""
    return {g.id: g.size - max(1, min(g.size, round(keep * g.size))) for g in grouped.prunable()}


def counts_for_flops(grouped: GroupedModel, flops_of: Callable[[dict[int, int]], int], target: int) -> dict[int, int]:
    """Units each prunable group loses for the network's FLOPs to be as close to ``target`` as
    the search of the module docstring gets (criterion-independent)."""
    groups = grouped.prunable()
    if not groups:
        raise SenetError("this network has no prunable channel groups")
    floor = counts_for_ratio(grouped, 0.0)
    if flops_of(floor) > target * (1 + FLOPS_TOLERANCE):
        least = flops_of(floor) / flops_of({})
        raise SenetError(f"a FLOPs target of {target / flops_of({}):.3f} cannot be reached: keeping one unit of "
                         f"every prunable group still leaves {least:.3f} of the FLOPs")
    lo, hi = 0.0, 1.0  # kept fractions: flops(lo) <= target < flops(hi) (or hi = 1)
    for _ in range(30):
        mid = (lo + hi) / 2
        if flops_of(counts_for_ratio(grouped, mid)) > target:
            hi = mid
        else:
            lo = mid
    counts = counts_for_ratio(grouped, hi)
    previous = counts
    while flops_of(counts) > target:
        open_groups = [g for g in groups if g.size - counts[g.id] > 1]
        if not open_groups:
            break
        pick = max(open_groups, key=lambda g: ((g.size - counts[g.id]) / g.size, g.size, -g.id))
        previous, counts = counts, {**counts, pick.id: counts[pick.id] + 1}
    if abs(flops_of(previous) - target) < abs(flops_of(counts) - target):
        counts = previous
    return _refine(groups, counts, flops_of, target)


def _refine(groups: list[PruningGroup], counts: dict[int, int], flops_of: Callable[[dict[int, int]], int],
            target: int) -> dict[int, int]:
    """Local search from ``counts`` towards the target FLOPs, while it lies more than
    :data:`FLOPS_TOLERANCE` away: one unit more or fewer in one group, then (finer steps, where
    one unit of a wide group moves the FLOPs a lot) one more in a group and one fewer in another."""
    def off(c: dict[int, int]) -> float:
        return abs(flops_of(c) - target)

    def moves(c: dict[int, int], pairs: bool) -> Iterator[dict[int, int]]:
        steps = [(g.id, d) for g in groups for d in (1, -1) if 0 <= c[g.id] + d <= g.size - 1]
        for g, d in steps:
            yield {**c, g: c[g] + d}
        if pairs:
            for (g, d), (h, e) in itertools.combinations(steps, 2):
                if g != h and d != e:
                    yield {**c, g: c[g] + d, h: c[h] + e}

    for _ in range(4 * len(groups)):  # each move lowers the distance: bounded anyway
        if off(counts) <= FLOPS_TOLERANCE * target:
            break
        best = min(moves(counts, pairs=False), key=off, default=counts)
        if off(best) >= off(counts):
            best = min(moves(counts, pairs=True), key=off, default=counts)
            if off(best) >= off(counts):
                break
        counts = best
    return counts


def choose_units(scores: dict[int, list[float]], counts: dict[int, int]) -> dict[int, list[int]]:
    """The ``counts[g]`` lowest-scored units of each group (ties: the earlier unit goes first)."""
    out = {}
    for gid, k in counts.items():
        if k:
            order = sorted(range(len(scores[gid])), key=lambda i: (scores[gid][i], i))
            out[gid] = sorted(order[:k])
    return out


def removed_elements(grouped: GroupedModel, removed: dict[int, list[int]]) -> list[Element]:
    """Every channel (layer, side, index) of the units ``removed``, in the unpruned numbering."""
    return [e for gid, ks in removed.items() for k in ks for e in grouped.groups[gid].units[k].elements]


@contextlib.contextmanager
def zeroed(model: nn.Module, elements: Iterable[Element]) -> Iterator[nn.Module]:
    """``model`` with the output channels ``elements`` name (sides ``out`` / ``both``) set to zero
    by forward hooks: what the network computes once those channels are removed."""
    by_layer: dict[str, list[int]] = {}
    for path, side, idx in elements:
        if side != "in":
            by_layer.setdefault(path, []).append(idx)
    modules = dict(model.named_modules())
    handles = []

    def hook_for(idxs: list[int]) -> Callable[..., torch.Tensor]:
        index = torch.tensor(sorted(set(idxs)))

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            mask = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
            mask[index.to(output.device)] = 0
            return output * mask.reshape(1, -1, *([1] * (output.dim() - 2)))

        return hook

    try:
        for path, idxs in by_layer.items():
            handles.append(modules[path].register_forward_hook(hook_for(idxs)))
        yield model
    finally:
        for h in handles:
            h.remove()


def apply(grouped: GroupedModel, removed: dict[int, list[int]]) -> None:
    """Remove the ``removed`` units of each group from ``grouped.model`` with torch-pruning."""
    graph, model = grouped.graph, grouped.model
    modules = dict(model.named_modules())
    per_tp: dict[int, set[int]] = {}
    for gid, ks in removed.items():
        for k in ks:
            for t, r in grouped.unit_roots[gid, k]:
                per_tp.setdefault(t, set()).add(r)
    gone: dict[tuple[str, str], set[int]] = {}  # (layer, side) -> indices removed so far (unpruned numbering)
    for t in sorted(per_tp):
        root, items = grouped.roots[t]
        idxs = sorted(per_tp[t])
        before = gone.get((root, "out"), set()) | gone.get((root, "both"), set())
        current = [r - sum(1 for d in before if d < r) for r in idxs]
        module = modules[root]
        pruner = graph.get_pruner_of_module(module)
        group = graph.get_pruning_group(module, pruner.prune_out_channels, current)
        group.prune()
        chosen = set(idxs)
        for path, side, idx, r in items:
            if r in chosen:
                gone.setdefault((path, side), set()).add(idx)


def prune(
    model: nn.Module,
    *,
    flops: float | None = None,
    ratio: float | None = None,
    criterion: str = "se",
    calibration: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    input_size: tuple[int, int, int] | None = None,
    check: bool = True,
) -> PruneResult:
    """Prune ``model`` (a senet model, changed in place) to keep ``flops`` of its FLOPs or
    ``ratio`` of the channels of every prunable group, removing the units ``criterion`` ranks
    lowest (``se``, ``l1``, ``bn``, ``random``; see :mod:`senet.pruning.criteria`).

    Args:
        calibration: for ``se``: model inputs (a float tensor ``[N, C, H, W]``, or batches of
            ``(images, labels)``; with ``transform`` applied to each batch first), best drawn
            from the training split.
        seed: the order of the ``random`` criterion.
        input_size: ``(C, H, W)`` at which FLOPs are counted (default: the model's input size).
        check: compare the pruned network's logits with those of the unpruned one whose
            pruned channels are zeroed (a copy of the model is kept meanwhile); a difference
            above 1e-4 of the logits' scale is a :class:`SenetError`.

    Returns:
        :class:`PruneResult`; the model's ``senet_spec.widths`` records the new widths, so that
        :func:`senet.save_weights` writes a file ``create_model(pretrained=FILE)`` rebuilds.
    """
    kind, value = check_target(flops, ratio)
    check_criterion(criterion)
    if criterion == "se" and calibration is None:
        raise ValueError("criterion 'se' ranks channels by their excitations: give calibration images "
                         "(training images, e.g. a few hundred)")
    check_prunable(model)
    torch_pruning()
    spec = model.senet_spec
    size = tuple(input_size or (model.pretrained_cfg or {}).get("input_size") or (3, 224, 224))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        before = complexity(model, size)
        excitation = mean_excitations(model, calibration, transform=transform) if criterion == "se" else None
        grouped = group_model(model, size)
        if kind == "ratio":
            counts = counts_for_ratio(grouped, value)
        else:
            counts = counts_for_flops(grouped, _FlopsOf(model, grouped, size), round(value * before.flops))
        scores = score_units(grouped, criterion, seed=seed, excitation=excitation)
        removed = choose_units(scores, counts)
        reference = copy.deepcopy(model) if check else None
        expected = grouped.widths_after(counts)
        apply(grouped, removed)
        got = layer_widths(model)
        wrong = [p for p in expected if got.get(p) != expected[p]]
        if wrong:
            raise SenetError(f"pruning gave {wrong[0]} the widths {got.get(wrong[0])}, not the planned "
                             f"{expected[wrong[0]]} (this is a bug in senet)")
        refresh(model)
        from senet.models._save import narrowed_widths

        spec.widths = narrowed_widths(model, spec.name, spec.kwargs) or None
        diff = None
        if reference is not None:
            diff = _compare(reference, model, grouped, removed, size)
        after = complexity(model, size)
        if kind == "flops" and abs(after.flops - value * before.flops) > FLOPS_TOLERANCE * value * before.flops:
            raise SenetError(f"pruning to {value:g} of the FLOPs gave {after.flops / before.flops:.3f}, more than "
                             f"{100 * FLOPS_TOLERANCE:g}% off (the groups are too coarse for this target)")
    finally:
        for m, training in modes.items():
            m.training = training
    return PruneResult(model, criterion, {kind: value}, size, before.params, before.flops, after.params,
                       after.flops, dict(spec.widths or {}), removed, len(grouped.prunable()), diff)


@torch.no_grad()
def _compare(reference: nn.Module, pruned: nn.Module, grouped: GroupedModel, removed: dict[int, list[int]],
             size: tuple[int, int, int]) -> float:
    param = next(pruned.parameters())
    x = torch.randn((2, *size), generator=torch.Generator().manual_seed(1)).to(param.device, param.dtype)
    reference.eval()
    pruned.eval()
    with zeroed(reference, removed_elements(grouped, removed)):
        want = reference(x)
    got = pruned(x)
    diff = float((got - want).abs().max())
    scale = max(1.0, float(want.abs().max()))
    if not diff <= 1e-4 * scale:
        raise SenetError(f"the pruned network does not compute what the unpruned one computes with the pruned "
                         f"channels zeroed (largest logit difference {diff:.3g}); this is a bug in senet")
    return diff

"""How important each unit of a pruning group is: the criteria ``senet prune`` compares.

Each criterion scores every unit of a prunable group (:mod:`senet.pruning.groups`); a group loses
its lowest-scored units. Only the order within a group matters (how many units each group loses
is fixed by the target, the same for every criterion), so scores of different groups need not
be on one scale.

* ``se``: the paper's suggestion (section 7: the excitations "could be used for ... network
  pruning"). A unit whose channels an SE block gates scores the mean excitation ``s_c`` (eq. 3)
  of those channels over calibration images of the *training* split, averaged over the blocks
  that gate it (a channel of a residual stream is gated by every block of its stage). A unit no
  SE block gates (the inner channels of a basic or bottleneck block, for instance) scores what
  its channels can reach of the gated outputs: the excitation-weighted L1 norm of the weights
  that consume it, ``sum_o score(o) * |gamma_o / sigma_o| * ||W[o, c]||_1`` over the outputs
  ``o`` of each consuming layer (with the batch norm after it, if any), ``score(o)`` being the
  score of the unit that holds ``o`` (recursively; the classifier's outputs count 1).
* ``l1``: the L1 norm of each filter that produces the channel (Li et al., "Pruning Filters
  for Efficient ConvNets", ICLR 2017), averaged over the filters of a unit (SE layers left out).
* ``bn``: the magnitude of the batch-norm scale ``|gamma|`` of the channel (Liu et al.,
  "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017), averaged
  over the batch norms of a unit (``l1`` where a unit has none).
* ``random``: a seeded random order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from senet.errors import SenetError
from senet.layers.se import SqueezeExcite
from senet.pruning import CRITERIA
from senet.pruning.groups import GroupedModel

Scores = dict[int, list[float]]  # group id -> score of each unit


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {criterion!r}; criteria: {', '.join(CRITERIA)}")


def _se_paths(model: nn.Module) -> set[str]:
    """Paths of the layers inside SE blocks (gates, not features)."""
    return {f"{p}.{c}" for p, m in model.named_modules() if isinstance(m, SqueezeExcite)
            for c, _ in m.named_modules() if c}


def _filter_l1(module: nn.Module, idx: int) -> float:
    return float(module.weight.detach()[idx].abs().sum())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def l1_scores(grouped: GroupedModel) -> Scores:
    """Mean L1 norm of the filters (output rows) of the convolutions and linear layers in each
    unit; a unit without one scores the L1 norm of the weights that read it."""
    modules = dict(grouped.model.named_modules())
    skip = _se_paths(grouped.model)
    out: Scores = {}
    for g in grouped.prunable():
        scores = []
        for unit in g.units:
            own = [_filter_l1(modules[p], i) for p, s, i in unit.elements
                   if s != "in" and p not in skip and isinstance(modules[p], (nn.Conv2d, nn.Linear))]
            if not own:
                own = [float(_columns(modules[p], i).abs().sum()) for p, s, i in unit.elements
                       if s == "in" and p not in skip and isinstance(modules[p], (nn.Conv2d, nn.Linear))]
            scores.append(_mean(own) or 0.0)
        out[g.id] = scores
    return out


def bn_scores(grouped: GroupedModel) -> Scores:
    """Mean ``|gamma|`` of the batch norms in each unit (``l1`` for a group without them)."""
    modules = dict(grouped.model.named_modules())
    out: Scores = {}
    fallback: Scores | None = None
    for g in grouped.prunable():
        scores = []
        for unit in g.units:
            gammas = [abs(float(modules[p].weight.detach()[i])) for p, _, i in unit.elements
                      if isinstance(modules[p], nn.modules.batchnorm._BatchNorm) and modules[p].affine]
            scores.append(_mean(gammas))
        if any(s is None for s in scores):
            fallback = fallback or l1_scores(grouped)
            scores = fallback[g.id]
        out[g.id] = scores
    return out


def random_scores(grouped: GroupedModel, seed: int) -> Scores:
    g = torch.Generator().manual_seed(seed)
    return {grp.id: torch.rand(grp.size, generator=g, dtype=torch.float64).tolist() for grp in grouped.prunable()}


def _columns(module: nn.Module, idx: int) -> torch.Tensor:
    """The weights of ``module`` that read its input channel ``idx``: ``[out, ...]`` (for a
    grouped convolution, only its group's outputs have such weights; the others read 0)."""
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        return w[:, idx]
    per_group = module.in_channels // module.groups
    group, col = divmod(idx, per_group)
    out = torch.zeros((w.shape[0], *w.shape[2:]), dtype=w.dtype, device=w.device)
    rows = slice(group * (w.shape[0] // module.groups), (group + 1) * (w.shape[0] // module.groups))
    out[rows] = w[rows, col]
    return out


def _bn_after(grouped: GroupedModel) -> dict[str, nn.Module]:
    """Each convolution whose output goes straight into a batch norm -> that batch norm."""
    graph = grouped.graph
    names = {m: p for p, m in grouped.model.named_modules()}
    out = {}
    for module, node in graph.module2node.items():
        if isinstance(module, nn.Conv2d) and module in names:
            nxt = [n.module for n in node.outputs if isinstance(n.module, nn.modules.batchnorm._BatchNorm)]
            if len(nxt) == 1 and len(node.outputs) == 1:
                out[names[module]] = nxt[0]
    return out


def se_scores(grouped: GroupedModel, excitation: Mapping[str, torch.Tensor]) -> Scores:
    """The ``se`` criterion (module docstring); ``excitation``: SE block path -> mean
    excitation per channel over the calibration images (:func:`mean_excitations`)."""
    model = grouped.model
    modules = dict(model.named_modules())
    skip = _se_paths(model)
    gate_of = {f"{p}.fc2": p for p in excitation}  # an SE block gates the channels of its fc2 outputs
    unit_of: dict[tuple[str, int], tuple[int, int]] = {}  # (layer, output channel) -> (group, unit)
    for g in grouped.groups:
        for k, unit in enumerate(g.units):
            for p, s, i in unit.elements:
                if s != "in":
                    unit_of.setdefault((p, i), (g.id, k))
    bn_after = _bn_after(grouped)
    memo: dict[tuple[int, int], float] = {}
    busy: set[tuple[int, int]] = set()

    def out_scale(path: str) -> torch.Tensor | None:
        bn = bn_after.get(path)
        if bn is None or not bn.affine or not bn.track_running_stats:
            return None
        return (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).double()

    def score(key: tuple[int, int]) -> float:
        if key in memo:
            return memo[key]
        g = grouped.groups[key[0]]
        unit = g.units[key[1]]
        gated = [float(excitation[gate_of[p]][i]) for p, s, i in unit.elements if s != "in" and p in gate_of]
        if gated:
            memo[key] = sum(gated) / len(gated)
            return memo[key]
        if key in busy:  # a cycle (not in a feed-forward network): count it neutral
            return 1.0
        busy.add(key)
        total = 0.0
        for p, s, i in unit.elements:
            m = modules[p]
            if s != "in" or p in skip or not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            weights = _columns(m, i).abs().reshape(m.weight.shape[0], -1).sum(1).double()
            scale = out_scale(p)
            if scale is not None:
                weights = weights * scale
            reach = torch.tensor([score(unit_of[p, o]) if (p, o) in unit_of else 1.0 for o in range(len(weights))],
                                 dtype=torch.float64)
            total += float((weights * reach).sum())
        busy.discard(key)
        memo[key] = total
        return total

    return {g.id: [score((g.id, k)) for k in range(g.size)] for g in grouped.prunable()}


def mean_excitations(model: nn.Module, batches: object, device: torch.device | str | None = None,
                     transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Mean excitation ``s`` per channel of every SE block of ``model`` over the images of
    ``batches`` (a float tensor ``[N, C, H, W]`` of model inputs, or an iterable of
    ``(images, labels)``), keyed by the block's module path. A model without SE blocks, or
    whose blocks excite every channel alike on every image (no signal: removed or never-trained
    blocks), is a :class:`SenetError`."""
    from senet.analysis.excitation import record_excitations

    name = getattr(getattr(model, "senet_spec", None), "name", type(model).__name__)
    if not any(isinstance(m, SqueezeExcite) for m in model.modules()):
        raise SenetError(f"criterion 'se' needs SE blocks, and {name} has none (no excitation to rank channels "
                         "by); use --criterion l1, bn or random")
    if isinstance(batches, torch.Tensor):
        exc = record_excitations(model, batches, torch.zeros(len(batches), dtype=torch.long), transform,
                                 device=device)
    else:
        exc = record_excitations(model, batches, transform=transform, device=device)
    if len(exc.labels) == 0:
        raise SenetError("criterion 'se' needs calibration images; none were given")
    blocks = {b.name: b.module for b in exc.blocks}  # the blocks the recording found
    means = {blocks[n]: v.double().mean(0) for n, v in exc.values.items()}
    spread = max(float(v.double().std(0).max()) if len(v) > 1 else 0.0 for v in exc.values.values())
    spread = max(spread, max(float(m.max() - m.min()) for m in means.values()))
    if not math.isfinite(spread) or spread < 1e-6:
        raise SenetError(f"the SE blocks of {name} excite every channel alike on every calibration image (no "
                         "excitation signal: blocks never trained?); criterion 'se' has nothing to rank channels "
                         "by; use --criterion l1, bn or random")
    return means


def score_units(grouped: GroupedModel, criterion: str, *, seed: int = 0,
                excitation: Mapping[str, torch.Tensor] | None = None) -> Scores:
    """Every prunable unit's score under ``criterion`` (higher: more important)."""
    check_criterion(criterion)
    if criterion == "se":
        if excitation is None:
            raise ValueError("criterion 'se' needs the SE blocks' mean excitations (calibration images)")
        return se_scores(grouped, excitation)
    if criterion == "l1":
        return l1_scores(grouped)
    if criterion == "bn":
        return bn_scores(grouped)
    return random_scores(grouped, seed)

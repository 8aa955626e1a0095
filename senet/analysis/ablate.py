"""The paper's ablation studies (Hu et al., TPAMI 2019, section 6, Tables 10-16) as grids of
training runs.

A *study* is a list of *cells*; each cell is the recipe's model with some SE keywords
changed (:class:`senet.layers.SEConfig`), or the recipe model's baseline without SE:

* ``reduction`` (Table 10): ``r`` in 2, 4, 8, 16, 32, and no SE;
* ``squeeze`` (Table 11): global average vs max pooling (eq. 2);
* ``gate`` (Table 12): sigmoid, tanh, ReLU as the excitation's gate (eq. 3);
* ``stages`` (Table 13): SE in one stage at a time, in all stages, in none;
* ``placement`` (Tables 14-15): SE, SE-PRE, SE-POST, SE-Identity, SE_3x3;
* ``nosqueeze`` (Table 16): NoSqueeze (no pooling, 1x1 convolutions) vs SE vs no SE;
* ``se`` (Tables 2, 4-5): the recipe's SE model against its baseline, trained the same way.

Where a study has the baseline without SE, the report gives each SE cell's paired
difference from it over the seeds (same seed, same data order) with a 95% interval.

This module plans a study; :mod:`senet.analysis.ablate_run` trains every cell with the
recipe for each of ``K`` seeds by the ordinary trainer
(:class:`senet.train.Trainer`), each cell x seed in its own run directory
``<out>/<cell>/seed<k>``. A finished run (``summary.json`` present) is reused, an
interrupted one resumed from its checkpoint, and a folder whose ``config.yaml`` differs from
what the grid now asks for is an error naming the differences (results are never silently
overwritten). :mod:`senet.analysis.ablate_report` turns the summaries into the paper-shaped
table and a plot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from senet.errors import ConfigError

#: study name -> (title, the paper's table(s))
STUDIES: dict[str, tuple[str, str]] = {
    "reduction": ("Reduction ratio r", "Table 10"),
    "squeeze": ("Squeeze operator", "Table 11"),
    "gate": ("Excitation gate", "Table 12"),
    "stages": ("SE in one stage at a time", "Table 13"),
    "placement": ("Where the SE block goes in the residual unit", "Tables 14-15"),
    "nosqueeze": ("No squeeze (NoSqueeze)", "Table 16"),
    "se": ("SE block against its baseline", "Tables 2, 4-5"),
}
REDUCTIONS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Cell:
    """One row of a study: ``changes`` are the SE keywords it sets over the recipe's model
    keywords; ``changes is None`` means the baseline model without SE."""

    id: str
    label: str
    changes: dict[str, Any] | None

    @property
    def has_se(self) -> bool:
        return self.changes is not None


NO_SE = Cell("none", "no SE", None)


def check_study(study: str) -> None:
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")


def study_cells(study: str, stages: Sequence[int] = (2, 3, 4)) -> list[Cell]:
    """The paper's grid of ``study``. ``stages``: the model's SE stage numbers (paper
    numbering, as the ``se_stages`` keyword; CIFAR ResNets have 2, 3, 4)."""
    check_study(study)
    if study == "reduction":
        return [Cell(f"r{r}", f"r = {r}", {"reduction": r}) for r in REDUCTIONS] + [NO_SE]
    if study == "squeeze":
        return [Cell("avg", "average pooling", {"squeeze": "avg"}), Cell("max", "max pooling", {"squeeze": "max"})]
    if study == "gate":
        return [Cell(g, name, {"gate": g}) for g, name in (("sigmoid", "sigmoid"), ("tanh", "tanh"), ("relu", "ReLU"))]
    if study == "stages":
        return ([Cell(f"stage{s}", f"SE stage {s}", {"se_stages": [s]}) for s in stages]
                + [Cell("all", "SE all", {"se_stages": None}), NO_SE])
    if study == "placement":
        names = (("standard", "SE"), ("pre", "SE-PRE"), ("post", "SE-POST"), ("identity", "SE-Identity"),
                 ("conv3x3", "SE_3x3"))
        return [Cell(p, name, {"placement": p}) for p, name in names]
    if study == "se":
        return [Cell("se", "SE", {}), NO_SE]
    return [Cell("nosqueeze", "NoSqueeze", {"squeeze": "none"}), Cell("se", "SE", {"squeeze": "avg"}), NO_SE]


# ------------------------------------------------------------------ models of a study
def _meta_model(name: str, kwargs: dict[str, Any]) -> Any:
    import torch

    from senet.models import create_model

    with torch.device("meta"):
        return create_model(name, **kwargs)


def baseline_model(name: str) -> str:
    """The registered model without SE that ``name`` adds SE to (``cifar_se_resnet20`` ->
    ``cifar_resnet20``, ``se_resnet50`` -> ``resnet50``): same family, the name without its
    ``se`` part, no SE blocks. Raises :class:`ConfigError` when there is none."""
    from senet.models import list_models, model_info

    info = model_info(name)
    if not info.has_se:
        return name
    parts = name.split("_")
    candidates = ["_".join(parts[:i] + parts[i + 1:]) for i, part in enumerate(parts) if part == "se"]
    for cand in candidates:
        if cand in list_models() and model_info(cand).family == info.family and not model_info(cand).has_se:
            return cand
    raise ConfigError(f"model {name!r} has no registered baseline without SE (looked for "
                      f"{', '.join(map(repr, candidates)) or 'a name without its se_ part'} in family "
                      f"{info.family!r}); the 'no SE' cell cannot be trained")


def se_variant(name: str) -> str | None:
    """The registered SE model whose baseline is ``name``, if any (for error messages)."""
    from senet.models import list_models, model_info

    for cand in list_models("*se_*"):
        if model_info(cand).has_se and cand != name:
            try:
                if baseline_model(cand) == name:
                    return cand
            except ConfigError:
                continue
    return None


def se_stage_numbers(name: str, kwargs: dict[str, Any] | None = None) -> list[int]:
    """The stages (paper numbering, the ``se_stages`` keyword) in which model ``name`` has SE
    blocks, read from the ``feature_info`` of the model built once on the meta device."""
    from senet.layers.se import SqueezeExcite
    from senet.models import module_stages

    base = {k: v for k, v in (kwargs or {}).items() if k != "se_stages"}
    model = _meta_model(name, {**base, "se_divisor": base.get("se_divisor") or 1})
    stages = module_stages(model)
    found = sorted({stages[p] for p, m in model.named_modules() if isinstance(m, SqueezeExcite)})
    if not found:
        raise ConfigError(f"model {name!r} has no stage that accepts SE blocks (se_stages)")
    return found


@dataclass
class PlannedCell:
    """A cell made concrete for one recipe: the model and its full keywords."""

    cell: Cell
    model: str
    kwargs: dict[str, Any]
    note: str = ""

    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def label(self) -> str:
        return self.cell.label


def _concrete(cell: Cell, model: str, base_kwargs: dict[str, Any], baseline: Callable[[], str]) -> PlannedCell:
    """The model and keywords of ``cell``; a hidden width ``C/r`` that rounds to 0 (16
    channels with ``r = 32``) gets ``se_divisor=1`` (width at least 1), noted in the table."""
    from senet.layers.se import SE_KWARGS

    if not cell.has_se:
        kwargs = {k: v for k, v in base_kwargs.items() if k not in SE_KWARGS}
        return PlannedCell(cell, baseline(), kwargs)
    kwargs = {**base_kwargs}
    for key, value in (cell.changes or {}).items():
        if value is None:
            kwargs.pop(key, None)
        else:
            kwargs[key] = value
    try:
        _meta_model(model, kwargs)
    except ValueError as first:
        if kwargs.get("se_divisor") is not None:
            raise ConfigError(f"cell {cell.id!r} ({cell.label}) cannot be built: {first}") from None
        try:
            _meta_model(model, {**kwargs, "se_divisor": 1})
        except ValueError:
            raise ConfigError(f"cell {cell.id!r} ({cell.label}) cannot be built: {first}") from None
        return PlannedCell(cell, model, {**kwargs, "se_divisor": 1},
                           "C/r < 1 in some block: se_divisor=1 keeps its hidden width at 1")
    return PlannedCell(cell, model, kwargs)


# ------------------------------------------------------------------ plan
@dataclass
class CellRun:
    """One cell trained with one seed: its configuration and its folder (relative to the study's)."""

    cell: PlannedCell
    seed: int
    config: Any  # senet.train.Config

    @property
    def folder(self) -> str:
        return f"{self.cell.id}/seed{self.seed}"


@dataclass
class StudyPlan:
    """A study made concrete for a recipe: cells, seeds and the run of each cell x seed."""

    study: str
    recipe: str
    model: str
    base: Any  # senet.train.Config: the recipe with the user's overrides
    cells: list[PlannedCell]
    seeds: list[int]
    runs: list[CellRun] = field(default_factory=list)

    @property
    def title(self) -> str:
        title, table = STUDIES[self.study]
        return f"{title} ({table})"

    def to_dict(self) -> dict[str, Any]:
        """What ``study.json`` holds."""
        b = self.base
        return {
            "study": self.study, "title": self.title, "recipe": self.recipe, "model": self.model,
            "dataset": b.data.dataset, "epochs": b.schedule.epochs, "train_subset": b.data.train_subset,
            "test_subset": b.data.test_subset, "max_steps": b.run.max_steps, "seeds": self.seeds,
            "cells": [{"id": c.id, "label": c.label, "model": c.model, "kwargs": c.kwargs, "note": c.note}
                      for c in self.cells],
            "runs": [r.folder for r in self.runs],
            "base_config": b.to_dict(),
        }


def plan_study(
    study: str,
    recipe: str | None = None,
    overrides: Sequence[str | dict[str, Any]] = (),
    *,
    epochs: int | None = None,
    seeds: int = 1,
    cells: Sequence[str] | None = None,
) -> StudyPlan:
    """Resolve ``recipe`` with ``overrides`` and ``epochs`` (as ``senet train`` does) and make
    ``study``'s grid concrete for its model. ``seeds``: ``K`` runs per cell with seeds
    ``run.seed, run.seed + 1, ...``. ``cells``: train only these cell ids (default all)."""
    from senet.models import model_info
    from senet.train import resolve
    from senet.train.config import config_from_dict, merge

    check_study(study)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    base = resolve(recipe, overrides, epochs=epochs)
    name, base_kwargs = base.model.name, dict(base.model.kwargs)
    if not model_info(name).has_se:
        variant = se_variant(name)
        hint = f"; use its SE variant {variant!r} (--set model.name={variant})" if variant else ""
        raise ConfigError(f"an ablation varies the SE block, but recipe {base.recipe!r} trains {name!r}, "
                          f"which has no SE blocks{hint}")
    stages = se_stage_numbers(name, base_kwargs) if study == "stages" else ()
    grid = study_cells(study, stages) if stages else study_cells(study)
    if cells:
        known = [c.id for c in grid]
        unknown = [c for c in cells if c not in known]
        if unknown:
            raise ConfigError(f"unknown cell(s) {', '.join(unknown)} for study {study!r}; its cells: {', '.join(known)}")
        grid = [c for c in grid if c.id in cells]
    planned = [_concrete(c, name, base_kwargs, lambda: baseline_model(name)) for c in grid]
    seed_list = [base.run.seed + k for k in range(seeds)]
    plan = StudyPlan(study, base.recipe, name, base, planned, seed_list)
    # seed by seed, every cell of a seed before the next seed: a study stopped part way holds
    # complete pairs (each cell with the same seeds) for the paired comparison
    for seed in seed_list:
        for pc in planned:
            values = base.to_dict()
            values["model"] = {"name": pc.model, "kwargs": pc.kwargs}
            cfg = config_from_dict(merge(values, {"run": {"seed": seed}}))
            plan.runs.append(CellRun(pc, seed, cfg))
    return plan


def safe_name(text: str) -> str:
    """``text`` as a folder name (for default output folders)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")

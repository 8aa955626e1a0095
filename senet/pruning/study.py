"""Is the SE excitation a better pruning signal than the usual ones? A measured study of the
paper's suggestion (section 7): one trained model, pruned to each FLOPs target by each
criterion, every pruned network fine-tuned with the same recipe and seeds, then compared.

Cells are ``target x criterion``; each runs once per seed ``k`` in ``<out>/<cell>/seed<k>/``:

* ``pruned.safetensors``: the base model pruned (:func:`senet.pruning.prune`; the ``se``
  criterion's calibration images are drawn from the training split with seed ``k``, the
  ``random`` criterion's order too), and ``prune.json``: what pruning did and the pruned
  network's test error before fine-tuning;
* ``finetune/``: an ordinary run of the fine-tuning recipe started from the pruned file
  (``model.init``), with seed ``k``: the same data order and augmentation for every criterion.

Every criterion prunes a target's layers to the same widths (:mod:`senet.pruning.core`), so each
target's speed-up is measured once (``speed-flopsNN.json``: the unpruned against the pruned
network, eager PyTorch and ONNX, batch 1 and 64, interleaved rounds, :mod:`senet.pruning.speed`).
As ``senet ablate``, the study is resumable: what is finished is reused, an interrupted
fine-tune resumed, a folder holding something else refused. The report (:mod:`senet.pruning.report`)
pairs the seeds: ``se`` minus ``l1`` and minus ``random``, with 95% t intervals.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senet.errors import ConfigError, SenetError
from senet.pruning import CALIBRATION, STUDY_CRITERIA, TARGETS
from senet.pruning.criteria import check_criterion

STUDY = "prune"
FINETUNE_RECIPE = "finetune"
PRUNED, RECORD, FINETUNE = "pruned.safetensors", "prune.json", "finetune"


def target_id(target: float) -> str:
    return f"flops{round(100 * target):d}"


@dataclass(frozen=True)
class PruneCell:
    """One FLOPs target pruned by one criterion."""

    target: float
    criterion: str

    @property
    def id(self) -> str:
        return f"{target_id(self.target)}-{self.criterion}"

    @property
    def label(self) -> str:
        return f"{self.criterion}, {100 * self.target:g}% FLOPs"


@dataclass
class PruneRun:
    """One cell with one seed: the fine-tuning run's configuration and the folder (relative)."""

    cell: PruneCell
    seed: int
    config: Any  # senet.train.Config of the fine-tuning run

    @property
    def folder(self) -> str:
        return f"{self.cell.id}/seed{self.seed}"


@dataclass
class PruneStudyPlan:
    """The study made concrete: the base model, cells, seeds and each run's fine-tuning config."""

    base: str  # weight file of the trained model
    base_run: str | None
    model: str
    dataset: str
    data: str | None
    targets: list[float]
    criteria: list[str]
    seeds: list[int]
    calibration: int
    recipe: str
    finetune: Any  # the fine-tuning Config (without model.init and seed)
    speed_batches: list[int] = field(default_factory=lambda: [1, 64])
    speed_rounds: int = 11
    onnx: bool = True
    runs: list[PruneRun] = field(default_factory=list)
    study: str = STUDY

    @property
    def speed_keys(self) -> list[str]:
        """The speed-up measurements of each target: ``eager_b1``, ``onnx_b64`` ..."""
        engines = ["eager", "onnx"] if self.onnx else ["eager"]
        return [f"{e}_b{b}" for e in engines for b in self.speed_batches]

    @property
    def cells(self) -> list[PruneCell]:
        return [PruneCell(t, c) for t in self.targets for c in self.criteria]

    @property
    def title(self) -> str:
        return "SE-guided pruning against L1-norm and random pruning (paper section 7)"

    def to_dict(self) -> dict[str, Any]:
        """What ``study.json`` holds."""
        f = self.finetune
        return {"study": self.study, "title": self.title, "model": self.model, "base": self.base,
                "base_run": self.base_run, "dataset": self.dataset, "data": self.data, "targets": self.targets,
                "criteria": self.criteria, "seeds": self.seeds, "calibration_images": self.calibration,
                "recipe": self.recipe, "finetune_epochs": f.schedule.epochs, "train_subset": f.data.train_subset,
                "test_subset": f.data.test_subset, "max_steps": f.run.max_steps,
                "speed": {"batches": self.speed_batches, "rounds": self.speed_rounds, "onnx": self.onnx},
                "cells": [{"id": c.id, "label": c.label, "target": c.target, "criterion": c.criterion}
                          for c in self.cells],
                "runs": [r.folder for r in self.runs], "finetune_config": f.to_dict()}


def plan_prune_study(
    base: str | Path,
    out: str | Path,
    *,
    targets: Sequence[float] = TARGETS,
    criteria: Sequence[str] = STUDY_CRITERIA,
    seeds: int = 3,
    recipe: str | None = None,
    overrides: Sequence[str | dict[str, Any]] = (),
    epochs: int | None = None,
    calibration: int = CALIBRATION,
    dataset: str | None = None,
    data: str | None = None,
    speed_batches: Sequence[int] = (1, 64),
    speed_rounds: int = 11,
    onnx: bool = True,
) -> PruneStudyPlan:
    """The study of ``base`` (a run folder written by ``senet train``, or a senet weight file
    with ``dataset``/``data``): each FLOPs fraction of ``targets`` x each of ``criteria``,
    ``seeds`` seeds (``run.seed`` of the fine-tuning config, then +1 ...), fine-tuned with
    ``recipe`` (default ``finetune``) resolved with ``overrides`` and ``epochs`` as ``senet
    train`` resolves them; the data are the base run's unless given."""
    from senet.models import read_metadata
    from senet.pruning.core import check_target
    from senet.train import RunDir, resolve
    from senet.train.config import config_from_dict, merge
    from senet.train.rundir import WEIGHTS

    base = Path(base)
    base_run = None
    if base.is_dir():
        run = RunDir.open(base)
        weights = run.file(WEIGHTS)
        if not weights.is_file():
            raise SenetError(f"{base} has no {WEIGHTS} yet (the run has not finished)")
        cfg = run.config()
        dataset = dataset or cfg.data.dataset
        data = data if data is not None else cfg.data.path
        base_run, base = str(base), weights
    elif not base.is_file():
        raise SenetError(f"{base}: no such run folder or weight file")
    dataset = dataset or "cifar10"
    if not targets or not criteria:
        raise ConfigError("a pruning study needs at least one target and one criterion")
    for t in targets:
        check_target(t, None)
    if any(t == 1 for t in targets):
        raise ConfigError("a FLOPs target of 1 prunes nothing; give fractions below 1 (e.g. 0.7,0.5)")
    for c in criteria:
        check_criterion(c)
    if len(set(targets)) != len(targets) or len(set(criteria)) != len(criteria):
        raise ConfigError("targets and criteria must not repeat")
    if seeds < 1 or calibration < 1 or speed_rounds < 1 or not speed_batches or min(speed_batches) < 1:
        raise ConfigError("seeds, calibration images, speed rounds and batch sizes must be >= 1")
    model = read_metadata(base).model
    if model is None:
        raise SenetError(f"{base} is not a senet weight file naming its model (convert it with senet convert)")
    data_values = {"data": {"dataset": dataset, "path": data}}
    finetune = resolve(recipe or FINETUNE_RECIPE, [data_values, *overrides], epochs=epochs)
    if finetune.model.init:
        raise ConfigError("model.init is set by the study (each run starts from its pruned file)")
    plan = PruneStudyPlan(str(base), base_run, model, dataset, data, [float(t) for t in targets], list(criteria),
                          [finetune.run.seed + k for k in range(seeds)], calibration, finetune.recipe, finetune,
                          [int(b) for b in speed_batches], speed_rounds, onnx)
    out = Path(out)
    for seed in plan.seeds:  # seed by seed: a study stopped part way holds complete pairs
        for cell in plan.cells:
            values = finetune.to_dict()
            run = PruneRun(cell, seed, None)
            values["model"] = {"name": model, "kwargs": {}, "init": str(out / run.folder / PRUNED)}
            run.config = config_from_dict(merge(values, {"run": {"seed": seed}}))
            plan.runs.append(run)
    return plan


@dataclass
class PruneOutcome:
    """What became of one cell x seed: the pruning record and the fine-tuning run."""

    run: PruneRun
    record: dict[str, Any]
    status: str  # of the fine-tuning: trained, resumed, reused, diverged
    summary: dict[str, Any] | None
    error: str = ""


def _read_record(path: Path) -> dict[str, Any] | None:
    from senet.utils.text import read_json

    if not path.is_file():
        return None
    record = read_json(path, dict, what="a pruning record")
    err = record.get("test_top1_err")
    if not isinstance(err, (int, float)) or not 0 <= err <= 1:
        raise SenetError(f"{path}: test_top1_err must be an error rate in [0, 1]; delete the file to prune again")
    return record


class _Inputs:
    """The base model and the data, loaded once and only when a run needs them."""

    def __init__(self, plan: PruneStudyPlan, log: Callable[[str], None]) -> None:
        self.plan, self.log = plan, log
        self._base = self._train = self._test = None

    @property
    def base(self) -> Any:
        if self._base is None:
            from senet.models import create_model

            self._base = create_model(pretrained=self.plan.base).eval()
        return self._base

    @property
    def train(self) -> Any:
        if self._train is None:
            from senet.data import load_split

            self._train = load_split(self.plan.dataset, "train", data=self.plan.data)
        return self._train

    @property
    def test(self) -> Any:
        if self._test is None:
            from senet.data import load_split
            from senet.train.data import subset

            self._test = subset(load_split(self.plan.dataset, "test", data=self.plan.data),
                                self.plan.finetune.data.test_subset)
        return self._test


def prune_one(plan: PruneStudyPlan, run: PruneRun, folder: Path, inputs: _Inputs) -> dict[str, Any]:
    """Prune the base model for ``run`` into ``folder``; returns (and writes) its record."""
    from senet.models import save_weights
    from senet.pruning.core import prune
    from senet.pruning.data import calibration, stored_transform, test_error
    from senet.utils.atomic import write_text

    t0 = time.perf_counter()
    model = copy.deepcopy(inputs.base)
    images = transform = None
    if run.cell.criterion == "se":
        images = calibration(inputs.train, plan.calibration, run.seed)
        transform = stored_transform(model, inputs.train)
    result = prune(model, flops=run.cell.target, criterion=run.cell.criterion, calibration=images,
                   transform=transform, seed=run.seed)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from senet.errors import fs_error

        raise fs_error(e, folder, "create the run's folder") from None
    save_weights(model, folder / PRUNED)
    before = test_error(model, inputs.test)
    record = {**result.summary(), "seed": run.seed, "cell": run.cell.id,
              "test_top1_err": before["top1_err"], "test_top5_err": before["top5_err"], "test_loss": before["loss"],
              "test_images": len(inputs.test.labels), "calibration_images": plan.calibration if images is not None else 0,
              "seconds": time.perf_counter() - t0}
    write_text(folder / RECORD, json.dumps(record, indent=2) + "\n")
    return record


BASE = "base.json"


def base_record(plan: PruneStudyPlan, out: Path, inputs: _Inputs | None = None) -> dict[str, Any]:
    """The unpruned model's params, FLOPs and test error (``base.json``, measured once)."""
    from senet.complexity import complexity
    from senet.pruning.data import test_error
    from senet.utils.atomic import write_text
    from senet.utils.text import read_json

    path = out / BASE
    if path.is_file():
        return read_json(path, dict, what="the base model's record")
    inputs = inputs or _Inputs(plan, print)
    model = inputs.base
    cost = complexity(model, tuple(model.pretrained_cfg["input_size"]))
    err = test_error(model, inputs.test)
    record = {"model": plan.model, "weights": plan.base, "params": cost.params, "flops": cost.flops,
              "test_top1_err": err["top1_err"], "test_top5_err": err["top5_err"], "test_images": len(inputs.test.labels)}
    write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def speed_file(target: float) -> str:
    return f"speed-{target_id(target)}.json"


def run_prune_study(
    plan: PruneStudyPlan,
    out: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[PruneOutcome], dict[float, dict[str, Any]]]:
    """Prune and fine-tune every cell x seed of ``plan`` not yet done under ``out``, then
    measure each target's speed-up; returns the outcomes (plan order) and the speed-ups."""
    from senet.analysis.ablate_run import check_out, run_state, train_run, write_study
    from senet.train.rundir import FRESH
    from senet.utils.atomic import write_text

    out = Path(out)
    check_out(out, plan)
    states = [run_state(out / r.folder / FINETUNE, r.config) for r in plan.runs]  # errors before any work
    records = [_read_record(out / r.folder / RECORD) for r in plan.runs]
    write_study(out, plan)
    inputs = _Inputs(plan, log)
    outcomes = []
    n = len(plan.runs)
    for i, (r, state, record) in enumerate(zip(plan.runs, states, records), 1):
        head = f"[{i}/{n}] {r.cell.label} seed {r.seed}"
        folder = out / r.folder
        if record is None or not (folder / PRUNED).is_file():
            if state != FRESH:
                raise SenetError(f"{folder / FINETUNE} exists but its pruned network or {RECORD} does not; "
                                 "delete the folder to run it again")
            record = prune_one(plan, r, folder, inputs)
            log(f"{head}: pruned to {record['flops_kept']:.3f} of the FLOPs, {record['params_kept']:.3f} of the "
                f"params; test error before fine-tuning {100 * record['test_top1_err']:.2f}%")
        status, summary, error = train_run(folder / FINETUNE, r.config, state, head=head, progress=progress, log=log)
        outcomes.append(PruneOutcome(r, record, status, summary, error))
    if outcomes:
        base_record(plan, out, inputs)
    speeds = {}
    for target in plan.targets:
        path = out / speed_file(target)
        if path.is_file():
            from senet.utils.text import read_json

            speed = read_json(path, dict, what="a speed-up measurement")
            if all(k in speed for k in plan.speed_keys):  # else measured again with what the plan asks now
                speeds[target] = speed
                continue
        done = next((o for o in outcomes if o.run.cell.target == target), None)
        if done is None:
            continue
        from senet.models import create_model
        from senet.pruning.speed import measure_speedup

        log(f"speed-up at {100 * target:g}% FLOPs ({plan.speed_rounds} interleaved rounds)")
        pruned = create_model(pretrained=out / done.run.folder / PRUNED)
        speed = measure_speedup(copy.deepcopy(inputs.base), pruned, tuple(done.record["input_size"]),
                                batches=plan.speed_batches, rounds=plan.speed_rounds, onnx=plan.onnx, log=log)
        write_text(path, json.dumps(speed, indent=2) + "\n")
        speeds[target] = speed
    return outcomes, speeds

"""Running a planned ablation study (:func:`senet.analysis.ablate.plan_study`): every cell x
seed through the ordinary trainer, in its own run folder ``<out>/<cell>/seed<k>``.

Finished runs (``summary.json`` present) are reused, interrupted ones resumed from their
checkpoint (:meth:`RunDir.state <senet.train.rundir.RunDir.state>`, as ``senet train
--resume`` and the GPU session kit decide), and a folder whose ``config.yaml`` differs from
what the grid now asks for is an error naming the differences: results are never silently
overwritten. Each run folder is owned (locked) by the process training it, so a second
``senet ablate`` of the same study is refused at the cell the first is training; a cell that
fails before its first checkpoint leaves no folder behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senet.analysis.ablate import CellRun, StudyPlan
from senet.errors import SenetError
from senet.train.config import Config, config_differences
from senet.train.rundir import CONFIG, FINISHED, FOREIGN, FRESH, PARTIAL, RunDir
from senet.utils.text import read_json

STUDY_JSON = "study.json"


def run_state(path: Path, cfg: Config) -> str:
    """:meth:`RunDir.state <senet.train.rundir.RunDir.state>` of the run folder ``path`` that
    should hold a run of configuration ``cfg``: ``fresh``, ``partial`` or ``finished`` (its
    summary checked now, before anything trains). A folder that is not a run, or holds a run
    of another configuration (other than where it runs), is a :class:`SenetError` naming it."""
    run = RunDir(path)
    state = run.state()
    if state == FRESH:
        return state
    if state == FOREIGN:
        raise SenetError(f"{path} holds files but no {CONFIG}; it is not a run of this study "
                         f"(move it away or choose another --out)")
    diffs = config_differences(run.config().to_dict(), cfg.to_dict())
    if diffs:
        raise SenetError(f"{path} holds a run with a different configuration than the study now asks for "
                         f"({'; '.join(diffs[:5])}{'; ...' if len(diffs) > 5 else ''}); "
                         f"choose another --out, or delete that folder to retrain it")
    if state == FINISHED:
        run.summary()  # a damaged one is named now, before any cell trains
    return state


@dataclass
class RunOutcome:
    """What became of one cell x seed: ``status`` is ``trained``, ``resumed``, ``reused`` or ``diverged``."""

    run: CellRun
    status: str
    summary: dict[str, Any] | None
    error: str = ""


def check_out(out: Path, plan: StudyPlan) -> None:
    """Refuse a folder that holds another study (its ``study.json``)."""
    existing = out / STUDY_JSON
    if existing.is_file():
        try:
            old = read_json(existing, dict, what="a study's plan")
        except SenetError as e:
            raise SenetError(f"{e}; move it away or choose another --out") from None
        if old.get("study") != plan.study or old.get("model") != plan.model:
            raise SenetError(f"{out} holds the {old.get('study')!r} study of {old.get('model')!r}, not the "
                             f"{plan.study!r} study of {plan.model!r}; choose another --out")


def write_study(out: Path, plan: StudyPlan) -> None:
    from senet.errors import fs_error
    from senet.utils.atomic import write_text

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fs_error(e, out, "create the study folder") from None
    write_text(out / STUDY_JSON, json.dumps(plan.to_dict(), indent=2) + "\n")


def _pct(summary: dict[str, Any]) -> str:
    return f"top-1 {100 * summary['test_top1_err']:.2f}%  top-5 {100 * summary['test_top5_err']:.2f}%"


def run_study(
    plan: StudyPlan,
    out: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> list[RunOutcome]:
    """Train every cell x seed of ``plan`` not yet finished under ``out``; returns one
    :class:`RunOutcome` per run, in plan order. Checks every folder before training any."""
    from senet.train import Trainer, TrainingDiverged

    out = Path(out)
    check_out(out, plan)
    states = [run_state(out / r.folder, r.config) for r in plan.runs]  # all errors before any training
    write_study(out, plan)
    outcomes: list[RunOutcome] = []
    n = len(plan.runs)
    for i, (r, state) in enumerate(zip(plan.runs, states), 1):
        head = f"[{i}/{n}] {r.cell.label} ({r.cell.id}) seed {r.seed}"
        path = out / r.folder
        if state == FINISHED:
            summary = RunDir(path).summary()
            log(f"{head}: finished earlier: {_pct(summary)}")
            outcomes.append(RunOutcome(r, "reused", summary))
            continue
        # owned while it trains; a failure before its first checkpoint removes a folder made here
        with RunDir.open(path).acquire() if state == PARTIAL else RunDir.create(path, r.config) as run:
            log(f"{head}: {'resuming' if state == PARTIAL else 'training'} -> {path}")
            t0 = time.perf_counter()
            try:
                summary = Trainer(r.config, run, resume=state == PARTIAL, progress=progress, log=log).fit()
            except TrainingDiverged as e:
                run.log_event(f"stopped: {e}")
                log(f"{head}: diverged: {e}")
                outcomes.append(RunOutcome(r, "diverged", None, str(e)))
                continue
            except KeyboardInterrupt:
                run.log_event("interrupted")
                raise
        log(f"{head}: {_pct(summary)}  ({time.perf_counter() - t0:.0f} s)")
        outcomes.append(RunOutcome(r, "resumed" if state == PARTIAL else "trained", summary))
    return outcomes

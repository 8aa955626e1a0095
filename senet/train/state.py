"""A run's training state as its checkpoint holds it, and where a resumed run starts from.

A checkpoint (the file: :mod:`senet.train.checkpoint`) holds everything an uninterrupted run
would still have in memory: the configuration, the model, optimizer and grad-scaler states,
every RNG state, the position (``epoch``, ``step``: the next step to run) in the data order
(itself a function of the seed and the epoch, :class:`senet.data.EpochOrder`, recorded by its
``n``, ``batch_size`` and ``seed``), the partial epoch's running sums (the *meters*), the
finished epochs' ``metrics.csv`` rows (``history``), the wall seconds of earlier sessions
(``elapsed``) and the group size it was written by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from senet.errors import SenetError
from senet.train import distributed as dist
from senet.train.checkpoint import load_latest
from senet.train.config import Config, config_differences
from senet.train.rundir import CHECKPOINT, CONFIG, METRICS_CSV, PREVIOUS, RunDir


def zero_meters(device: torch.device) -> dict[str, Any]:
    """The running sums of an epoch not started: loss sum and correct count (on ``device``, so
    a step adds to them without a host sync), images, training seconds."""
    return {"loss_sum": torch.zeros((), dtype=torch.float64, device=device),
            "correct": torch.zeros((), dtype=torch.int64, device=device),
            "count": 0, "train_seconds": 0.0}


def group_meters(meters: dict[str, Any], device: torch.device, *, distributed: bool) -> dict[str, Any]:
    """``meters`` summed over the process group (a collective: every rank calls it); a
    process's own seconds stand for the group's."""
    if not distributed:
        return dict(meters)
    totals = torch.stack([meters["loss_sum"], meters["correct"].double(),
                          torch.tensor(float(meters["count"]), dtype=torch.float64, device=device)])
    dist.all_sum(totals)
    return {"loss_sum": totals[0], "correct": totals[1].round().long(), "count": int(totals[2]),
            "train_seconds": meters["train_seconds"]}


def restored_meters(saved: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The checkpoint's (the group's) meters back on ``device``."""
    return {"loss_sum": saved["loss_sum"].to(device), "correct": saved["correct"].to(device),
            "count": int(saved["count"]), "train_seconds": float(saved["train_seconds"])}


def order_record(order: Any) -> dict[str, int]:
    """What a checkpoint records of the data order (an :class:`~senet.data.EpochOrder`)."""
    return {"n": order.n, "batch_size": order.batch_size, "seed": order.seed}


def resume_point(run: RunDir, cfg: Config, order: Any) -> tuple[dict[str, Any] | None, Path | None, str | None]:
    """``(state, the file it came from, why the newest checkpoint was passed over)`` to resume
    ``run`` of configuration ``cfg`` from: the newest checkpoint that verifies, else the
    previous one. ``(None, None, None)`` for a run with no checkpoint yet. A run is never
    silently started again: metrics but no checkpoint, no usable checkpoint, a checkpoint of
    another configuration or of another dataset are each a :class:`SenetError`."""
    state, path, problem = load_latest(run.file(CHECKPOINT), run.file(PREVIOUS))
    if state is None:
        if run.file(METRICS_CSV).exists():
            raise SenetError(f"{run.path} has {METRICS_CSV} but neither {CHECKPOINT} nor {PREVIOUS}; refusing "
                             "to start it again from scratch (move the folder away to do that)")
        return None, None, None
    if config_differences(state["config"], cfg.to_dict()):
        raise SenetError(f"{run.file(CHECKPOINT)} was written with a different configuration than "
                         f"{run.file(CONFIG)}; refusing to resume")
    saved = state["data_order"]
    if saved != order_record(order):
        raise SenetError(f"the dataset changed since the checkpoint was written ({saved['n']} training "
                         f"images then, {order.n} now); refusing to resume")
    return state, path, problem

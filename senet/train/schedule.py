"""Learning-rate schedules as pure functions of the step: resuming needs no scheduler state."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from senet.train.config import OptimConfig, ScheduleConfig


def scaled_lr(optim: OptimConfig, batch_size: int) -> float:
    """The base learning rate for a global batch of ``batch_size`` under the recipe's rule
    (``optim.lr_scaling``): linear scaling keeps ``lr / batch`` constant."""
    if optim.lr_scaling == "none":
        return optim.lr
    ratio = batch_size / optim.lr_base_batch
    return optim.lr * (ratio if optim.lr_scaling == "linear" else ratio**0.5)


def plateau_drops(losses: Sequence[float], patience: int, threshold: float) -> int:
    """How many times a plateau schedule has divided the learning rate after the evaluated
    epochs' losses ``losses`` (PyTorch's ``ReduceLROnPlateau`` rule, mode ``min``, relative
    threshold, no cooldown): an epoch improves if its loss is below ``best * (1 - threshold)``;
    after ``patience`` epochs in a row without improvement the rate drops and the count restarts."""
    drops, best, bad = 0, math.inf, 0
    for loss in losses:
        if loss < best * (1.0 - threshold):  # best starts at inf: the first epoch improves
            best, bad = loss, 0
        else:
            bad += 1
            if bad >= patience:
                drops, bad = drops + 1, 0
    return drops


def lr_at(cfg: ScheduleConfig, base_lr: float, step: int, steps_per_epoch: int, plateaus: int = 0) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of a run with ``steps_per_epoch``;
    ``plateaus`` is :func:`plateau_drops` of the run so far (``plateau`` schedule only)."""
    t = step / steps_per_epoch  # epochs done before this step, fractional
    if t < cfg.warmup_epochs:
        if cfg.warmup == "constant":
            return cfg.warmup_lr
        return cfg.warmup_lr + (base_lr - cfg.warmup_lr) * t / cfg.warmup_epochs
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "plateau":
        return base_lr * cfg.gamma**plateaus
    if cfg.name == "multistep":
        return base_lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, t + 1e-9)
    if cfg.name == "step":
        return base_lr * cfg.gamma ** math.floor(t / cfg.step_size + 1e-9)
    # cosine / linear decay over the part of the run after the warm-up
    span = cfg.epochs - cfg.warmup_epochs
    frac = min(1.0, (t - cfg.warmup_epochs) / span) if span > 0 else 1.0
    if cfg.name == "cosine":
        return cfg.final_lr + (base_lr - cfg.final_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return base_lr + (cfg.final_lr - base_lr) * frac


def plateaus_so_far(cfg: ScheduleConfig, history: Sequence[dict[str, float]]) -> int:
    """:func:`plateau_drops` of a run whose finished epochs' metrics are ``history`` (its
    ``metrics.csv`` rows): the test losses of whole epochs; 0 for other schedules."""
    if cfg.name != "plateau":
        return 0
    losses = [row["test_loss"] for row in history if "test_loss" in row and row["epoch"] == int(row["epoch"])]
    return plateau_drops(losses, cfg.patience, cfg.threshold)

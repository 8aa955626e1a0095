"""Learning-rate schedules as pure functions of the step: resuming needs no scheduler state."""

from __future__ import annotations

import bisect
import math

from senet.train.config import ScheduleConfig


def lr_at(cfg: ScheduleConfig, base_lr: float, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of a run with ``steps_per_epoch``."""
    t = step / steps_per_epoch  # epochs done before this step, fractional
    if t < cfg.warmup_epochs:
        if cfg.warmup == "constant":
            return cfg.warmup_lr
        return cfg.warmup_lr + (base_lr - cfg.warmup_lr) * t / cfg.warmup_epochs
    if cfg.name == "constant":
        return base_lr
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

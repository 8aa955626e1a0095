"""The NaN watchdog: nothing non-finite is kept (README, "Failure behaviour").

After every optimizer step the trainer records the step's loss and a flag saying whether any
weight (parameters and BN statistics) became NaN or infinite. Both stay on the device, so a
GPU is not waited for per step; the trainer looks at the recorded steps every few steps and
always before it writes anything (a checkpoint, ``metrics.csv``, the weight file), so that
no file ever holds a state from after the run diverged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from senet.errors import SenetError
from senet.train import distributed as dist
from senet.utils.finite import float_tensors, nonfinite_flag


class TrainingDiverged(SenetError):
    """The loss or the weights became NaN or infinite."""


class Watchdog:
    """The steps of ``model``'s training not yet looked at; ``checkpoint`` is named in the error
    (whether the last one is from before the divergence)."""

    def __init__(self, model: nn.Module, steps_per_epoch: int, checkpoint: Path) -> None:
        self.weights = float_tensors(model)  # the same tensors all along: load_state_dict copies in place
        self.steps_per_epoch = steps_per_epoch
        self.checkpoint = checkpoint
        self._unchecked: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (global step, loss, weights flag)

    @property
    def pending(self) -> int:
        """How many steps are recorded but not looked at yet."""
        return len(self._unchecked)

    def record(self, global_step: int, loss: torch.Tensor) -> None:
        """Step ``global_step`` has run with mean loss ``loss`` (on the device, not waited for)."""
        self._unchecked.append((global_step, loss, nonfinite_flag(self.weights)))

    def clear(self) -> None:
        self._unchecked.clear()

    def check(self, seen: Callable[[list[int], list[float]], None] | None = None) -> None:
        """Look at the recorded steps (a collective: NaN on one process is NaN on all); ``seen``
        gets their global steps and losses summed over the group, now on the host, before a
        :class:`TrainingDiverged` names the first bad step."""
        window = self._unchecked
        if not window:
            return
        steps = [gstep for gstep, _, _ in window]
        values = torch.stack([torch.stack([loss.float() for _, loss, _ in window]),
                              torch.stack([flag for _, _, flag in window])])
        values = dist.all_sum(values).cpu()
        window.clear()
        losses, flags = values[0], values[1]
        if seen is not None:
            seen(steps, losses.tolist())
        bad = [i for i in range(len(steps)) if not math.isfinite(float(losses[i])) or float(flags[i]) != 0]
        if not bad:
            return
        i = bad[0]
        gstep = steps[i]
        epoch, step = divmod(gstep, self.steps_per_epoch)
        where = (f"the last checkpoint {self.checkpoint} is from before it" if self.checkpoint.exists()
                 else "no checkpoint was written")
        at = f"at epoch {epoch + 1} step {step + 1} (global step {gstep + 1})"
        if not math.isfinite(float(losses[i])):
            what = f"the training loss became {float(losses[i])} {at}"
        else:
            what = f"the weights became NaN or infinite in the optimizer step {at} (its loss was finite)"
        raise TrainingDiverged(
            f"{what}; stopping without saving these weights ({where}); try a lower optim.lr or run.precision=fp32"
        )

"""The trainer: SGD over the batches of a data source (:mod:`senet.train.sources`: CIFAR
in memory, spec section 5; ImageNet streamed by DataLoader workers, section 6), on one
process or on a ``torchrun`` group with DistributedDataParallel.

It reads in the order it runs: :meth:`Trainer.__init__` sets up (device and process group,
data, model, optimizer, then the checkpoint to resume from), :meth:`Trainer.fit` runs the loop
(a step, a look at the steps not yet checked, a checkpoint when due, the end of an epoch:
test, checkpoint, report) and writes the weights and ``summary.json``. The pieces live
beside it: the device and the process group (:func:`senet.train.distributed.join`), what a
checkpoint holds and where a resume starts (:mod:`senet.train.state`), the NaN watchdog
(:mod:`senet.train.watchdog`), the learning rate (:mod:`senet.train.schedule`), the run
folder's files (:mod:`senet.train.rundir`) and experiment tracking
(:mod:`senet.train.tracking`).

Every random draw of a step comes from state that the checkpoint holds or that is a function
of ``(seed, epoch, step)``: the data order (:class:`senet.data.EpochOrder`), the augmentation
(seeded per step or per image) and the model's own draws (dropout, Shake-Shake: the global
torch RNG, saved in the checkpoint). So a single-process run resumed from any checkpoint on
the CPU ends with the same weights, bit for bit, as one that was never interrupted.

Nothing non-finite is kept: the loss of every step and the weights after it are checked
(:class:`~senet.train.watchdog.Watchdog`), on a GPU every few steps, and always before
anything is written.

Distributed: ``data.batch_size`` is the global batch; each of the ``W`` processes takes a
contiguous ``1/W`` of it and splits that into ``run.accum_steps`` micro-batches; gradients
are accumulated locally (``no_sync``) and averaged over the group once per optimizer step,
so ``W`` processes train like one process with ``W * accum_steps`` micro-batches. Only rank 0
writes to the run directory; metrics are summed over the group. A checkpoint holds the
unwrapped model, so a run resumes on any number of processes.

Experiment tracking (TensorBoard, MLflow) gets what ``metrics.csv`` gets, when it gets it,
and every step's loss when the host looks at it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from senet.complexity import complexity
from senet.errors import SenetError
from senet.layers.se import SqueezeExcite
from senet.models import create_model
from senet.train import distributed as dist
from senet.train.checkpoint import rng_states, save_checkpoint, set_rng_states
from senet.train.config import Config, check_work_sizes
from senet.train.evaluate import autocast_for, errors_from_sums, eval_sums
from senet.train.rundir import CHECKPOINT, CONFIG, CURVES, METRICS, METRICS_CSV, PREVIOUS, SUMMARY, WEIGHTS, RunDir
from senet.train.schedule import lr_at, plateaus_so_far, scaled_lr
from senet.train.sources import make_source
from senet.train.state import group_meters, order_record, restored_meters, resume_point, zero_meters
from senet.train.tracking import Trackers, open_trackers
from senet.train.watchdog import Watchdog
from senet.utils.limits import check_input_size
from senet.utils.seeding import derive_seed, seed_everything

#: steps between looks at the loss and weight checks on a GPU (each look waits for the GPU);
#: on the CPU every step is looked at. A save always looks first.
GPU_CHECK_EVERY = 25
PLOT_EVERY_S = 60.0  # seconds between redraws of curves.png (the last epoch always draws)


class Trainer:
    """Train ``cfg`` into the run directory ``run``; ``resume=True`` continues from its checkpoint.

    Started by ``torchrun`` (``WORLD_SIZE > 1``), the trainer joins the process group itself.
    """

    def __init__(
        self,
        cfg: Config,
        run: RunDir,
        *,
        resume: bool = False,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg, self.run, self.resume = cfg, run, resume
        self.env = dist.dist_env()
        self.is_main = self.env.is_main
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.is_main
        self._log = log or (lambda text: print(text, flush=True))

        # where it runs: the device, the process group, how the global batch splits over it
        r = cfg.run
        if r.threads:
            torch.set_num_threads(r.threads)
        self.device = dist.join(self.env, r)
        if r.sync_bn and self.env.distributed and self.device.type != "cuda":
            raise SenetError("run.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
        share = cfg.data.batch_size // self.env.world_size
        if cfg.data.batch_size % self.env.world_size or share % r.accum_steps:
            raise SenetError(f"the global batch data.batch_size={cfg.data.batch_size} must split evenly over "
                             f"{self.env.world_size} process(es) x run.accum_steps={r.accum_steps} micro-batches")
        check_work_sizes(cfg, self.env.world_size)
        self.precision = r.precision if r.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        # channels_last by default on every device: 1.2-1.4x the images/s of NCHW for CIFAR ResNets
        # on a 2-core CPU too (benchmarks/train_speed.py, docs/results/train-speed)
        self.channels_last = r.channels_last
        seed_everything(r.seed)

        # the data, the model (wrapped for the group, compiled if asked), the optimizer
        self.source = make_source(cfg, self.device, self.env, channels_last=self.channels_last)
        if self.source.skipped and self.is_main:
            run.write_skipped(self.source.skipped)
        self.model = create_model(cfg.model.name, num_classes=len(self.source.classes), **cfg.model.kwargs)
        check_input_size(self.model, (getattr(self.model, "in_chans", 3), cfg.data.crop, cfg.data.crop), "data.crop")
        _place(self.model, self.device, channels_last=self.channels_last)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        train_module: nn.Module = self.model
        if self.env.distributed:
            if r.sync_bn:
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = train_module = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward = torch.compile(train_module) if r.compile else train_module
        self.eval_forward = torch.compile(self.model) if r.compile else self.model
        self.bn_params = [p for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                          for p in m.parameters(recurse=False)]
        o = cfg.optim
        self.base_lr = scaled_lr(o, cfg.data.batch_size)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.base_lr, momentum=o.momentum,
                                         nesterov=o.nesterov, weight_decay=o.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        # the schedule's length, and where the run is in it
        self.order = self.source.order
        self.steps_per_epoch = self.source.steps_per_epoch()
        self.total_steps = cfg.schedule.epochs * self.steps_per_epoch
        if r.max_steps:
            self.total_steps = min(self.total_steps, r.max_steps)
        self.epoch, self.step = 0, 0  # position: the next step to run
        self.history: list[dict[str, float]] = []  # the finished epochs' metrics.csv rows
        self.meters = zero_meters(self.device)  # the running sums of the epoch in progress
        self.elapsed = 0.0  # wall seconds of earlier sessions of this run

        # what watches it: the NaN watchdog, experiment tracking (rank 0, opened by fit)
        self.watchdog = Watchdog(self.model, self.steps_per_epoch, run.file(CHECKPOINT))
        self.check_every = 1 if self.device.type == "cpu" else GPU_CHECK_EVERY
        self.tracker = Trackers()
        self._rotate = True  # keep the checkpoint a save replaces as the previous one
        self._plotted = -math.inf  # when curves.png was last drawn
        if resume:
            self._resume()
        if self.env.rank:  # the model's own draws (dropout, Shake-Shake) differ between ranks
            torch.manual_seed(_rank_seed(r.seed, self.env.rank, self.global_step))

    def _resume(self) -> None:
        """Continue from the newest checkpoint that verifies (:func:`~senet.train.state.resume_point`),
        saying so when it is the previous one."""
        run = self.run
        state, path, problem = resume_point(run, self.cfg, self.order)
        if state is None:
            if self.is_main:
                self._log(f"{run.path} has no checkpoint yet: starting it from the beginning")
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        # the saved meters are the group's: rank 0 carries them on
        self.meters = restored_meters(state["meters"], self.device) if self.is_main else zero_meters(self.device)
        self.history = list(state["history"])
        self.elapsed = float(state["elapsed"])
        set_rng_states(state["rng"])
        if problem is not None:
            # the damaged newest file must not become the previous one at the next save
            self._rotate = False
            if self.is_main:
                note = (f"{problem}; resuming from the previous checkpoint {path.name} "
                        f"(epoch {self.epoch + 1} step {self.step + 1})")
                print(f"warning: {note}", file=sys.stderr, flush=True)
                run.log_event(f"fallback: {note}")

    # ------------------------------------------------------- the loop, in the order it runs
    def fit(self) -> dict[str, Any]:
        """Train to the end of the schedule (or ``run.max_steps``); returns the summary."""
        if self.is_main:
            self.tracker = open_trackers(self.cfg.run, self.run.path, resume_step=self.global_step)
        try:
            summary = self._fit()
        except BaseException as e:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                self.tracker.close("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        for name in (SUMMARY, METRICS_CSV, CURVES):
            if self.run.file(name).is_file():
                self.tracker.log_artifact(self.run.file(name))
        self.tracker.close()
        return summary

    def _fit(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.tracker.log_config(cfg.to_dict(), self.run.file(CONFIG))
        self._t0 = time.perf_counter()
        where = f"{self.device}" + (f" (rank {self.env.rank} of {self.env.world_size})" if self.env.distributed else "")
        self._event(("resumed at" if self.global_step else "started at") + f" epoch {self.epoch} step {self.step} on {where}")
        if self.global_step and self.is_main:
            self._log(f"resuming {self.run.path} at epoch {self.epoch + 1} step {self.step + 1}" if not self.done else
                      f"{self.run.path} finished training before it stopped: writing its weights and summary")
        batch = cfg.data.batch_size
        bar = tqdm(total=self.total_steps * batch, initial=min(self.global_step, self.total_steps) * batch,
                   unit="img", unit_scale=True, disable=not self.progress, dynamic_ncols=True, file=sys.stderr,
                   smoothing=0.05)
        self._echo = bar.write if self.progress else self._log
        self.watchdog.clear()
        if self.global_step and self.is_main and self.history:
            self.run.write_metrics(self.history)  # the checkpoint is written first: catch up on a kill between
            self._track_row(self.history[-1])  # (a row at another step than the checkpoint's is logged already)
        try:
            while not self.done:
                bar.set_description(f"epoch {self.epoch + 1}/{cfg.schedule.epochs}")
                self.model.train()
                if self._bn_frozen():
                    for m in self.model.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.eval()
                t_epoch = time.perf_counter()
                for x, y in self.source.train_batches(self.epoch, self.step):
                    loss, loss_sum, correct, n = self._train_step(x, y)
                    self.meters["loss_sum"] += loss_sum
                    self.meters["correct"] += correct
                    self.meters["count"] += n
                    self.watchdog.record(self.global_step, loss)
                    self.step += 1
                    bar.update(batch)
                    done = self.global_step >= self.total_steps
                    if self.watchdog.pending >= self.check_every or done:
                        self._check_finite()
                        count = self.meters["count"]
                        bar.set_postfix(loss=f"{float(self.meters['loss_sum']) / count:.3f}",
                                        acc=f"{int(self.meters['correct']) / count:.3f}", refresh=False)
                    if cfg.run.checkpoint_every and self.global_step % cfg.run.checkpoint_every == 0 and not done:
                        self.meters["train_seconds"] += time.perf_counter() - t_epoch
                        t_epoch = time.perf_counter()
                        self.save_checkpoint()
                    self._after_step()
                    if done:
                        break
                self._check_finite()
                self.meters["train_seconds"] += time.perf_counter() - t_epoch
                self._end_epoch()
        finally:
            bar.close()
        return self._finish()

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """One optimizer step on this process's share ``(x, y)`` of the global batch; returns
        the mean loss, the loss sum, the number correct and the number of images."""
        cfg = self.cfg
        lr = self.lr(self.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = cfg.run.accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        n = len(y)
        for i, (xm, ym) in enumerate(zip(x.tensor_split(accum), y.tensor_split(accum))):
            sync = self.ddp is None or i == accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with autocast_for(self.device, self.precision):
                    logits = self.forward(xm)
                    loss = F.cross_entropy(logits.float(), ym, label_smoothing=cfg.optim.label_smoothing)
                self.scaler.scale(loss if accum == 1 else loss * (len(ym) / n)).backward()
            loss_sum += loss.detach().double() * len(ym)
            correct += (logits.detach().argmax(1) == ym).sum()
        if self._bn_frozen():
            for p in self.bn_params:
                p.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return (loss_sum / n).float(), loss_sum, correct, n

    def _check_finite(self) -> None:
        """Look at the steps not yet checked (a collective); a :class:`TrainingDiverged` at the
        first bad one. Their losses, on the host now, go to the trackers without another sync."""
        self.watchdog.check(self._track_steps if self.tracker else None)

    def save_checkpoint(self) -> None:
        """Check the steps not yet checked, then write the checkpoint (rank 0), the one it
        replaces kept as the previous one. Every rank must call it (collectives)."""
        self._check_finite()
        meters = group_meters(self.meters, self.device, distributed=self.env.distributed)
        if self.is_main:
            save_checkpoint(self.run.file(CHECKPOINT), self._state(meters),
                            previous=self.run.file(PREVIOUS) if self._rotate else None)
        self._rotate = True

    def _state(self, meters: dict[str, Any]) -> dict[str, Any]:
        """What the checkpoint holds (:mod:`senet.train.state`); ``meters``: the group's."""
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(),
            "epoch": self.epoch,
            "step": self.step,
            "data_order": order_record(self.order),
            "meters": meters,
            "history": self.history,
            "elapsed": self.elapsed + (time.perf_counter() - self._t0),
            "world_size": self.env.world_size,
        }

    def _after_step(self) -> None:
        """Called after every optimizer step (a seam for tests and subclasses)."""

    def _end_epoch(self) -> None:
        """The end of an epoch (or of the run part way through one): its metrics row, a test
        pass when due, the checkpoint, then the report."""
        cfg = self.cfg
        finished = self.step >= self.steps_per_epoch
        last = self.global_step >= self.total_steps
        epoch_no = self.epoch + 1 if finished else self.epoch + self.step / self.steps_per_epoch
        m = group_meters(self.meters, self.device, distributed=self.env.distributed)
        row: dict[str, float] = {
            "epoch": epoch_no,
            "train_loss": float(m["loss_sum"]) / max(1, m["count"]),
            "train_top1_err": 1.0 - int(m["correct"]) / max(1, m["count"]),
            "lr": self.lr(self.global_step - 1),
            "images_per_s": m["count"] / m["train_seconds"] if m["train_seconds"] > 0 else math.nan,
            "seconds": m["train_seconds"],
            "train_seconds": m["train_seconds"],
        }
        if last or (self.epoch + 1) % cfg.run.eval_every == 0:
            t = time.perf_counter()
            res = self.test()
            row.update(test_loss=res["loss"], test_top1_err=res["top1_err"], test_top5_err=res["top5_err"])
            row["seconds"] += time.perf_counter() - t
        self.history.append(row)
        if finished:
            self.epoch, self.step = self.epoch + 1, 0
            self.meters = zero_meters(self.device)
        self.save_checkpoint()  # before the metrics: metrics.csv never lists an epoch no checkpoint holds
        if self.is_main:
            self._report(row, last)

    def test(self) -> dict[str, float]:
        """Loss, top-1 and top-5 error on the test (val) split, shared out over the group."""
        sums = eval_sums(self.eval_forward, self.source.eval_batches(), device=self.device, precision=self.precision)
        return errors_from_sums(dist.all_sum(sums))

    def _report(self, row: dict[str, float], last: bool) -> None:
        """An epoch's line, ``metrics.csv``, the trackers and (at most once a minute: it is for
        people, ``metrics.csv`` is the record) ``curves.png``."""
        test = (f"  test loss {row['test_loss']:.4f} err {100 * row['test_top1_err']:.2f}% "
                f"(top-5 {100 * row['test_top5_err']:.2f}%)" if "test_loss" in row else "")
        self._echo(f"epoch {row['epoch']:g}/{self.cfg.schedule.epochs}  train loss {row['train_loss']:.4f} "
                   f"err {100 * row['train_top1_err']:.2f}%{test}  lr {row['lr']:.4g}  "
                   f"{row['images_per_s']:.0f} img/s  {row['seconds']:.0f} s")
        self.run.write_metrics(self.history)
        self._track_row(row)
        if last or time.perf_counter() - self._plotted >= PLOT_EVERY_S:
            self.run.write_curves(self.history)
            self._plotted = time.perf_counter()

    def _finish(self) -> dict[str, Any]:
        """The weights and ``summary.json`` (rank 0), with a test pass if the last epoch had none."""
        from senet.models import save_weights

        cfg, source = self.cfg, self.source
        self._check_finite()  # (every step is checked by now; a weight file must never hold a diverged state)
        last = self.history[-1] if self.history else {}
        if "test_top1_err" not in last:
            res = self.test()
            last = {**last, "test_loss": res["loss"], "test_top1_err": res["top1_err"],
                    "test_top5_err": res["top5_err"]}
        with torch.device("meta"):
            meta = create_model(cfg.model.name, num_classes=len(source.classes), **cfg.model.kwargs)
        cost = complexity(meta, (3, cfg.data.crop, cfg.data.crop))
        train_seconds = sum(row["train_seconds"] for row in self.history)
        summary = {
            "recipe": cfg.recipe,
            "model": cfg.model.name,
            "dataset": cfg.data.dataset,
            "data_source": source.source,
            "seed": cfg.run.seed,
            "device": str(self.device),
            "world_size": self.env.world_size,
            "precision": self.precision,
            "epochs": last.get("epoch", 0),
            "steps": self.global_step,
            "test_top1_err": last["test_top1_err"],
            "test_top5_err": last["test_top5_err"],
            "test_loss": last["test_loss"],
            "train_loss": last.get("train_loss"),
            "params": cost.params,
            "flops": cost.flops,
            "train_images": source.n_train,
            "test_images": source.n_test,
            "images_per_s": self.global_step * cfg.data.batch_size / max(1e-9, train_seconds),
            "train_seconds": train_seconds,
            "seconds": self.elapsed + (time.perf_counter() - self._t0),
        }
        if self.is_main:
            save_weights(self.model, self.run.file(WEIGHTS), classes=source.classes, mean=source.mean, std=source.std)
            self.run.write_summary(summary)
            self.run.log_event(f"finished: test top-1 error {100 * summary['test_top1_err']:.2f}%")
        dist.barrier()  # nobody leaves (and tears the group down) before rank 0 has written
        return summary

    # ------------------------------------------------------- what the loop asks
    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    @property
    def done(self) -> bool:
        """Whether the schedule (or ``run.max_steps``) has been trained to its end."""
        return self.epoch >= self.cfg.schedule.epochs or self.global_step >= self.total_steps

    def lr(self, global_step: int) -> float:
        """The learning rate of a step; a plateau schedule counts its drops in the history."""
        return lr_at(self.cfg.schedule, self.base_lr, global_step, self.steps_per_epoch,
                     plateaus_so_far(self.cfg.schedule, self.history))

    def _bn_frozen(self) -> bool:
        n = self.cfg.optim.bn_freeze_epochs
        return n > 0 and self.epoch >= self.cfg.schedule.epochs - n

    def _event(self, text: str) -> None:
        if self.is_main:
            self.run.log_event(text)

    def _track_steps(self, steps: list[int], losses: list[float]) -> None:
        """Every step's loss (summed over the group by the watchdog) and learning rate."""
        for gstep, loss in zip(steps, losses):
            self.tracker.log_metrics({"train_loss_step": loss / self.env.world_size, "lr_step": self.lr(gstep)}, gstep)

    def _track_row(self, row: dict[str, float]) -> None:
        """A ``metrics.csv`` row to the trackers, at the global step its epoch ended on."""
        step = round(row["epoch"] * self.steps_per_epoch)
        if self.tracker and step == self.global_step:
            self.tracker.log_metrics({k: row[k] for k in METRICS if k in row}, step)


def _place(model: nn.Module, device: torch.device, *, channels_last: bool) -> nn.Module:
    """``model`` on ``device``, its convolution weights in channels_last layout if asked. The SE
    FC weights (1x1 convolutions of the pooled ``(N, C, 1, 1)`` tensor) keep the standard strides:
    the memory is the same, but their gradients come back with standard strides, and DDP's
    gradient buckets, laid out like the parameters, would otherwise warn ("Grad strides do not
    match bucket view strides") and copy them every step."""
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for m in model.modules():
        if isinstance(m, SqueezeExcite) and m.squeeze != "none":
            for fc in (m.fc1, m.fc2):
                fc.weight.data = fc.weight.data.clone(memory_format=torch.contiguous_format)
    return model


def _rank_seed(seed: int, rank: int, step: int) -> int:
    return derive_seed(seed, rank, step, 0x5EED, bits=32)

"""The CIFAR-style trainer (spec section 5, Table 4): SGD on uint8 tensors held in memory
(on the GPU when there is one), augmented batch-wise on the batch's device.

Every random draw of a step comes from state that the checkpoint holds or that is a function
of ``(seed, epoch, step)``: the data order (:class:`senet.data.EpochOrder`), the augmentation
(a generator seeded per step) and the model's own draws (dropout, Shake-Shake: the global
torch RNG, saved in the checkpoint). So a run resumed from any checkpoint on the CPU ends
with the same weights, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from senet.complexity import complexity
from senet.data import EpochOrder, GpuAugment
from senet.errors import SenetError
from senet.models import create_model
from senet.train.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from senet.train.config import Config
from senet.train.data import Splits, load_splits
from senet.train.evaluate import autocast_for, evaluate
from senet.train.rundir import CHECKPOINT, WEIGHTS, RunDir
from senet.train.schedule import lr_at


class TrainingDiverged(SenetError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SenetError("run.device=cuda but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def step_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of the augmentation generator of one step (a hash of the three numbers)."""
    state = np.random.SeedSequence([seed % 2**64, epoch, step, 0xA06]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config a resumed run must share with its checkpoint (not where it runs)."""
    run = {k: v for k, v in config["run"].items() if k not in ("device", "threads", "compile")}
    return {**config, "run": run}


class Trainer:
    """Train ``cfg`` into the run directory ``run``; ``resume=True`` continues from its checkpoint."""

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
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._log = log or (lambda text: print(text, flush=True))
        r = cfg.run
        if r.threads:
            torch.set_num_threads(r.threads)
        self.device = resolve_device(r.device)
        self.precision = r.precision if r.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.channels_last = self.device.type == "cuda" if r.channels_last is None else r.channels_last
        random.seed(r.seed)
        np.random.seed(r.seed % 2**32)
        torch.manual_seed(r.seed)

        self.splits: Splits = load_splits(cfg.data)
        if self.splits.train.skipped or self.splits.test.skipped:
            run.write_skipped(self.splits.train.skipped + self.splits.test.skipped)
        self.model = create_model(cfg.model.name, num_classes=len(self.splits.classes), **cfg.model.kwargs)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=fmt)
        self.forward = torch.compile(self.model) if r.compile else self.model
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         nesterov=o.nesterov, weight_decay=o.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        d = cfg.data
        self.order = EpochOrder(len(self.splits.train.labels), d.batch_size, r.seed, drop_last=True)
        self.augment = GpuAugment(self.splits.mean, self.splits.std, pad=d.pad, crop=d.crop, flip=d.flip,
                                  cutout=d.cutout, channels_last=self.channels_last)
        on_device = self.device.type == "cuda"  # CIFAR-size data lives on the GPU
        self.train_images = self.splits.train.images.to(self.device) if on_device else self.splits.train.images
        self.train_labels = self.splits.train.labels.to(self.device)
        self.steps_per_epoch = self.order.steps_per_epoch()
        self.total_steps = cfg.schedule.epochs * self.steps_per_epoch
        if r.max_steps:
            self.total_steps = min(self.total_steps, r.max_steps)
        self.epoch, self.step = 0, 0  # position: the next step to run
        self.history: list[dict[str, float]] = []
        self.meters = self._zero_meters()
        self.elapsed = 0.0  # wall seconds of earlier sessions of this run
        if resume and run.file(CHECKPOINT).exists():
            self._restore(load_checkpoint(run.file(CHECKPOINT)))
        elif resume:
            self._log(f"{run.path} has no checkpoint yet: starting it from the beginning")

    # ----------------------------------------------------------------- state
    def _zero_meters(self) -> dict[str, Any]:
        return {"loss_sum": torch.zeros((), dtype=torch.float64, device=self.device),
                "correct": torch.zeros((), dtype=torch.int64, device=self.device),
                "count": 0, "train_seconds": 0.0}

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_states(),
            "epoch": self.epoch,
            "step": self.step,
            "data_order": {"n": self.order.n, "batch_size": self.order.batch_size, "seed": self.order.seed},
            "meters": dict(self.meters),
            "history": self.history,
            "elapsed": self.elapsed + (time.perf_counter() - self._t0),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if _comparable(state["config"]) != _comparable(self.cfg.to_dict()):
            raise SenetError(f"{self.run.file(CHECKPOINT)} was written with a different configuration than "
                             f"{self.run.file('config.yaml')}; refusing to resume")
        order = state["data_order"]
        if order != {"n": self.order.n, "batch_size": self.order.batch_size, "seed": self.order.seed}:
            raise SenetError(f"the dataset changed since the checkpoint was written ({order['n']} training "
                             f"images then, {self.order.n} now); refusing to resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        meters = state["meters"]
        self.meters = {"loss_sum": meters["loss_sum"].to(self.device), "correct": meters["correct"].to(self.device),
                       "count": int(meters["count"]), "train_seconds": float(meters["train_seconds"])}
        self.history = list(state["history"])
        self.elapsed = float(state["elapsed"])
        set_rng_states(state["rng"])

    def save_checkpoint(self) -> None:
        save_checkpoint(self.run.file(CHECKPOINT), self._state())

    # ------------------------------------------------------------- training
    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def _train_step(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        cfg = self.cfg
        lr = lr_at(cfg.schedule, cfg.optim.lr, self.global_step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = idx.to(self.train_images.device, non_blocking=True)
        gen = torch.Generator(device=self.device).manual_seed(step_seed(cfg.run.seed, self.epoch, self.step))
        x = self.augment(self.train_images[idx].to(self.device, non_blocking=True), gen)
        y = self.train_labels[idx.to(self.train_labels.device)]
        with autocast_for(self.device, self.precision):
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.optim.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        loss = loss.detach()
        correct = (logits.detach().argmax(1) == y).sum()
        return loss, correct, len(y)

    def _check_finite(self, window: list[tuple[int, torch.Tensor]]) -> None:
        if not window:
            return
        values = torch.stack([loss for _, loss in window]).float().cpu()
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            gstep, value = window[i][0], float(values[i])
            epoch, step = divmod(gstep, self.steps_per_epoch)
            last = self.run.file(CHECKPOINT)
            where = f"the last checkpoint {last} is from before it" if last.exists() else "no checkpoint was written"
            raise TrainingDiverged(
                f"the training loss became {value} at epoch {epoch + 1} step {step + 1} (global step {gstep + 1}); "
                f"stopping without saving these weights ({where}); try a lower optim.lr or run.precision=fp32"
            )
        window.clear()

    def fit(self) -> dict[str, Any]:
        """Train to the end of the schedule (or ``run.max_steps``); returns the summary."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self._t0 = time.perf_counter()
        self.run.log_event(("resumed at" if self.global_step else "started at") +
                           f" epoch {self.epoch} step {self.step} on {self.device}")
        if self.global_step:
            self._log(f"resuming {self.run.path} at epoch {self.epoch + 1} step {self.step + 1}")
        sync_every = 1 if self.device.type == "cpu" else 25
        batch = cfg.data.batch_size
        bar = tqdm(total=self.total_steps * batch, initial=min(self.global_step, self.total_steps) * batch,
                   unit="img", unit_scale=True, disable=not self.progress, dynamic_ncols=True, file=sys.stderr,
                   smoothing=0.05)
        self._echo = bar.write if self.progress else self._log
        window: list[tuple[int, torch.Tensor]] = []
        try:
            while self.epoch < cfg.schedule.epochs and self.global_step < self.total_steps:
                bar.set_description(f"epoch {self.epoch + 1}/{cfg.schedule.epochs}")
                self.model.train()
                t_epoch = time.perf_counter()
                for idx in self.order.batches(self.epoch, self.step):
                    loss, correct, n = self._train_step(idx)
                    self.meters["loss_sum"] += loss.double() * n
                    self.meters["correct"] += correct
                    self.meters["count"] += n
                    window.append((self.global_step, loss))
                    self.step += 1
                    bar.update(n)
                    done = self.global_step >= self.total_steps
                    if len(window) >= sync_every or done:
                        self._check_finite(window)
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
                self._check_finite(window)
                self.meters["train_seconds"] += time.perf_counter() - t_epoch
                self._end_epoch()
        finally:
            bar.close()
        return self._finish()

    def _after_step(self) -> None:
        """Called after every optimizer step (a seam for tests and subclasses)."""

    def _end_epoch(self) -> None:
        cfg = self.cfg
        finished = self.step >= self.steps_per_epoch
        last = self.global_step >= self.total_steps
        epoch_no = self.epoch + 1 if finished else self.epoch + self.step / self.steps_per_epoch
        m = self.meters
        row: dict[str, float] = {
            "epoch": epoch_no,
            "train_loss": float(m["loss_sum"]) / max(1, m["count"]),
            "train_top1_err": 1.0 - int(m["correct"]) / max(1, m["count"]),
            "lr": lr_at(cfg.schedule, cfg.optim.lr, self.global_step - 1, self.steps_per_epoch),
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
            self.meters = self._zero_meters()
        test = (f"  test loss {row['test_loss']:.4f} err {100 * row['test_top1_err']:.2f}% "
                f"(top-5 {100 * row['test_top5_err']:.2f}%)" if "test_loss" in row else "")
        self._echo(f"epoch {epoch_no:g}/{cfg.schedule.epochs}  train loss {row['train_loss']:.4f} "
                   f"err {100 * row['train_top1_err']:.2f}%{test}  lr {row['lr']:.4g}  "
                   f"{row['images_per_s']:.0f} img/s  {row['seconds']:.0f} s")
        self.run.write_metrics(self.history)
        self.save_checkpoint()
        self.run.write_curves(self.history)

    def test(self) -> dict[str, float]:
        s = self.splits.test
        return evaluate(self.forward, s.images, s.labels, self.augment.normalize,
                        batch_size=self.cfg.data.eval_batch_size, device=self.device, precision=self.precision)

    def _finish(self) -> dict[str, Any]:
        from senet.weights import save_weights

        cfg, splits = self.cfg, self.splits
        last = self.history[-1] if self.history else {}
        if "test_top1_err" not in last:
            res = self.test()
            last = {**last, "test_loss": res["loss"], "test_top1_err": res["top1_err"],
                    "test_top5_err": res["top5_err"]}
        save_weights(self.model, self.run.file(WEIGHTS), classes=splits.classes, mean=splits.mean, std=splits.std)
        with torch.device("meta"):
            meta = create_model(cfg.model.name, num_classes=len(splits.classes), **cfg.model.kwargs)
        cost = complexity(meta, (3, cfg.data.crop, cfg.data.crop))
        train_seconds = sum(row["train_seconds"] for row in self.history)
        summary = {
            "recipe": cfg.recipe,
            "model": cfg.model.name,
            "dataset": cfg.data.dataset,
            "data_source": splits.train.source,
            "seed": cfg.run.seed,
            "device": str(self.device),
            "precision": self.precision,
            "epochs": last.get("epoch", 0),
            "steps": self.global_step,
            "test_top1_err": last["test_top1_err"],
            "test_top5_err": last["test_top5_err"],
            "test_loss": last["test_loss"],
            "train_loss": last.get("train_loss"),
            "params": cost.params,
            "flops": cost.flops,
            "train_images": len(splits.train.labels),
            "test_images": len(splits.test.labels),
            "images_per_s": self.global_step * cfg.data.batch_size / max(1e-9, train_seconds),
            "train_seconds": train_seconds,
            "seconds": self.elapsed + (time.perf_counter() - self._t0),
        }
        self.run.write_summary(summary)
        self.run.log_event(f"finished: test top-1 error {100 * summary['test_top1_err']:.2f}%")
        return summary

"""The run directory: what every run leaves behind, and nothing lost on a crash.

``config.yaml`` (resolved configuration), ``version.json`` (code version and environment),
``metrics.csv`` (one row per epoch), ``summary.json``, ``curves.png``, ``model.safetensors``,
``checkpoint.pt`` (resume state) and ``checkpoint.prev.pt`` (the one before it),
``events.log`` and ``skipped.txt`` (images left out by ``--skip-corrupt``); with experiment
tracking on, ``tensorboard/`` and ``mlflow.db``, ``mlartifacts/``, ``mlflow.json``. Every file
senet writes itself is written atomically, so an interrupted run never leaves a half-written one
(TensorBoard's and MLflow's stores are written by those libraries).

:class:`RunDir` is the one reader of these files too (:meth:`RunDir.config`,
:meth:`RunDir.summary`, :meth:`RunDir.metrics`, each checked) and the one judge of what a
folder holds (:meth:`RunDir.state`: fresh, partial, finished or not a run), for ``senet train
--resume``, ``senet ablate`` and the GPU session kit alike.

One process owns a run directory at a time (:class:`~senet.utils.lock.FolderLock`, taken by
:meth:`RunDir.create` and :meth:`RunDir.acquire`); only the owner removes the temporary
files a killed process left. A run that fails before its first checkpoint removes the
directory it created (used as a context manager), so the corrected command just works.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from senet.errors import ConfigError, SenetError, fs_error
from senet.train.config import Config, config_from_dict
from senet.utils.atomic import TMP_SUFFIX, write_text
from senet.utils.lock import LOCK_NAME, FolderLock
from senet.utils.text import csv_text, display, read_json, read_text, read_yaml

METRICS = (
    "epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err",
    "lr", "images_per_s", "seconds",
)
CONFIG, VERSION, METRICS_CSV, SUMMARY = "config.yaml", "version.json", "metrics.csv", "summary.json"
CURVES, WEIGHTS, CHECKPOINT, SKIPPED = "curves.png", "model.safetensors", "checkpoint.pt", "skipped.txt"
PREVIOUS, EVENTS = "checkpoint.prev.pt", "events.log"
#: experiment tracking (senet.train.tracking): TensorBoard event files, the run folder's MLflow
#: store and artefacts, and which MLflow run this run is
TENSORBOARD, MLFLOW_DB, MLFLOW_ARTIFACTS, MLFLOW_RUN = "tensorboard", "mlflow.db", "mlartifacts", "mlflow.json"
#: what a run holds before its first checkpoint; a failed start removes them again
STARTUP_FILES = (CONFIG, VERSION, EVENTS, SKIPPED, MLFLOW_RUN, MLFLOW_DB)
STARTUP_FOLDERS = (TENSORBOARD, MLFLOW_ARTIFACTS)
#: what a run folder holds (:meth:`RunDir.state`)
FRESH, PARTIAL, FINISHED, FOREIGN = "fresh", "partial", "finished", "foreign"


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything but a lock file (a killed process's lock is no run)."""
    return folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir())


def code_version() -> dict[str, Any]:
    """senet version and, when run from a git checkout, its commit and whether it was modified."""
    from senet.version import __version__

    info: dict[str, Any] = {"senet": __version__, "torch": torch.__version__, "python": platform.python_version()}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    info["host"] = platform.node()
    info["platform"] = platform.platform()
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


class RunDir:
    """A training run's folder; ``with run:`` releases it at the end and, if this process
    created it and the run fails (other than by Ctrl-C) before a checkpoint, removes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = FolderLock(self.path)
        self._fresh = False  # created by this process: removed again if the start fails
        self._made_folder = False

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def create(cls, path: str | Path, cfg: Config) -> RunDir:
        """A new run, owned by this process: refuses a folder that already holds a run (use
        ``--resume`` for that); an OS error is a one-line error naming the folder."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise SenetError(f"--out {run.path} exists and is not a folder")
        if holds_files(run.path):
            raise SenetError(
                f"{run.path} already holds files; continue it with --resume {run.path} or choose another --out"
            )
        run._made_folder = not run.path.exists()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise fs_error(e, run.path, "create the run directory") from None
        try:
            run.acquire()
        except BaseException:
            if run._made_folder:  # only if still empty: another owner's folder holds its lock file
                with contextlib.suppress(OSError):
                    run.path.rmdir()
            raise
        if holds_files(run.path):  # another process started a run here between our look and our lock
            run.release()
            raise SenetError(f"{run.path} already holds files; continue it with --resume {run.path} or choose "
                             "another --out")
        run._fresh = True
        try:
            write_text(run.file(CONFIG), cfg.to_yaml())
            write_text(run.file(VERSION), json.dumps(code_version(), indent=2) + "\n")
        except BaseException:
            run.discard()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run, to read (another process may own it); :meth:`acquire` it to write."""
        run = cls(path)
        if run.state() not in (PARTIAL, FINISHED):
            raise SenetError(f"{run.path} is not a senet run directory (no {CONFIG})")
        return run

    def state(self) -> str:
        """What the folder holds, the one answer ``train --resume``, ``ablate`` and the GPU
        session kit act on: :data:`FRESH` (nothing, or only a dead process's lock file: a run
        may start here), :data:`FOREIGN` (files but no ``config.yaml``: not a senet run),
        :data:`FINISHED` (``summary.json``, written last, by a run that reached its end) or
        :data:`PARTIAL` (a run not finished: resume it, from its checkpoint if it has one)."""
        if not holds_files(self.path):
            return FRESH
        if not self.file(CONFIG).is_file():
            return FOREIGN
        return FINISHED if self.file(SUMMARY).is_file() else PARTIAL

    def acquire(self) -> RunDir:
        """Own the run (a :class:`~senet.utils.lock.FolderBusy` error names the process that
        does) and remove the temporary files a killed owner left."""
        self._lock.acquire("run directory")
        for stale in self.path.glob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()
        return self

    def release(self) -> None:
        self._lock.release()

    @property
    def fresh(self) -> bool:
        """Created by this process and removed again if its run fails before a checkpoint."""
        return self._fresh

    def has_checkpoint(self) -> bool:
        return self.file(CHECKPOINT).exists() or self.file(PREVIOUS).exists()

    def discard(self) -> None:
        """Remove what this run wrote before its first checkpoint (and the folder, if it
        made it); anything else in the folder is left alone."""
        for name in STARTUP_FILES:
            with contextlib.suppress(OSError):
                self.file(name).unlink(missing_ok=True)
        for name in STARTUP_FOLDERS:
            shutil.rmtree(self.file(name), ignore_errors=True)
        for stale in self.path.glob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()
        self._lock.release(remove=True)
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.path.rmdir()
        self._fresh = False

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and self._fresh and not isinstance(exc, KeyboardInterrupt) and not self.has_checkpoint():
            self.discard()
        self.release()

    def config(self) -> Config:
        """The run's configuration; a damaged ``config.yaml`` (not YAML, not a mapping, cut
        short before its last section, a bad value) is a :class:`ConfigError` naming it."""
        path = self.file(CONFIG)
        values = read_yaml(path, dict, what="a run's configuration")
        missing = [f.name for f in dataclasses.fields(Config) if f.name not in values]
        if missing:  # senet writes every section: a file without one was cut short or edited
            raise ConfigError(f"{display(path)} lacks the section(s) {', '.join(missing)} that senet writes; "
                              "the file is damaged (cut short?)")
        try:
            return config_from_dict(values)
        except ConfigError as e:
            raise ConfigError(f"{display(path)}: {e}") from None

    def summary(self) -> dict[str, Any]:
        """``summary.json`` of a finished run, checked: a mapping whose errors are numbers in
        [0, 1] and whose ``params`` / ``flops`` are integers (a :class:`SenetError` naming the
        file and key otherwise)."""
        path = self.file(SUMMARY)
        summary = read_json(path, dict, what="a run's summary")
        for key in ("test_top1_err", "test_top5_err"):
            value = summary.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise SenetError(f"{display(path)}: {key} should be an error rate in [0, 1], got {value!r}")
        for key in ("params", "flops"):
            value = summary.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise SenetError(f"{display(path)}: {key} should be a count, got {value!r}")
        return summary

    def metrics(self) -> list[dict[str, float]]:
        """The rows of ``metrics.csv`` as numbers (an empty cell: not evaluated that epoch; no
        file: no epoch ended yet); a cell that is not a number is a :class:`SenetError` naming
        the file and line."""
        path = self.file(METRICS_CSV)
        rows: list[dict[str, float]] = []
        if not path.is_file():
            return rows
        for line, row in enumerate(csv.DictReader(io.StringIO(read_text(path, "a run's metrics"))), 2):
            try:
                rows.append({k: float(v) for k, v in row.items() if k in METRICS and v not in ("", None)})
            except (TypeError, ValueError):
                raise SenetError(f"{display(path)}, line {line}: a value that is not a number; the file is "
                                 "damaged") from None
            if "epoch" not in rows[-1]:
                raise SenetError(f"{display(path)}, line {line}: no epoch; the file is damaged") from None
        return rows

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        """Rewrite ``metrics.csv`` from the history (the checkpoint's copy is authoritative)."""
        def cell(value: Any) -> Any:
            return f"{value:.6g}" if isinstance(value, float) else "" if value is None else value

        write_text(self.file(METRICS_CSV), csv_text(METRICS, ([cell(row.get(k)) for k in METRICS] for row in history)))

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text(self.file(SUMMARY), json.dumps(summary, indent=2) + "\n")

    def write_skipped(self, skipped: list[str]) -> None:
        write_text(self.file(SKIPPED), "".join(f"{s}\n" for s in skipped))

    def write_curves(self, history: list[dict[str, float]]) -> None:
        from senet.train.plots import plot_curves

        if history:
            plot_curves(history, self.file(CURVES), title=self.path.name)

    def log_event(self, text: str) -> None:
        """Append one line to ``events.log`` (start, resume, stop, error)."""
        try:
            with open(self.file(EVENTS), "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        except OSError as e:
            raise fs_error(e, self.file(EVENTS), "append to") from None

"""The run directory: what every run leaves behind, and nothing lost on a crash.

``config.yaml`` (resolved configuration), ``version.json`` (code version and environment),
``metrics.csv`` (one row per epoch), ``summary.json``, ``curves.png``, ``model.safetensors``,
``checkpoint.pt`` (resume state) and ``skipped.txt`` (images left out by ``--skip-corrupt``).
Every file is written atomically, so an interrupted run never leaves a half-written one.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from senet.errors import ConfigError, SenetError
from senet.train.checkpoint import atomic_write_bytes
from senet.train.config import Config, config_from_dict

METRICS = (
    "epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err",
    "lr", "images_per_s", "seconds",
)
CONFIG, VERSION, METRICS_CSV, SUMMARY = "config.yaml", "version.json", "metrics.csv", "summary.json"
CURVES, WEIGHTS, CHECKPOINT, SKIPPED = "curves.png", "model.safetensors", "checkpoint.pt", "skipped.txt"


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def code_version() -> dict[str, Any]:
    """senet version and, when run from a git checkout, its commit and whether it was modified."""
    from senet import __version__

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
    """A training run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def create(cls, path: str | Path, cfg: Config) -> RunDir:
        """A new run: refuses a folder that already holds a run (use ``--resume`` for that)."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise SenetError(f"--out {run.path} exists and is not a folder")
        if run.path.is_dir() and any(run.path.iterdir()):
            raise SenetError(
                f"{run.path} already holds files; continue it with --resume {run.path} or choose another --out"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(run.file(CONFIG), cfg.to_yaml())
        write_text(run.file(VERSION), json.dumps(code_version(), indent=2) + "\n")
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.file(CONFIG).is_file():
            raise SenetError(f"{run.path} is not a senet run directory (no {CONFIG})")
        for stale in run.path.glob(".*.tmp"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
        return run

    def config(self) -> Config:
        try:
            values = yaml.safe_load(self.file(CONFIG).read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{self.file(CONFIG)} is not valid YAML: {e}") from None
        return config_from_dict(values)

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        """Rewrite ``metrics.csv`` from the history (the checkpoint's copy is authoritative)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRICS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.file(METRICS_CSV), buf.getvalue())

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
        with open(self.file("events.log"), "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

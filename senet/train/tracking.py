"""Experiment tracking: a run's metrics, configuration and artefacts in TensorBoard and MLflow,
besides ``metrics.csv`` and ``summary.json`` (which stay the record).

Off by default; ``run.tensorboard=true`` writes event files to ``<run>/tensorboard/``
(``tensorboard --logdir runs``), ``run.mlflow=true`` logs to an MLflow store in the run folder
(``<run>/mlflow.db``, artefacts in ``<run>/mlartifacts/``; ``mlflow ui --backend-store-uri
sqlite:///<run>/mlflow.db``), ``run.mlflow=URI`` to that tracking server or store. Both need
``pip install 'senet[track]'``. Only rank 0 of a group logs.

What is logged, at the global optimizer step as x: every step's training loss and learning
rate (``train_loss_step``, ``lr_step``, at the step's index, counted from 0), every epoch's
``metrics.csv`` row (at the number of steps done), the resolved configuration (TensorBoard
text; MLflow parameters and ``config.yaml``) and at the end ``summary.json``, ``metrics.csv``
and ``curves.png``. A resumed run continues the same TensorBoard log (what was logged after
the checkpoint it resumes from is dropped: ``purge_step``) and the same MLflow run (its id is
kept in ``mlflow.json``; MLflow keeps every value, so steps re-run after a kill appear twice).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from senet.errors import SenetError
from senet.train.config import flat_config
from senet.train.rundir import MLFLOW_ARTIFACTS, MLFLOW_DB, MLFLOW_RUN, TENSORBOARD
from senet.utils.atomic import write_text

INSTALL = "pip install 'senet[track]'"
MLFLOW_EXPERIMENT = "senet"


def _need(module: str, option: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SenetError(f"{option} needs the {module} package: {INSTALL}")


class Tracker:
    """Where a run's metrics go besides its folder; this base class logs nothing."""

    def log_config(self, config: Mapping[str, Any], config_file: Path) -> None:
        """The resolved configuration (``config_file``: its ``config.yaml``)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars at global optimizer step ``step``."""

    def log_artifact(self, path: Path) -> None:
        """A file of the run (``curves.png``, ``summary.json``, ...)."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end: ``FINISHED``, ``FAILED`` or ``KILLED`` (interrupted)."""


class Trackers(Tracker):
    """Several trackers as one (none: logs nothing)."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_config(self, config: Mapping[str, Any], config_file: Path) -> None:
        for t in self.trackers:
            t.log_config(config, config_file)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path: Path) -> None:
        for t in self.trackers:
            t.log_artifact(path)

    def close(self, status: str = "FINISHED") -> None:
        for t in self.trackers:
            t.close(status)


class TensorBoardTracker(Tracker):
    """Event files in ``folder``; ``purge_step`` (a resume) hides what an earlier session
    logged at that step or later."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        _need("tensorboard", "run.tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step or None)

    def log_config(self, config: Mapping[str, Any], config_file: Path) -> None:
        self.writer.add_text("config", _code_block(config_file.read_text()))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_artifact(self, path: Path) -> None:
        if path.suffix == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
            self.writer.add_image(path.stem, pixels, dataformats="HWC")
        else:
            self.writer.add_text(path.name, _code_block(path.read_text()))

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


class MLflowTracker(Tracker):
    """One MLflow run per senet run, continued on resume. Step metrics are sent in batches
    (one store write per ``flush_every`` values), not one request per step."""

    def __init__(self, run_folder: Path, uri: str | None, experiment: str | None = None,
                 flush_every: int = 200) -> None:
        _need("mlflow", "run.mlflow")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._error = MlflowException
        given = uri or os.environ.get("MLFLOW_TRACKING_URI") or None  # None: the run folder's own store
        self.uri = given or f"sqlite:///{(run_folder / MLFLOW_DB).resolve()}"
        record = run_folder / MLFLOW_RUN
        run_id = _recorded_run(record, given)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            if run_id:
                self.client.update_run(run_id, status="RUNNING")
            else:
                experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT
                exp = self.client.get_experiment_by_name(experiment)
                # the run folder's store keeps its artefacts beside it (MLflow's default: ./mlartifacts)
                where = None if given else (run_folder / MLFLOW_ARTIFACTS).resolve().as_uri()
                exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment, artifact_location=where)
                run_id = self.client.create_run(exp_id, run_name=run_folder.name).info.run_id
                write_text(record, json.dumps({"tracking_uri": given, "run_id": run_id}) + "\n")
        except MlflowException as e:
            raise SenetError(f"run.mlflow: MLflow tracking at {self.uri} failed: {_first_line(e)}") from None
        self.run_id, self.flush_every = run_id, flush_every
        self._pending: list[Any] = []

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            raise SenetError(f"run.mlflow: {what} failed at {self.uri}: {_first_line(e)}") from None

    def log_config(self, config: Mapping[str, Any], config_file: Path) -> None:
        from mlflow.entities import Param

        logged = self._call("reading the run", self.client.get_run, self.run_id).data.params
        # parameters cannot change in MLflow: a resume that changed how the run executes
        # (run.device, ...) keeps the first values; config.yaml is the record
        flat = {".".join(key): value for key, value in flat_config(dict(config)).items()}
        params = [Param(k, str(v)) for k, v in flat.items() if k not in logged]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a request
            self._call("logging parameters", self.client.log_batch, self.run_id, params=params[i:i + 100])
        self.log_artifact(config_file)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if len(self._pending) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics a request
            self._call("logging metrics", self.client.log_batch, self.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []

    def log_artifact(self, path: Path) -> None:
        self._flush()
        self._call(f"storing {path.name}", self.client.log_artifact, self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        self._flush()
        self._call("ending the run", self.client.set_terminated, self.run_id, status=status)


def _recorded_run(record: Path, uri: str | None) -> str | None:
    """The MLflow run a resumed run continues: the one ``record`` names, if it is at ``uri``."""
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
        return data["run_id"] if data["tracking_uri"] == uri else None  # tracked elsewhere now: a new run there
    except (ValueError, KeyError, TypeError, OSError):
        raise SenetError(f"{record} is not the MLflow run record senet writes (remove it to start a new "
                         "MLflow run)") from None


def _code_block(text: str) -> str:
    """``text`` as a Markdown code block: TensorBoard renders text as Markdown."""
    return "".join(f"    {line}\n" for line in text.splitlines())


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def open_trackers(run_cfg: Any, run_folder: Path, *, resume_step: int = 0) -> Trackers:
    """The trackers ``run_cfg`` (the ``run`` section) asks for, writing into ``run_folder``;
    ``resume_step``: the global step a resumed run continues from."""
    trackers: list[Tracker] = []
    if run_cfg.tensorboard:
        trackers.append(TensorBoardTracker(run_folder / TENSORBOARD, purge_step=resume_step))
    if run_cfg.mlflow is not False:
        uri = run_cfg.mlflow if isinstance(run_cfg.mlflow, str) else None
        trackers.append(MLflowTracker(run_folder, uri))
    return Trackers(trackers)

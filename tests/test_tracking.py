"""Experiment tracking (run.tensorboard, run.mlflow): what a 1-epoch run on the tiny tree
logged, read back with TensorBoard's EventAccumulator and MLflow's client; a resumed run
continues the same log and the same MLflow run; a missing extra is a one-line error."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from senet.cli.main import main

SMALL = ["--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
         "--set", "data.batch_size=16", "--no-progress"]
STEPS = 4  # 64 training images / 16 per epoch


def _scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc, [(e.step, e.value) for e in acc.Scalars(tag)]


def _roll_back_to_the_end_of_epoch_1(out):
    """As if the process had been killed in epoch 2: its checkpoint is the one of epoch 1."""
    from senet.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(out / "checkpoint.prev.pt")
    assert (state["epoch"], state["step"]) == (1, 0)
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "summary.json", "model.safetensors"):
        (out / name).unlink()
    save_checkpoint(out / "checkpoint.pt", state)


def _check_tensorboard(out):
    acc, losses = _scalars(out / "tensorboard", "train_loss_step")
    assert [s for s, _ in losses] == list(range(2 * STEPS))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    _, test_err = _scalars(out / "tensorboard", "test_top1_err")
    assert test_err == [(STEPS * (i + 1), pytest.approx(float(r["test_top1_err"]), abs=1e-6)) for i, r in enumerate(rows)]
    assert "curves" in acc.Tags()["images"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert yaml.safe_load("\n".join(line[4:] for line in text.splitlines())) == yaml.safe_load(
        (out / "config.yaml").read_text())
    return losses


def _check_mlflow(out):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("senet").experiment_id])
    assert run.info.run_id == run_id and run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["model.name"] == "cifar_se_resnet20"
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["test_top1_err"] == pytest.approx(summary["test_top1_err"], abs=1e-6)
    assert {"config.yaml", "summary.json", "metrics.csv", "curves.png"} <= {a.path for a in client.list_artifacts(run_id)}
    assert (out / "mlartifacts").is_dir()
    return run_id, [m.step for m in client.get_metric_history(run_id, "train_loss_step")]


def test_tensorboard_and_mlflow_get_what_metrics_csv_gets_and_a_resume_continues_both(tiny_tree, tmp_path,
                                                                                     monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_tree), "--out", str(out), *SMALL, "--epochs", "2", "--set", "optim.lr=0.05",
                 "--set", "run.tensorboard=true", "--set", "run.mlflow=true"]) == 0
    losses = _check_tensorboard(out)
    run_id, steps = _check_mlflow(out)
    assert steps == list(range(2 * STEPS))

    _roll_back_to_the_end_of_epoch_1(out)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    again = _check_tensorboard(out)  # what came after the checkpoint is in the log once, not twice
    assert again == [(s, pytest.approx(v, abs=1e-6)) for s, v in losses]  # the same run (bitwise on the CPU)
    again_id, steps = _check_mlflow(out)
    assert again_id == run_id  # the same MLflow run, finished again
    assert sorted(steps) == sorted([*range(2 * STEPS), *range(STEPS, 2 * STEPS)])  # MLflow keeps every value


def test_a_missing_extra_is_a_one_line_error_and_leaves_no_run(tiny_tree, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_tree), "--out", str(out), *SMALL, "--set", "run.tensorboard=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("run.tensorboard needs the tensorboard package: pip install 'senet[track]'")
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_mlflow_option_takes_true_false_or_a_uri():
    from senet.errors import ConfigError
    from senet.train import resolve

    assert resolve(None, ["run.mlflow=true"]).run.mlflow is True
    assert resolve(None, ["run.mlflow=http://127.0.0.1:5000"]).run.mlflow == "http://127.0.0.1:5000"
    assert resolve(None, []).run.mlflow is False and resolve(None, []).run.tensorboard is False
    with pytest.raises(ConfigError, match="run.mlflow must be true, false or an MLflow tracking URI"):
        resolve(None, ["run.mlflow=' '"])

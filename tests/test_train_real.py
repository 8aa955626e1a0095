"""Real data: a few hundred steps of a small SE network on the shared CIFAR-10 (JPEG copy)
reach a test accuracy far above chance (10%)."""

import json

import pytest

from senet.cli.main import main
from tests.conftest import SHARED_CIFAR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason=f"needs the shared CIFAR-10 copy at {SHARED_CIFAR}"),
]


def test_few_hundred_steps_on_cifar10_learn(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main([
        "train", "--data", str(SHARED_CIFAR), "--out", str(out), "--no-progress",
        "--set", "model.name=cifar_se_resnet20", "--set", "data.batch_size=64",
        "--set", "data.train_subset=19200", "--set", "data.test_subset=2000",
        "--set", "schedule.epochs=1", "--set", "schedule.warmup_epochs=0.1",
    ])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 300 and summary["train_images"] == 19200 and summary["test_images"] == 2000
    assert summary["dataset"] == "cifar10"
    assert summary["test_top1_err"] < 0.60, summary  # chance is 0.90
    assert summary["test_top5_err"] < 0.15, summary  # chance is 0.50

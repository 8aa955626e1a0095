"""The ImageNet recipes (spec section 6) on a tiny ImageFolder tree: streamed by DataLoader
workers, the same run whatever the number of workers, the learning rate scaled with the batch,
the plateau schedule and frozen batch normalisation."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from senet.cli.main import main
from senet.train import RunDir, Trainer, list_recipes, resolve
from senet.train.schedule import plateau_drops


def _tiny(tree, *extra: str) -> list[str]:
    return [f"data.path={tree}", "model.name=se_resnet18", "data.batch_size=8", "data.eval_batch_size=16",
            "data.crop=32", "data.resize=40", "run.threads=1", *extra]


def _fit(cfg, out) -> dict:
    return Trainer(cfg, RunDir.create(out, cfg), progress=False, log=lambda s: None).fit()


def test_every_imagenet_recipe_resolves_to_the_paper_setting():
    names = [r for r in list_recipes() if r.startswith("imagenet/")]
    assert {"imagenet/se_resnet50", "imagenet/resnet50", "imagenet/senet154", "imagenet/se_mobilenet"} <= set(names)
    for name in names:
        cfg = resolve(name, [])
        assert cfg.data.loader == "stream" and cfg.data.crop == 224 and cfg.data.resize == 256
        assert cfg.optim.momentum == 0.9
    r50 = resolve("imagenet/se_resnet50", [])
    assert (r50.data.batch_size, r50.optim.lr, r50.schedule.name, r50.schedule.step_size, r50.schedule.epochs) == (
        1024, 0.6, "step", 30, 100)
    assert r50.data.scale == [0.08, 1.0] and r50.model.kwargs == {}
    s154 = resolve("imagenet/senet154", [])
    assert s154.optim.label_smoothing == 0.1 and s154.optim.bn_freeze_epochs > 0
    mobile = resolve("imagenet/se_mobilenet", [])
    assert (mobile.data.batch_size, mobile.optim.lr, mobile.schedule.name) == (256, 0.1, "plateau")


def test_a_few_steps_on_a_tree_built_here_whatever_the_number_of_workers(tiny_tree, tmp_path, capsys):
    """A tree with train/ and test/ (val/ is looked for first); the learning rate follows the
    recipe's linear rule; 0 and 2 workers give the same weights (augmentation is seeded per image)."""
    runs = {}
    for workers in (0, 2):
        cfg = resolve("imagenet/se_resnet50", _tiny(tiny_tree, f"data.workers={workers}", "run.max_steps=3"))
        summary = _fit(cfg, tmp_path / f"w{workers}")
        runs[workers] = load_file(tmp_path / f"w{workers}" / "model.safetensors")
    assert summary["steps"] == 3 and summary["train_images"] == 64 and summary["test_images"] == 32
    assert 0 <= summary["test_top1_err"] <= 1
    for key, value in runs[0].items():
        assert torch.equal(value, runs[2][key]), key
    with open(tmp_path / "w2" / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["lr"]) == pytest.approx(0.6 * 8 / 1024, rel=1e-4)
    meta = json.loads((tmp_path / "w2" / "summary.json").read_text())
    assert meta["model"] == "se_resnet18" and meta["dataset"] == "imagenet"
    # `senet eval --run` of a streamed run reads its tree as an ImageFolder, here at another size
    assert main(["eval", "--run", str(tmp_path / "w2"), "--input-size", "40", "--device", "cpu"]) == 0
    assert "32 images at 40x40" in capsys.readouterr().out


def test_the_places365_recipes_are_table_6(tiny_tree, tmp_path):
    se, base = resolve("places365/se_resnet152", []), resolve("places365/resnet152", [])
    assert (se.model.name, base.model.name) == ("se_resnet152", "resnet152")
    assert se.data.loader == "stream" and se.data.dataset == "places365"
    assert {k: v for k, v in se.to_dict().items() if k not in ("recipe", "description", "model")} == {
        k: v for k, v in base.to_dict().items() if k not in ("recipe", "description", "model")}
    summary = _fit(resolve("places365/se_resnet152", _tiny(tiny_tree, "run.max_steps=1", "data.workers=0")),
                   tmp_path / "p")
    assert summary["dataset"] == "places365" and summary["steps"] == 1


def test_plateau_schedule_and_frozen_batch_norm(tiny_tree, tmp_path):
    """The mobile recipe's plateau rule drops the rate after `patience` epochs without
    improvement; with bn_freeze_epochs the BN statistics and affine parameters stay put."""
    assert plateau_drops([3.0, 2.0, 2.5, 2.4, 2.1, 1.0, 1.5, 1.6], patience=3, threshold=0.0) == 1
    assert plateau_drops([3.0, 3.0, 3.0, 3.0, 3.0, 3.0], patience=2, threshold=0.0) == 2
    assert plateau_drops([1.0, 0.99995], patience=1, threshold=1e-4) == 1  # not a relative improvement

    cfg = resolve("imagenet/se_mobilenet", _tiny(tiny_tree, "model.name=se_resnet18", "data.workers=0",
                                                  "schedule.epochs=3", "schedule.patience=1",
                                                  "optim.bn_freeze_epochs=1"))
    trainer = Trainer(cfg, RunDir.create(tmp_path / "p", cfg), progress=False, log=lambda s: None)
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = {}

    def snapshot() -> None:
        if trainer.epoch == 2 and trainer.step == 1:
            seen["before"] = (bn.running_mean.clone(), bn.weight.detach().clone())

    trainer._after_step = snapshot
    trainer.fit()
    mean, weight = seen["before"]
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.weight.detach(), weight)
    losses = [row["test_loss"] for row in trainer.history]
    drops = plateau_drops(losses[:2], 1, cfg.schedule.threshold)
    assert trainer.history[2]["lr"] == pytest.approx(0.1 * 8 / 256 * 0.1**drops)


def test_stream_loader_needs_a_tree(tmp_path):
    from senet.errors import DataError

    cfg = resolve("imagenet/se_resnet50", ["model.name=se_resnet18"])
    with pytest.raises(DataError, match="--data"):
        _fit(cfg, tmp_path / "x")
    cfg = resolve("imagenet/se_resnet50", [f"data.path={tmp_path / 'missing'}"])
    with pytest.raises(DataError, match="missing"):
        _fit(cfg, tmp_path / "y")

"""`senet train` / `senet eval` end to end on a tiny ImageFolder tree built by the test."""

import csv
import json

import pytest
import torch
import yaml

from senet.cli.main import main
from senet.errors import DataError
from senet.train import RunDir, Trainer, TrainingDiverged, resolve
from senet.train.checkpoint import load_checkpoint
from senet.train.data import check_labels
from senet.data import ImageDataset
from senet.models import read_metadata

SMALL = ["--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2", "--set", "data.batch_size=16", "--no-progress"]


def _train(tree, out, *extra):
    return main(["train", "--data", str(tree), "--out", str(out), *SMALL, *extra])


def test_train_writes_the_run_directory(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_tree, out, "--epochs", "4", "--set", "optim.lr=0.05") == 0
    printed = capsys.readouterr().out
    assert "test error: top-1" in printed and str(out) in printed
    for name in ("config.yaml", "version.json", "metrics.csv", "summary.json", "curves.png", "model.safetensors",
                 "checkpoint.pt", "events.log"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err",
                            "lr", "images_per_s", "seconds"}
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_top1_err"] == pytest.approx(float(rows[-1]["test_top1_err"]), abs=1e-6)
    assert summary["params"] > 0 and summary["flops"] > 0 and summary["steps"] == 4 * 4
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(tiny_tree) and cfg["data"]["crop"] == 16 and cfg["schedule"]["epochs"] == 4
    assert RunDir.open(out).config() == resolve(None, [{"data": {"dataset": "imagefolder", "path": str(tiny_tree), "crop": 16, "pad": 2,
                                                                  "batch_size": 16}}, "optim.lr=0.05"], epochs=4)
    assert "senet" in json.loads((out / "version.json").read_text())
    meta = read_metadata(out / "model.safetensors")
    assert meta.model == "cifar_se_resnet20" and meta.classes == ["class0", "class1", "class2", "class3"]
    assert len(meta.mean) == 3 and len(meta.std) == 3
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # `senet eval` on the run and on its weight file agrees with the summary
    assert main(["eval", "--run", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"top-1 error {100 * summary['test_top1_err']:.2f}%" in line
    assert main(["eval", "--weights", str(out / "model.safetensors"), "--dataset", "imagefolder",
                 "--data", str(tiny_tree)]) == 0
    assert f"top-1 error {100 * summary['test_top1_err']:.2f}%" in capsys.readouterr().out

    # a second run into the same folder is refused and leaves it untouched
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _train(tiny_tree, out, "--epochs", "1") == 2
    assert "already holds files; continue it with --resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_eval_refuses_mismatched_classes(tiny_tree, tmp_path, capsys):
    from tests.conftest import make_tree

    out = tmp_path / "run"
    assert _train(tiny_tree, out, "--epochs", "1", "--set", "run.max_steps=1") == 0
    other = make_tree(tmp_path / "other", classes=3)
    assert main(["eval", "--run", str(out), "--data", str(other)]) == 2
    assert "outputs but" in capsys.readouterr().err


def test_max_steps_and_cli_errors(tiny_tree, tmp_path, capsys):
    assert _train(tiny_tree, tmp_path / "a", "--set", "run.max_steps=3") == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["steps"] == 3
    assert main(["train", "--recipe", "cifar10/se_resnet_110", "--out", str(tmp_path / "b")]) == 2
    assert "closest: cifar10/se_resnet110" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main(["train", "--set", "optim.lrr=1", "--out", str(tmp_path / "c")]) == 2
    assert "valid keys: optim.lr" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "d"), *SMALL]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "a"), "--epochs", "3"]) == 2
    assert "only --device" in capsys.readouterr().err
    assert main(["train", "--print-config", "--set", "optim.lr=0.3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["optim"]["lr"] == 0.3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error(tiny_tree, tmp_path, capsys):
    assert _train(tiny_tree, tmp_path / "r", "--device", "cuda") == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_non_finite_loss_stops_at_that_step_without_saving_it(tiny_tree, tmp_path):
    cfg = resolve(None, [{"data": {"dataset": "imagefolder", "path": str(tiny_tree), "crop": 16, "pad": 2, "batch_size": 16},
                          "run": {"checkpoint_every": 1}}], epochs=2)
    trainer = Trainer(cfg, RunDir.create(tmp_path / "run", cfg), progress=False, log=lambda s: None)
    class NanAtStep6(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.calls = model, 0

        def forward(self, x):
            self.calls += self.training
            out = self.model(x)
            return out * float("nan") if self.training and self.calls == 6 else out

    trainer.forward = NanAtStep6(trainer.model)
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 2 step 2 \(global step 6\)"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 1)  # after global step 5, the last finite one
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_labels_outside_the_classes_are_refused_before_training():
    ds = ImageDataset(images=torch.zeros(3, 3, 8, 8, dtype=torch.uint8), labels=torch.tensor([0, 1, 2]),
                      classes=["a", "b"], source="x", skipped=[])
    with pytest.raises(DataError, match=r"1 label\(s\) outside 0..1"):
        check_labels(ds, "train")


class _CorruptAtStep(torch.nn.Module):
    """The training forward pass; at training call ``step`` it sets one BN running variance to
    inf. The loss of that step stays finite (training BN uses the batch's statistics): only the
    weights check can see it."""

    def __init__(self, model, step):
        super().__init__()
        self.model, self.step, self.calls = model, step, 0

    def forward(self, x):
        self.calls += self.training
        if self.training and self.calls == self.step:
            bn = next(m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = float("inf")
        return self.model(x)


def _tiny_trainer(tree, run, **run_cfg):
    cfg = resolve(None, [{"data": {"dataset": "imagefolder", "path": str(tree), "crop": 16, "pad": 2,
                                   "batch_size": 16}, "run": run_cfg}], epochs=2)
    return Trainer(cfg, RunDir.create(run, cfg), progress=False, log=lambda s: None)


def test_non_finite_weights_after_a_step_with_a_finite_loss_are_never_saved(tiny_tree, tmp_path):
    trainer = _tiny_trainer(tiny_tree, tmp_path / "run", checkpoint_every=1)
    trainer.forward = _CorruptAtStep(trainer.model, 6)
    with pytest.raises(TrainingDiverged, match=r"the weights became NaN or infinite in the optimizer step at "
                                               r"epoch 2 step 2 \(global step 6\) \(its loss was finite\)"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 1)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_save_always_looks_at_the_unchecked_steps_first(tiny_tree, tmp_path):
    """On a GPU the steps are looked at every 25 (no host sync per step): a checkpoint due
    after a divergence but before that look must look first, and not be written."""
    trainer = _tiny_trainer(tiny_tree, tmp_path / "run", checkpoint_every=3)
    trainer.check_every = 25  # as on a GPU
    trainer.forward = _CorruptAtStep(trainer.model, 2)
    with pytest.raises(TrainingDiverged, match=r"global step 2\).*no checkpoint was written"):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_eval_refuses_non_finite_weights_unless_allowed(tiny_tree, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    assert _train(tiny_tree, out, "--epochs", "1", "--set", "run.max_steps=1") == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(out / "model.safetensors")
    tensors["fc.weight"][0, 0] = float("nan")
    del meta["senet_sha256"]  # written by a tool that records no digest
    nan = tmp_path / "nan.safetensors"
    save_file(tensors, str(nan), metadata=meta)
    capsys.readouterr()
    args = ["eval", "--weights", str(nan), "--dataset", "imagefolder", "--data", str(tiny_tree)]
    assert main(args) == 2
    assert f"{nan} holds NaN or inf values in 1 tensor(s) (fc.weight); pass --allow-nonfinite" in capsys.readouterr().err
    assert main([*args, "--allow-nonfinite"]) == 0


def test_explicit_data_without_the_dataset_is_an_error_and_leaves_no_run(tmp_path, monkeypatch, capsys):
    from tests.conftest import make_tree

    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "data" / "cifar10-jpeg", classes=10, train=2, test=1)  # what the search path would find
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--data {tmp_path / 'empty'} does not hold cifar10: expected it to be, or to contain, one of" in err
    assert not out.exists()


def test_resuming_a_finished_run_trains_nothing(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_tree, out, "--epochs", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    files = lambda: {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".senet.lock"}  # noqa: E731
    before = files()
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert f"{out} has finished already (1 epochs, test error top-1 {100 * summary['test_top1_err']:.2f}%" in said
    assert "epoch 1/1" not in said  # nothing trained
    assert files() == before

    # killed after its last checkpoint, before the weights and summary: those are written, no step is trained
    (out / "summary.json").unlink()
    (out / "model.safetensors").unlink()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "finished training before it stopped: writing its weights and summary" in said and "epoch 1/1" not in said
    assert json.loads((out / "summary.json").read_text())["test_top1_err"] == summary["test_top1_err"]
    from safetensors.torch import load, load_file

    weights, then = load_file(out / "model.safetensors"), load(before["model.safetensors"])
    assert weights.keys() == then.keys() and all(torch.equal(weights[k], then[k]) for k in then)


def test_eval_of_a_run_scores_what_the_run_scored_unless_full_split(tiny_tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_tree, out, "--epochs", "1", "--set", "data.test_subset=12") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_images"] == 12
    capsys.readouterr()
    assert main(["eval", "--run", str(out)]) == 0
    said = capsys.readouterr().out
    assert "(test split, the run's data.test_subset: 12 of 32 images at 16x16)" in said
    assert f"top-1 error {100 * summary['test_top1_err']:.2f}%" in said
    assert main(["eval", "--run", str(out), "--full-split"]) == 0
    assert "(test split, 32 images at 16x16)" in capsys.readouterr().out

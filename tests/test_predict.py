"""``senet predict`` and the evaluation transform it shares with ``senet eval`` and ``analyze``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import senet
from senet.cli.main import main
from senet.data.transforms import batch_transform, eval_crops, normalize, resolve_data_config, to_grey
from tests.conftest import make_tree, randomise


@pytest.fixture
def weights(tmp_path):
    model = randomise(senet.create_model("cifar_se_resnet20", num_classes=4)).eval()
    names = [f"class{i}" for i in range(4)]  # the class folders of make_tree
    return model, senet.save_weights(model, tmp_path / "w.safetensors", classes=names)


def test_predict_prints_topk_names_and_writes_json_and_csv(tmp_path, weights, capsys):
    model, path = weights
    tree = make_tree(tmp_path / "tree", classes=2, train=3, test=0, size=32)
    out = tmp_path / "p.json"
    assert main(["predict", str(tree / "train"), "--weights", str(path), "--topk", "2", "--json", str(out),
                 "--batch-size", "4", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all(line.count("%") == 2 for line in lines)
    preds = json.loads(out.read_text())["predictions"]
    assert [len(p["classes"]) for p in preds] == [2] * 6 and preds[0]["classes"][0].startswith("class")
    # the probabilities are the model's on the transformed image
    cfg = resolve_data_config(model)
    img = np.asarray(Image.open(preds[0]["path"]).convert("RGB"))
    with torch.no_grad():
        probs = model(normalize(eval_crops(img, cfg), cfg)).softmax(1)[0]
    assert probs.max().item() == pytest.approx(preds[0]["probabilities"][0], abs=1e-6)
    assert main(["predict", str(tree / "train" / "class0" / "0000.png"), "--weights", str(path), "--csv",
                 str(tmp_path / "p.csv"), "--topk", "9"]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]  # top-k is capped at the number of classes


def test_predict_names_bad_files_and_skips_them_when_asked(tmp_path, weights, capsys):
    _, path = weights
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["predict", str(good), str(bad), "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.png" in err and "--skip-corrupt" in err
    assert main(["predict", str(good), str(bad), "--weights", str(path), "--skip-corrupt"]) == 0
    captured = capsys.readouterr()
    assert "good.png" in captured.out and "skipped" in captured.err and "notes.png" in captured.err
    assert main(["predict", str(tmp_path / "nothing"), "--weights", str(path)]) == 2
    assert main(["predict", str(good), "--model", "cifar_resnet20"]) == 2  # random weights: refused
    assert "--pretrained" in capsys.readouterr().err


def test_data_config_follows_the_weights_and_overrides():
    model = senet.create_model("se_resnet18")
    cfg = resolve_data_config(model)
    assert (cfg.crop, cfg.resize, cfg.interpolation) == (224, 256, "bilinear")
    big = resolve_data_config(model, input_size=320, crop_pct=1.0)
    assert (big.crop, big.resize) == (320, 320)
    with pytest.raises(ValueError, match="--crop-pct"):
        resolve_data_config(model, crop_pct=1.5)


def test_ten_crop_is_torchvisions():
    torchvision = pytest.importorskip("torchvision")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    cfg = resolve_data_config({"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.8})
    ours = eval_crops(img, cfg, ten_crop=True)
    resized = torchvision.transforms.Resize(40)(img)
    theirs = torch.stack([torch.from_numpy(np.array(v)).permute(2, 0, 1)
                          for v in torchvision.transforms.TenCrop(32)(resized)])
    assert ours.shape == (10, 3, 32, 32) and torch.equal(ours, theirs)


def test_eval_at_another_size_and_with_ten_crops(tmp_path, weights, capsys):
    _, path = weights
    tree = make_tree(tmp_path / "tree", classes=4, train=2, test=3, size=32)
    base = ["eval", "--weights", str(path), "--dataset", "imagefolder", "--data", str(tree)]
    assert main(base) == 0
    assert "at 32x32" in capsys.readouterr().out
    assert main(base + ["--input-size", "40", "--crop-pct", "0.9", "--ten-crop"]) == 0
    assert "at 40x40 (10 crops)" in capsys.readouterr().out


def test_stored_images_of_the_right_size_are_only_normalised():
    cfg = resolve_data_config(senet.create_model("cifar_resnet20"))
    batch = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(batch_transform(cfg, (32, 32))(batch), normalize(batch, cfg))
    assert batch_transform(cfg, (32, 32), ten_crop=True)(batch).shape == (20, 3, 32, 32)


def test_grey_is_pils():
    img = np.random.default_rng(0).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    batch = torch.from_numpy(img).permute(2, 0, 1)[None]
    assert torch.equal(to_grey(batch)[0, 0], torch.from_numpy(np.array(Image.fromarray(img).convert("L"))))


@torch.no_grad()
def test_one_channel_models_get_grey_images(tmp_path, capsys):
    """An in_chans=1 model's config has one mean and std (the RGB ones averaged, as its first
    convolution sums the RGB weights): timm's transforms work on it, and predict and eval feed it
    grey images; channel counts the pipeline cannot make are a clear error."""
    timm = pytest.importorskip("timm")
    rgb = randomise(senet.create_model("cifar_resnet20", num_classes=4)).eval()
    path = senet.save_weights(rgb, tmp_path / "rgb.safetensors", classes=[f"class{i}" for i in range(4)])
    grey = senet.create_model(pretrained=path, in_chans=1).eval()
    mean, std = senet.model_info("cifar_resnet20").mean, senet.model_info("cifar_resnet20").std
    assert grey.pretrained_cfg["mean"] == pytest.approx((sum(mean) / 3,))
    assert grey.pretrained_cfg["std"] == pytest.approx((sum(std) / 3,))
    config = timm.data.resolve_data_config(model=grey)
    x = timm.data.create_transform(**config)(Image.new("L", (40, 36), 128))
    assert x.shape == (1, 32, 32) and grey(x[None]).shape == (1, 4)
    weights = senet.save_weights(grey, tmp_path / "grey.safetensors")
    assert senet.read_metadata(weights).mean == grey.pretrained_cfg["mean"]
    tree = make_tree(tmp_path / "tree", classes=4, train=1, test=2, size=32)
    assert main(["predict", str(tree / "train"), "--weights", str(weights), "--topk", "1", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("%") == 4
    assert main(["eval", "--weights", str(weights), "--dataset", "imagefolder", "--data", str(tree)]) == 0
    capsys.readouterr()
    four = senet.save_weights(senet.create_model("cifar_resnet20", in_chans=4), tmp_path / "four.safetensors")
    assert main(["predict", str(tree / "train"), "--weights", str(four)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4-channel" in err and "grey (1 channel)" in err
    with pytest.raises(ValueError, match="one mean and std value per input channel"):
        senet.save_weights(grey, tmp_path / "x.safetensors", mean=mean, std=std)

"""Detectors on senet trunks (paper section 5.3, Table 7): FPN levels, frozen BN and stages as
torchvision freezes its ResNet trunks, a short training on a synthetic set, the output format,
COCO's mAP against a hand-computed case and against pycocotools."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import senet
from senet.models import module_stages
from tests.conftest import randomise

pytest.importorskip("torchvision")
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from senet.detection import (  # noqa: E402
    SyntheticShapes,
    collate,
    fasterrcnn_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_se_resnet50_fpn,
    fpn_backbone,
    freeze_batch_norm,
    mean_average_precision,
    retinanet_fpn,
)

#: a small Faster R-CNN for 96-pixel images: few proposals and sampled RoIs (a training step of 2 images
#: takes about 0.4 s here)
SMALL = dict(fpn_channels=32, min_size=96, max_size=96, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=100,
             rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64,
             box_batch_size_per_image=64)
#: a small model of each family, and SENet-154 (the paper's detectors use ResNet-family trunks)
TRUNKS = ["bn_inception", "cifar_se_resnet20", "inception_resnet_v2", "mobilenet", "se_resnet18", "resnext50_32x4d",
          "senet154", "shake_shake26_2x32d", "se_shufflenet_g3", "vgg16_bn", "se_wrn16_8"]


def batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("name", ["se_resnet18", "resnet18"])
def test_fpn_levels_have_the_stage_strides(name):
    backbone = fpn_backbone(name, out_channels=16).eval()
    assert backbone.feature_info.channels() == [e["num_chs"] for e in senet.create_model(name).feature_info[1:]]
    assert backbone.feature_info.module_name() == ["layer1", "layer2", "layer3", "layer4"]
    assert backbone.strides == {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 96, 128))
    assert list(out) == list(backbone.strides)
    for level, x in out.items():
        s = backbone.strides[level]
        assert x.shape == (1, 16, math.ceil(96 / s), math.ceil(128 / s)), level


def test_retinanet_taps_p3_to_p7():
    model = retinanet_fpn("se_resnet18", 4, fpn_channels=16, min_size=96, max_size=96)
    assert model.backbone.feature_info.module_name() == ["layer2", "layer3", "layer4"]
    assert model.backbone.strides == {"0": 8, "1": 16, "2": 32, "p6": 64, "p7": 128}
    images, targets = collate([SyntheticShapes(2, 96)[i] for i in range(2)])
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"} and all(v.isfinite() for v in losses.values())


def test_trunks_cover_every_family():
    assert {senet.model_info(n).family for n in TRUNKS} == set(senet.models.families())


@pytest.mark.parametrize("name", TRUNKS)
def test_every_family_is_a_trunk(name):
    """Frozen BN, frozen stages and the FPN on each family, on the meta device (shapes only)."""
    with torch.device("meta"):
        model = senet.create_model(name)
        stages_before = module_stages(model)
        freeze_batch_norm(model)
        assert module_stages(model) == stages_before  # same module paths: feature_info still names them
        assert not batch_norms(model)
        backbone = fpn_backbone(name, frozen_bn=True, trainable_layers=2, out_channels=8)
        size = senet.model_info(name).input_size[-1]
        out = backbone(torch.empty(1, 3, size, size))
    assert not batch_norms(backbone)
    assert list(out) == list(backbone.strides) and all(x.shape[1] == 8 for x in out.values())
    sides = [x.shape[-1] for x in out.values()]
    assert sides == sorted(sides, reverse=True) and sides[0] >= sides[-1] * 2
    with_params = sorted({stage for path, stage in stages_before.items()
                          if list(model.get_submodule(path).parameters(recurse=False))})
    last = with_params[-2:]  # trainable_layers=2: the last two stages that hold parameters train
    in_last = sum(p.numel() for path, stage in stages_before.items() if stage in last
                  for p in model.get_submodule(path).parameters(recurse=False))
    trained = sum(p.numel() for p in backbone.body.parameters() if p.requires_grad)
    assert 0 < trained == in_last < sum(p.numel() for p in backbone.body.parameters())


def test_freeze_batch_norm_keeps_outputs_names_and_keys():
    model = randomise(senet.create_model("se_resnet18", num_classes=5)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    info = [dict(e) for e in model.feature_info]
    assert freeze_batch_norm(model) is model
    assert not batch_norms(model) and any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert set(model.state_dict()) == keys and model.feature_info == info
    model.train()  # a frozen BN ignores the mode: the statistics stay
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert isinstance(freeze_batch_norm(nn.BatchNorm2d(3)), FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="not a 2d batch norm"):
        freeze_batch_norm(nn.Sequential(nn.BatchNorm1d(3)))


def test_defaults_follow_torchvision_and_bad_values_are_named(tmp_path):
    plain = fpn_backbone("resnet18", out_channels=8)  # no weights: everything trains, BN included
    assert batch_norms(plain) and all(p.requires_grad for p in plain.parameters())
    with pytest.raises(ValueError, match=r"trainable_layers must be an integer in \[0, 5\].*got 7"):
        fasterrcnn_fpn("se_resnet18", 4, trainable_layers=7)
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="trainable_layers"):
            fpn_backbone("resnet18", trainable_layers=bad)
    with pytest.raises(ValueError, match="num_classes counts the background"):
        fasterrcnn_fpn("resnet18", 1)


def test_a_torchvision_resnet_file_gives_torchvisions_trunk(tmp_path):
    """torchvision's ResNet-50 weights as weights_backbone: its layout (V1.5) comes from the file,
    and the trunk computes what torchvision's resnet_fpn_backbone computes with the same weights,
    with the same parameters frozen (stem and layer1; BN everywhere)."""
    import torchvision
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    weights = randomise(torchvision.models.resnet50()).state_dict()
    torch.save(weights, tmp_path / "resnet50.pth")
    ours = fpn_backbone("resnet50", weights_backbone=tmp_path / "resnet50.pth", out_channels=8)
    theirs = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    theirs.body.load_state_dict({k: v for k, v in weights.items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        mine, ref = ours.body(x), theirs.body(x)
    assert list(mine) == list(ref)
    for level in ref:
        torch.testing.assert_close(mine[level], ref[level], rtol=1e-5, atol=1e-5)

    def split(m: nn.Module) -> tuple[int, int, int]:
        trained = sum(p.numel() for p in m.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)
        return trained, frozen, sum(b.numel() for b in m.buffers())

    assert split(ours.body) == split(theirs.body)


def test_table7_rows_differ_only_in_the_trunk():
    with torch.device("meta"):
        se = fasterrcnn_se_resnet50_fpn(91)
        plain = fasterrcnn_resnet50_fpn(91)
    se_keys, plain_keys = set(se.state_dict()), set(plain.state_dict())
    assert plain_keys <= se_keys
    assert all(k.startswith("backbone.body.") and ".se." in k for k in se_keys - plain_keys)
    assert se.backbone.feature_info.channels() == plain.backbone.feature_info.channels() == [256, 512, 1024, 2048]
    assert repr(se.rpn) == repr(plain.rpn) and repr(se.roi_heads) == repr(plain.roi_heads)


def test_frozen_parameters_stay_after_a_step(tmp_path):
    """With ImageNet-style weights (a file): BN frozen and the stem and layer1 too; an SGD step
    (weight decay included, every parameter given to it) changes only the rest."""
    path = tmp_path / "trunk.safetensors"
    senet.save_weights(randomise(senet.create_model("se_resnet18")), path)
    model = fasterrcnn_fpn("se_resnet18", 4, weights_backbone=path, **SMALL)
    body = model.backbone.body
    assert not batch_norms(model.backbone) and sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 20
    assert torch.equal(body.layer4[1].bn2.running_var, _file_tensor(path, "layer4.1.bn2.running_var"))
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen and {n.split(".")[0] for n in frozen} == {"stem", "layer1"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = collate([SyntheticShapes(2, 96, seed=1)[i] for i in range(2)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    loss = sum(model(images, targets).values())
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name, _ in body.named_parameters():  # every trainable trunk parameter moved, no frozen one did
        key = f"backbone.body.{name}"
        assert torch.equal(after[key], before[key]) == (name in frozen), name
    for name, b in body.named_buffers():  # frozen BN statistics and affine terms, in every stage
        assert torch.equal(b, before[f"backbone.body.{name}"]), name
    fpn = "backbone.fpn.layer_blocks.0.0.weight"
    assert not torch.equal(after[fpn], before[fpn])


def _file_tensor(path, key: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(path)[key]


@pytest.fixture(scope="module")
def trained():
    """se_resnet18 Faster R-CNN after 24 steps (batches of 2) on 4 synthetic images, from scratch
    with plain BN (torchvision's build without weights), and its losses per step (about 10 s)."""
    torch.manual_seed(0)
    data = SyntheticShapes(4, 96, seed=3)
    model = fasterrcnn_fpn("se_resnet18", data.num_classes, **SMALL)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    model.train()
    losses = []
    for step in range(24):
        images, targets = collate([data[(2 * step + k) % len(data)] for k in range(2)])
        parts = model(images, targets)
        loss = sum(parts.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append({k: v.item() for k, v in parts.items()})
    images, targets = collate([data[i] for i in range(len(data))])
    return model.eval(), images, targets, losses


def test_short_training_lowers_the_loss(trained):
    _, _, _, losses = trained
    total = [sum(step.values()) for step in losses]
    assert all(map(math.isfinite, total))
    assert np.mean(total[-5:]) < 0.75 * np.mean(total[:2]), total
    # the RPN learns where the shapes are, not only the classifier "background"
    objectness = [step["loss_objectness"] for step in losses]
    assert np.mean(objectness[-5:]) < 0.5 * objectness[0], objectness


def test_eval_returns_boxes_labels_scores(trained):
    model, images, targets, _ = trained
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for det, image in zip(out, images):
        assert set(det) == {"boxes", "labels", "scores"}
        n = len(det["scores"])
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == torch.float32
        assert det["labels"].shape == (n,) and det["labels"].dtype == torch.int64
        assert n <= model.roi_heads.detections_per_img
        if n:
            assert ((det["labels"] >= 1) & (det["labels"] <= 3)).all()
            assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
            assert (det["scores"][1:] <= det["scores"][:-1]).all()  # best first
            b = det["boxes"]
            assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
            assert b.min() >= 0 and b[:, 2].max() <= image.shape[-1] and b[:, 3].max() <= image.shape[-2]
    result = mean_average_precision(out, targets)
    assert 0.0 <= result["map"] <= result["map_50"] <= 1.0
    assert result["map_50"] > 0.2, result  # 24 steps find the shapes it saw (0.61 when written)


def test_synthetic_boxes_are_tight_and_repeatable():
    data = SyntheticShapes(6, 64, seed=5)
    for i in range(len(data)):
        image, target = data[i]
        again, same = data[i]
        assert torch.equal(image, again) and torch.equal(target["boxes"], same["boxes"])
        inside = torch.zeros(image.shape[1:], dtype=torch.bool)
        for x1, y1, x2, y2 in target["boxes"].int().tolist():
            inside[y1:y2, x1:x2] = True
        outside = image[:, ~inside]
        background = outside[:, :1]
        assert torch.equal(outside, background.expand_as(outside))  # nothing drawn outside the boxes
        drawn = (image != background[:, :, None]).any(0)
        for x1, y1, x2, y2 in target["boxes"].int().tolist():
            box = drawn[y1:y2, x1:x2]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()  # tight
        assert ((target["labels"] >= 1) & (target["labels"] <= 3)).all()
    assert data.num_classes == 4 and not torch.equal(data[0][0], SyntheticShapes(6, 64, seed=6)[0][0])


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_map_on_a_hand_computed_case():
    # one class, two ground-truth boxes; three detections: hit (0.9), miss (0.8), hit (0.7)
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    preds = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [1, 1, 1])]
    # recall 0.5, 0.5, 1; precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3: 51 recall points at 1, 50 at 2/3
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    result = mean_average_precision(preds, targets)
    assert result["map_50"] == pytest.approx(expected) and result["map"] == pytest.approx(expected)
    # IoU of [0, 0, 10, 10] with [0, 0, 10, 8.2] is 0.82: a hit at the thresholds 0.50-0.80, a miss above
    shifted = [_det([[0, 0, 10, 8.2]], [0.9], [1])]
    one = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    r = mean_average_precision(shifted, one)
    assert r["per_threshold"][0.8] == pytest.approx(1.0) and r["per_threshold"][0.85] == 0.0
    assert r["map"] == pytest.approx(0.7) and r["map_75"] == pytest.approx(1.0)
    # a class with ground truth and no detection counts 0; a class without ground truth is left out
    two = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2])}]
    r = mean_average_precision([_det([[0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.9], [1, 3])], two)
    assert r["per_class"] == pytest.approx({1: 1.0, 2: 0.0}) and r["map_50"] == pytest.approx(0.5)


def test_map_matches_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    preds, targets, images, annotations, results = [], [], [], [], []
    for i in range(12):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 80, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 40, (n, 2))], 1).round(1)
        labels = rng.integers(1, 4, n)
        m = int(rng.integers(0, 8))
        pick = rng.integers(0, n, m)
        det = gt[pick] + rng.normal(0, 4, (m, 4))
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        det_labels = np.where(rng.random(m) < 0.8, labels[pick], rng.integers(1, 4, m))
        scores = rng.random(m).round(3)
        targets.append({"boxes": torch.tensor(gt), "labels": torch.tensor(labels)})
        preds.append({"boxes": torch.tensor(det), "scores": torch.tensor(scores), "labels": torch.tensor(det_labels)})
        images.append({"id": i, "width": 128, "height": 128})
        for b, c in zip(gt, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, c, s in zip(det, det_labels, scores):
            results.append({"image_id": i, "category_id": int(c), "score": float(s),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in (1, 2, 3)]}
    coco.createIndex()
    evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ours = mean_average_precision(preds, targets)
    assert ours["map"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert ours["map_50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    assert ours["map_75"] == pytest.approx(evaluator.stats[2], abs=1e-9)


def test_synthetic_benchmark_writes_its_results(tmp_path):
    """benchmarks/detection_synthetic.py end to end, at a toy size (its figures are not judged)."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "detection_synthetic.py"
    spec = importlib.util.spec_from_file_location("detection_synthetic", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    assert script.main(["--trunks", "se_resnet18", "--steps", "2", "--eval-every", "1", "--size", "64",
                        "--train-images", "4", "--val-images", "2", "--batch-size", "2", "--fpn-channels", "16",
                        "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert set(report["summary"]) == {"se_resnet18"} and len(report["runs"]) == 1
    assert {"command", "machine", "code", "wall_seconds", "config"} <= set(report)
    assert all(0 <= r["map_50"] <= 1 for r in report["runs"])
    assert len((out / "losses.csv").read_text().splitlines()) == 1 + 2  # header, a row per step
    assert len((out / "eval.csv").read_text().splitlines()) == 1 + 2
    assert (out / "curves.png").stat().st_size > 1000

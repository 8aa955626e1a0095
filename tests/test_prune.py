"""senet prune: coupled channel groups, the FLOPs target, the mathematics of removing channels
(pruned logits = unpruned logits with those channels zeroed), pruned networks rebuilt from
their file alone (create_model, features_only, eval, export, predict, analyze, train --init),
bad inputs as one-line errors, and a tiny end-to-end study."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import senet
from senet.cli.main import main
from senet.errors import SenetError, WeightsError
from senet.layers.se import SqueezeExcite
from senet.models import model_info
from senet.pruning import UNSUPPORTED, group_model, prune, zeroed
from senet.pruning.core import removed_elements
from tests.conftest import make_tree, randomise
from tests.model_cases import FAMILY_CASES, assert_close, quiet, small

PRUNABLE = [c for c in FAMILY_CASES if model_info(c[0]).family not in UNSUPPORTED]
REFUSED = [c for c in FAMILY_CASES if model_info(c[0]).family in UNSUPPORTED]


def _cifar(seed: int = 0, name: str = "cifar_se_resnet20") -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomise(senet.create_model(name, num_classes=4), seed).eval()


def _images(n: int = 8, side: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(3))


def _one_line_error(capsys: pytest.CaptureFixture, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("name,kwargs,side", PRUNABLE, ids=[c[0] for c in PRUNABLE])
def test_every_family_prunes_and_rebuilds_from_its_file(name, kwargs, side, tmp_path):
    model, x, _ = small(name, kwargs, side)
    with quiet():
        result = prune(model, ratio=0.5, criterion="l1", input_size=(3, side, side))
    assert result.params_after < 0.6 * result.params_before and result.flops_after < 0.6 * result.flops_before
    assert result.max_abs_diff is not None  # the zeroed-channels check ran (and passed)
    path = senet.save_weights(model, tmp_path / "pruned.safetensors")
    assert senet.read_metadata(path).widths  # the narrower layers are in the header
    with quiet():
        rebuilt = senet.create_model(pretrained=path).eval()
        features = senet.create_model(pretrained=path, features_only=True).eval()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert_close(rebuilt(x), model(x))
        maps = features(x)
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert rebuilt.num_features == rebuilt.get_classifier().in_features


@pytest.mark.parametrize("name,kwargs,side", REFUSED, ids=[c[0] for c in REFUSED])
def test_unsupported_family_is_refused_naming_why(name, kwargs, side):
    model, _, _ = small(name, kwargs, side)
    with pytest.raises(SenetError, match="cannot be pruned"):
        prune(model, ratio=0.5, criterion="l1")


@pytest.mark.parametrize("criterion", ["se", "bn"])
def test_pruned_logits_equal_the_unpruned_network_with_those_channels_zeroed(criterion):
    model = _cifar()
    reference = copy.deepcopy(model)
    x = _images(4)
    result = prune(model, ratio=0.5, criterion=criterion, calibration=_images(16), check=False)
    grouped = group_model(reference, (3, 32, 32))  # the same grouping, on the unpruned network
    with torch.no_grad():
        with zeroed(reference, removed_elements(grouped, result.removed)):
            want = reference(x)
        got = model(x)
        unzeroed = reference(x)
    assert_close(got, want)
    assert (got - unzeroed).abs().max() > 1e-3  # channels really went: the zeroing is what makes them equal


def test_the_built_in_check_catches_a_network_that_computes_something_else(monkeypatch):
    import senet.pruning.core as core

    apply = core.apply

    def broken(grouped, removed):
        apply(grouped, removed)
        with torch.no_grad():
            grouped.model.layer2[0].conv1.weight.add_(0.5)

    monkeypatch.setattr(core, "apply", broken)
    with pytest.raises(SenetError, match="zeroed"):
        prune(_cifar(), ratio=0.5, criterion="l1")


@pytest.mark.parametrize("target", [0.7, 0.5, 0.3])
def test_flops_target_is_met_within_two_percent(target):
    result = prune(_cifar(), flops=target, criterion="l1")
    assert abs(result.flops_after / result.flops_before - target) <= 0.02 * target
    assert result.flops_after == senet.complexity(result.model, (3, 32, 32)).flops


def test_every_criterion_prunes_a_target_to_the_same_widths():
    widths = {c: prune(_cifar(), flops=0.6, criterion=c, calibration=_images(16), seed=1).widths
              for c in ("se", "l1", "random")}
    assert len({json.dumps(sorted(w.items())) for w in widths.values()}) == 1


def test_residual_stream_and_se_fcs_are_one_group():
    model = _cifar()
    grouped = group_model(model, (3, 32, 32))
    stream = [g for g in grouped.groups if any(p == "layer1.0.bn2" for p, _, _ in g.units[0].elements)]
    assert len(stream) == 1
    unit = {(p, s) for p, s, _ in stream[0].units[0].elements}
    # every block of stage 1 adds into the same channels: its last BN, the SE FCs that read and
    # gate them, and the next block's first convolution's inputs move with the stem's outputs
    assert {("conv1", "out"), ("bn1", "both")} <= unit
    for b in range(3):
        assert {(f"layer1.{b}.bn2", "both"), (f"layer1.{b}.se.fc1", "in"), (f"layer1.{b}.se.fc2", "out"),
                (f"layer1.{b}.conv1", "in")} <= unit
    prune(model, ratio=0.5, criterion="l1")
    for m in model.modules():
        if isinstance(m, SqueezeExcite):
            assert m.fc1.in_channels == m.fc2.out_channels == m.channels
    se = model.layer1[0].se
    assert se.hidden == senet.create_model("cifar_se_resnet20").layer1[0].se.hidden  # C/r is kept
    assert len({model.conv1.out_channels, *(blk.conv2.out_channels for blk in model.layer1)}) == 1


def test_grouped_convolutions_lose_the_same_channels_in_every_group():
    model, x, _ = small("se_resnext26_32x4d", {}, 64)
    grouped = group_model(model, (3, 64, 64))
    conv = model.layer1[0].conv2
    inner = [g for g in grouped.prunable() if any(p == "layer1.0.conv2" and s == "in"
                                                  for p, s, _ in g.units[0].elements)]
    assert len(inner) == 1
    per_unit = [i for p, s, i in inner[0].units[0].elements if p == "layer1.0.conv2" and s == "in"]
    width = conv.in_channels // conv.groups
    assert len(per_unit) == conv.groups and sorted(i // width for i in per_unit) == list(range(conv.groups))
    with quiet():
        prune(model, ratio=0.5, criterion="l1", input_size=(3, 64, 64))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.groups == 32 and m.in_channels % 32 == 0 and m.out_channels % 32 == 0
    assert model(x).shape == (2, 5)


def test_se_criterion_needs_se_blocks_with_a_signal():
    with pytest.raises(SenetError, match="has none"):
        prune(_cifar(name="cifar_resnet20"), ratio=0.5, criterion="se", calibration=_images())
    prune(_cifar(name="cifar_resnet20"), ratio=0.5, criterion="l1")  # other criteria work without SE
    untrained = _cifar()
    with torch.no_grad():
        for m in untrained.modules():
            if isinstance(m, SqueezeExcite):
                m.fc2.weight.zero_()
                m.fc2.bias.zero_()
    with pytest.raises(SenetError, match="alike"):
        prune(untrained, ratio=0.5, criterion="se", calibration=_images())
    with pytest.raises(ValueError, match="calibration"):
        prune(_cifar(), ratio=0.5, criterion="se")


@pytest.mark.parametrize("target", [{"flops": 0}, {"flops": 1.5}, {"ratio": -0.1}, {"flops": float("nan")},
                                    {"flops": 0.5, "ratio": 0.5}, {}])
def test_bad_targets_are_refused(target):
    with pytest.raises(ValueError, match="target|fraction"):
        prune(_cifar(), criterion="l1", **target)


def test_missing_torch_pruning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(SenetError, match=r"senet\[prune\]"):
        prune(_cifar(), ratio=0.5, criterion="l1")


def _pruned_file(tmp_path: Path) -> Path:
    model = _cifar()
    prune(model, ratio=0.5, criterion="l1")
    return senet.save_weights(model, tmp_path / "pruned.safetensors", classes=[f"class{c}" for c in range(4)])


def _rewrite(src: Path, dst: Path, **header: str) -> Path:
    with safe_open(str(src), "pt") as f:
        meta = {**f.metadata(), **header}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.pop("sha256", None)
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("widths,words", [
    ('{"layer9.conv1": [4, 4]}', "no layer"),
    ('{"layer1.0.conv1": [64, 64]}', "wider"),
    ('{"layer1.0.bn1": [4, 5]}', "batch norm"),
    ('{"layer1.0.se.act": [4, 4]}', "not a layer"),
    ('{"x; import os": [1, 1]}', "module path"),
    ('{"conv1": [0, 2]}', "channel counts"),
    ('[1, 2]', "JSON object"),
    ('{"conv1": ', "widths"),
])
def test_damaged_widths_metadata_is_a_one_line_error(tmp_path, widths, words):
    bad = _rewrite(_pruned_file(tmp_path), tmp_path / "bad.safetensors", widths=widths)
    with pytest.raises(WeightsError, match=words) as e:
        senet.create_model(pretrained=bad)
    assert "\n" not in str(e.value) and "bad.safetensors" in str(e.value)


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    weights = senet.save_weights(_cifar(), tmp_path / "w.safetensors")
    for target in (["--flops", "0"], ["--flops", "1.2"], ["--ratio", "0"]):
        assert main(["prune", "--weights", str(weights), *target, "--criterion", "l1"]) == 2
        _one_line_error(capsys, target[0])
    plain = senet.save_weights(_cifar(name="cifar_resnet20"), tmp_path / "plain.safetensors")
    tree = make_tree(tmp_path / "tree", train=4, test=2)
    assert main(["prune", "--weights", str(plain), "--flops", "0.5", "--dataset", str(tree),
                 "--output", str(tmp_path / "p.safetensors")]) == 2
    _one_line_error(capsys, "has none", "--criterion")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(_pruned_file(tmp_path).read_bytes()[:-100])
    assert main(["prune", "--weights", str(damaged), "--flops", "0.5", "--criterion", "l1"]) == 2
    _one_line_error(capsys, "damaged.safetensors")
    assert not (tmp_path / "p.safetensors").exists()


def test_cli_pruned_file_evaluates_exports_predicts_analyzes_and_finetunes(tmp_path, capsys):
    """The pruned file alone is enough for every command (no model name, no widths given)."""
    tree = make_tree(tmp_path / "tree", train=6, test=3)
    weights = senet.save_weights(_cifar(), tmp_path / "w.safetensors", classes=[f"class{c}" for c in range(4)])
    pruned = tmp_path / "pruned.safetensors"
    assert main(["prune", "--weights", str(weights), "--flops", "0.5", "--criterion", "se", "--calibration", "8",
                 "--dataset", str(tree), "--eval", "--output", str(pruned)]) == 0
    out = capsys.readouterr().out
    assert "zeroed" in out and "test error" in out
    assert main(["eval", "--weights", str(pruned), "--dataset", str(tree)]) == 0
    assert "top-1 error" in capsys.readouterr().out
    assert main(["export", "--weights", str(pruned), "--format", "torchscript", "--output", str(tmp_path / "m.pt")]) == 0
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    model = senet.create_model(pretrained=pruned).eval()
    x = _images(2)
    with torch.no_grad():
        assert_close(scripted(x), model(x))
    image = next((tree / "test").rglob("*.png"))
    assert main(["predict", str(image), "--weights", str(pruned), "--topk", "1"]) == 0
    assert "class" in capsys.readouterr().out
    assert main(["analyze", "--weights", str(pruned), "--dataset", str(tree), "--out", str(tmp_path / "an")]) == 0
    assert main(["train", "--init", str(pruned), "--data", str(tree), "--out", str(tmp_path / "ft"),
                 "--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=0",
                 "--set", "data.batch_size=8", "--set", "run.max_steps=1", "--epochs", "1", "--no-progress"]) == 0
    tuned = senet.create_model(pretrained=tmp_path / "ft" / "model.safetensors")
    assert {k: v.shape for k, v in tuned.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["params"] == senet.complexity(model, (3, 16, 16)).params


def test_study_end_to_end_on_a_tiny_dataset(tmp_path, capsys):
    """Targets x criteria x seeds pruned and fine-tuned, the paired table, CSV, JSON and plot."""
    from senet.pruning.report import PLOT_PNG, RESULTS_CSV, RESULTS_JSON, TABLE_MD

    tree = make_tree(tmp_path / "tree", train=6, test=3)
    weights = senet.save_weights(_cifar(), tmp_path / "w.safetensors")
    out = tmp_path / "study"
    args = ["prune", "--study", "--weights", str(weights), "--dataset", "imagefolder", "--data", str(tree),
            "--flops", "0.6", "--criteria", "se,l1", "--seeds", "2", "--calibration", "8", "--epochs", "1",
            "--set", "data.crop=16", "--set", "data.pad=0", "--set", "data.batch_size=8", "--set", "run.max_steps=1",
            "--speed-rounds", "1", "--speed-batches", "1", "--no-onnx", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    for f in (TABLE_MD, RESULTS_CSV, RESULTS_JSON, PLOT_PNG):
        assert (out / f).stat().st_size > 0
    results = json.loads((out / RESULTS_JSON).read_text())
    se, l1 = (next(c for c in results["cells"] if c["criterion"] == k) for k in ("se", "l1"))
    assert se["params"] == l1["params"] and abs(se["flops_kept"] - 0.6) <= 0.012
    after_se, after_l1 = json.loads(se["err_after_by_seed"]), json.loads(l1["err_after_by_seed"])
    assert se["se_minus_l1_after"] == pytest.approx(sum(after_se[s] - after_l1[s] for s in after_se) / 2)
    assert se["speedup_eager_b1"] > 0
    capsys.readouterr()
    assert main(args) == 0  # a second run reuses everything
    assert "finished earlier" in capsys.readouterr().out
    # the same folder with another fine-tuning configuration: refused, results are never mixed
    assert main([*args, "--set", "optim.lr=0.5"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_speed_up_is_measured_in_eager_and_onnxruntime():
    """The study's speed figures: the pruned network runs, exported to ONNX as it is, beside the
    unpruned one, and each engine gets a speed-up and both networks' times."""
    from senet.pruning.speed import measure_speedup

    unpruned, pruned = _cifar(), _cifar()
    prune(pruned, ratio=0.5, criterion="l1")
    with quiet():
        speeds = measure_speedup(unpruned, pruned, (3, 32, 32), batches=(2,), rounds=1)
    for engine in ("eager_b2", "onnx_b2"):
        assert speeds[engine]["speedup"] > 0 and speeds[engine]["pruned_s"] > 0 and speeds[engine]["unpruned_s"] > 0

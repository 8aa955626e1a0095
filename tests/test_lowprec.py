"""Low-precision inference (senet.lowprec): int8 ONNX files checked against fp32 on held-out
inputs (one small model of every family, the refusal, ``senet export --int8``) and bf16 autocast
in ``senet predict`` / ``senet eval``."""

from __future__ import annotations

import json

import pytest
import torch

import senet
from senet.cli.main import main
from senet.errors import SenetError
from senet.export import export_model
from senet.int8 import Int8
from senet.lowprec import AgreementMeter, bf16_units
from senet.onnx_runtime import onnx_session, run_session
from tests.conftest import make_tree, randomise
from tests.model_cases import FAMILY_CASES, IDS, quiet, small

pytest.importorskip("onnxruntime")


def _inputs(n: int, side: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


#: VGG's classifier pools adaptively: 64 is enough here (FAMILY_CASES' 256 serves fixed-layout checks)
INT8_SIDE = {"se_vgg16_bn": 64}


def _varied(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier's biases zeroed: random ones pick one class for every input, which would make
    the agreement trivially perfect."""
    last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        last.bias.zero_()
    return model


@pytest.mark.parametrize("name,kwargs,side", FAMILY_CASES, ids=IDS)
def test_int8_file_of_every_family_runs_and_agrees_with_fp32(tmp_path, name, kwargs, side):
    """The int8 file runs in onnxruntime at another batch size, on inputs it was neither calibrated
    nor checked on, and its classes and probabilities follow the fp32 model there."""
    side = INT8_SIDE.get(name, side)
    model = _varied(small(name, kwargs, side)[0])
    with quiet():
        out = export_model(model, tmp_path / "m.onnx", int8=Int8(_inputs(4, side, 1), _inputs(4, side, 2),
                                                                 min_agreement=0.75), dynamic_batch=True)
    assert out.precision == "int8" and out.agreement.top1 >= 0.75
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    meta = senet.read_metadata(out.path)
    assert meta.extra["precision"] == "int8" and json.loads(meta.extra["int8_agreement"])["top1"] == out.agreement.top1
    assert meta.model == model.senet_spec.name and meta.mean == tuple(model.pretrained_cfg["mean"])
    fresh = _inputs(6, side, 3)
    got = run_session(onnx_session(out.path), fresh, 3)
    with torch.no_grad():
        ref = model(fresh)
    meter = AgreementMeter()
    meter.update(ref, got)
    assert meter.result().top1 >= 5 / 6 and meter.result().mean_abs_prob_diff < 0.02


def _se_ops(graph) -> dict[str, list]:
    return {op: [n for n in graph.node if n.op_type == op] for op in ("GlobalAveragePool", "Sigmoid", "Mul")}


def test_the_se_block_runs_in_int8_or_keeps_its_gate_in_float(tmp_path):
    """Default: squeeze, excitation, sigmoid gate and scaling of every SE block read int8 (QDQ
    pairs around each), none runs in float. ``se_gate="float"``: the gate's output and the
    scaling stay fp32, the squeeze and excitation convolutions are still int8."""
    onnx = pytest.importorskip("onnx")
    model = _varied(small("cifar_se_resnet20", {}, 32)[0])
    blocks = sum(isinstance(m, senet.layers.se.SqueezeExcite) for m in model.modules())
    graphs = {}
    for gate in ("int8", "float"):
        with quiet():
            out = export_model(model, tmp_path / f"{gate}.onnx",
                               int8=Int8(_inputs(4, 32, 1), _inputs(4, 32, 2), min_agreement=0.75, se_gate=gate))
        graphs[gate] = onnx.load(str(out.path)).graph
        assert senet.read_metadata(out.path).extra["int8_se_gate"] == gate
    for gate, graph in graphs.items():
        producer = {o: n.op_type for n in graph.node for o in n.output}
        consumers = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n.op_type)
        ops = _se_ops(graph)
        assert all(len(nodes) == blocks for nodes in ops.values()), gate
        assert all(producer[i] == "DequantizeLinear" for n in ops["GlobalAveragePool"] for i in n.input)
        gate_out = [consumers[n.output[0]] for n in ops["Sigmoid"]]
        if gate == "int8":
            assert all(producer[i] == "DequantizeLinear" for n in ops["Sigmoid"] + ops["Mul"] for i in n.input)
            assert all(c == ["QuantizeLinear"] for c in gate_out)
        else:
            assert all(c == ["Mul"] for c in gate_out)
        assert not [n for n in graph.node if n.op_type in ("ReduceSum", "Div")]


def test_a_pruned_model_quantizes_as_it_is(tmp_path):
    """A network ``senet prune`` narrowed (every stage and SE block of other widths than its
    registry name's) is exported and quantized as it is: prune + int8 end to end."""
    from senet.pruning import prune

    model = _varied(small("cifar_se_resnet20", {}, 32)[0])
    before = sum(p.numel() for p in model.parameters())
    prune(model, ratio=0.5, criterion="l1")
    assert sum(p.numel() for p in model.parameters()) < before
    model.eval()
    with quiet():
        out = export_model(model, tmp_path / "p.onnx", int8=Int8(_inputs(4, 32, 1), _inputs(8, 32, 2),
                                                                 min_agreement=0.75))
    fresh = _inputs(4, 32, 3)
    with torch.no_grad():
        ref = model(fresh)
    meter = AgreementMeter()
    meter.update(ref, run_session(onnx_session(out.path), fresh, 4))
    assert meter.result().top1 >= 0.75


def test_an_int8_file_that_disagrees_with_fp32_is_refused(tmp_path):
    """A degenerate model, whose logits differ by far less than their size (a bias of 1000 on
    each), cannot be represented in int8: its classes no longer follow fp32, the file is refused
    naming the figure, and nothing is written."""
    model = small("cifar_se_resnet20", {}, 32)[0]
    with torch.no_grad():
        model.fc.bias.fill_(1000.0)
    with quiet(), pytest.raises(SenetError, match=r"refused: its top-1 class agrees with fp32 on \d+\.\d+% of 32 "
                                                  r"held-out images, below the 99\.00% required.*nothing was written"):
        export_model(model, tmp_path / "m.onnx", int8=Int8(_inputs(8, 32, 1), _inputs(32, 32, 2)))
    assert not any(tmp_path.iterdir())
    with pytest.raises(SenetError, match="ONNX files only"):
        export_model(model, tmp_path / "m.pt", format="torchscript", int8=Int8(_inputs(2, 32, 1), _inputs(2, 32, 2)))
    for bad in ({"min_agreement": 99}, {"min_agreement": 1.01}, {"se_gate": "fp16"}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Int8(_inputs(2, 32, 1), _inputs(2, 32, 2), **bad)


@pytest.fixture
def trained(tmp_path):
    """A CIFAR-size model with weights and classes, and a tree of images of those classes."""
    model = randomise(senet.create_model("cifar_se_resnet20", num_classes=4)).eval()
    weights = senet.save_weights(model, tmp_path / "w.safetensors", classes=[f"class{i}" for i in range(4)])
    return model, weights, make_tree(tmp_path / "tree", classes=4, train=4, test=4, size=32)


def test_export_int8_cli(tmp_path, trained, capsys):
    model, weights, tree = trained
    out = tmp_path / "m-int8.onnx"
    assert main(["export", "--weights", str(weights), "--int8", "--images", str(tree), "--calibration", "8",
                 "--held-out", "8", "--min-agreement", "0", "--dynamic-batch", "--output", str(out)]) == 0
    said = capsys.readouterr().out
    assert "int8, top-1 agrees with fp32 on" in said and "of 8 images" in said
    meta = senet.read_metadata(out)
    assert meta.extra["precision"] == "int8" and meta.extra["int8_calibration_images"] == "8"
    assert meta.classes == [f"class{i}" for i in range(4)]
    # a dataset: its train split calibrates, its test split checks
    assert main(["export", "--weights", str(weights), "--int8", "--dataset", "imagefolder", "--data", str(tree),
                 "--calibration", "16", "--held-out", "16", "--min-agreement", "0", "--output", str(out)]) == 0
    assert "of 16 images" in capsys.readouterr().out
    for argv, message in (
        (["--calibration", "8"], "apply to --int8 only"),
        (["--int8", "--format", "torchscript", "--images", str(tree)], "ONNX files only"),
        (["--int8"], "needs calibration images"),
        (["--int8", "--images", str(tree), "--calibration", "20", "--held-out", "20"], "40 calibration and held-out "
                                                                                      "images asked for"),
        (["--int8", "--images", str(tree), "--min-agreement", "120"], "--min-agreement"),
        (["--int8", "--images", str(tmp_path / "missing")], "missing"),
    ):
        assert main(["export", "--weights", str(weights), "--output", str(tmp_path / "x.onnx"), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    with pytest.raises(SystemExit) as exit_:  # argparse's own check of a count
        main(["export", "--weights", str(weights), "--int8", "--images", str(tree), "--calibration", "0"])
    assert exit_.value.code == 2 and "--calibration: must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


needs_bf16 = pytest.mark.skipif(not bf16_units("cpu"), reason="this CPU has no bf16 units (AVX512_BF16, AMX or Arm BF16)")


@needs_bf16
def test_bf16_eval_and_predict_report_their_agreement_with_fp32(tmp_path, trained, capsys):
    _, weights, tree = trained
    assert main(["eval", "--weights", str(weights), "--dataset", "imagefolder", "--data", str(tree),
                 "--precision", "bf16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "top-1 error" in lines[0] and lines[1].strip().startswith("bf16: top-1 error")
    assert "agrees with fp32 on" in lines[1] and "of 16 images" in lines[1]
    out = tmp_path / "p.json"
    assert main(["predict", str(tree / "test"), "--weights", str(weights), "--precision", "bf16", "--batch-size", "8",
                 "--json", str(out), "--no-progress"]) == 0
    assert "bf16, first batch: top-1 agrees with fp32 on" in capsys.readouterr().err
    saved = json.loads(out.read_text())
    assert saved["precision"] == "bf16" and saved["agreement"]["images"] == 8 and len(saved["predictions"]) == 16
    assert saved["agreement"]["top1"] >= 0.75


def test_bf16_is_refused_without_bf16_units(tmp_path, trained, capsys, monkeypatch):
    import senet.lowprec

    monkeypatch.setattr(senet.lowprec, "bf16_units", lambda device="cpu": False)
    _, weights, tree = trained
    for argv in (["predict", str(tree / "test")], ["eval", "--dataset", "imagefolder", "--data", str(tree)]):
        assert main([*argv, "--weights", str(weights), "--precision", "bf16", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no bf16 units" in err and "--precision fp32" in err


def test_precision_choices_are_the_librarys():
    from senet.cli.options import PRECISIONS
    from senet.lowprec import PRECISIONS as LIBRARY

    assert PRECISIONS == LIBRARY

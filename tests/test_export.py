"""senet.export and ``senet export``: ONNX (dynamo exporter) and TorchScript files, verified against
PyTorch, carrying the model's preprocessing; one small model of every family."""

from __future__ import annotations

import pytest
import torch

import senet
from senet.cli.main import main
from senet.errors import SenetError
from senet.export import export_model
from senet.models import read_metadata
from tests.model_cases import FAMILY_CASES, IDS, small

pytest.importorskip("onnxruntime")


def _check_metadata(path, model) -> None:
    meta = read_metadata(path)
    cfg = model.pretrained_cfg
    assert meta.model == model.senet_spec.name and meta.format == "senet"
    assert meta.data["input_size"] == list(cfg["input_size"]) and meta.data["mean"] == list(cfg["mean"])
    assert meta.data["crop_pct"] == cfg["crop_pct"] and meta.data["interpolation"] == cfg["interpolation"]


@pytest.mark.parametrize("name,kwargs,side", FAMILY_CASES, ids=IDS)
def test_onnx_with_dynamic_batch_and_size(tmp_path, name, kwargs, side):
    """torch.export.export with batch and H/W dynamic, then the ONNX translation: onnxruntime
    agrees with PyTorch at the example shape and at another batch and size."""
    model, _, _ = small(name, kwargs, side)
    out = export_model(model, tmp_path / "m.onnx", input_size=(3, side, side), dynamic_batch=True,
                       dynamic_size=True, optimize=False)
    assert out.max_rel_diff <= 1e-4 and out.shapes == [(2, 3, side, side), (3, 3, side + 32, side + 64)]
    _check_metadata(out.path, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


@pytest.mark.parametrize("name,kwargs,side", FAMILY_CASES, ids=IDS)
def test_torchscript(tmp_path, name, kwargs, side):
    model, _, _ = small(name, kwargs, side)
    out = export_model(model, tmp_path / "m.pt", format="torchscript", input_size=(3, side, side),
                       dynamic_batch=True, dynamic_size=True)
    assert out.max_rel_diff <= 1e-5  # the same kernels as eager PyTorch
    _check_metadata(out.path, model)


@pytest.mark.parametrize("name,kwargs,side", [FAMILY_CASES[0], FAMILY_CASES[6]], ids=[IDS[0], IDS[6]])
def test_onnx_with_fixed_shapes_and_the_optimiser(tmp_path, name, kwargs, side):
    import onnx

    model, _, _ = small(name, kwargs, side)
    out = export_model(model, tmp_path / "m.onnx", input_size=(3, side, side), opset=18)
    graph = onnx.load(str(out.path))
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [2, 3, side, side]
    assert any(o.version == 18 for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def test_a_file_that_computes_something_else_is_refused(tmp_path, monkeypatch):
    import senet.export as export

    monkeypatch.setattr(export, "_run_onnx", lambda path, inputs: [torch.zeros(len(x), 10) for x in inputs])
    model = senet.create_model("cifar_resnet20")
    with pytest.raises(SenetError, match="does not compute what PyTorch computes.*nothing was written"):
        export_model(model, tmp_path / "bad.onnx", optimize=False)
    assert not any(tmp_path.iterdir())


def test_export_cli(tmp_path, capsys):
    saved = senet.create_model("cifar_se_resnet20", num_classes=4)
    weights = senet.save_weights(saved, tmp_path / "w.safetensors", classes=["a", "b", "c", "d"])
    assert main(["export", "--weights", str(weights), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    assert "largest difference from PyTorch" in capsys.readouterr().out
    assert read_metadata(tmp_path / "m.pt").classes == ["a", "b", "c", "d"]
    assert read_metadata(tmp_path / "m.pt") == read_metadata(weights)  # one header: the weight file's
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), saved.eval()(x))
    assert main(["export", "--model", "cifar_resnet20", "--format", "onnx", "--dynamic-batch", "--no-optimize",
                 "--out", str(tmp_path / "r.onnx")]) == 0
    assert read_metadata(tmp_path / "r.onnx").model == "cifar_resnet20"
    assert main(["export", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["export", "--pretrained"]) == 2
    assert "needs --model" in capsys.readouterr().err

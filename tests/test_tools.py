"""senet models in the PyTorch ecosystem's tools: fx and torchvision's feature extraction (every
model), and torch.jit.trace, the TorchScript-based ONNX exporter (with onnxruntime) and
torch.compile (one small model per family and per code path: the tools see the same modules
whatever the depth). torch.export with dynamic batch and H/W, TorchScript and the dynamo ONNX
exporter: tests/test_export.py (senet.export runs torch.export.export itself)."""

from __future__ import annotations

import io

import pytest
import torch

import senet
from tests.model_cases import FAMILY_CASES, IDS, PLACEMENT_CASES, assert_close, quiet, small

MODELS = senet.list_models()

@pytest.mark.parametrize("name", MODELS)
def test_fx_and_feature_extraction(name):
    """fx symbolic tracing and torchvision's create_feature_extractor, on every model (meta device)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.device("meta"):
        model = senet.create_model(name).eval()
    x = torch.empty(1, *senet.model_info(name).input_size, device="meta")
    graph = torch.fx.symbolic_trace(model)
    assert graph(x).shape == model(x).shape
    nodes = {e["module"]: str(i) for i, e in enumerate(model.feature_info)}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    assert [v.shape[1] for v in extractor(x).values()] == [e["num_chs"] for e in model.feature_info]


@pytest.mark.parametrize("name,kwargs,side", FAMILY_CASES + PLACEMENT_CASES,
                         ids=IDS + [f"placement={c[1]['placement']}" for c in PLACEMENT_CASES])
def test_trace_and_torchscript_onnx(name, kwargs, side):
    """torch.jit.trace (with its own check) agrees with eager PyTorch; the TorchScript-based ONNX
    exporter with dynamic batch and H/W matches in onnxruntime. (torch.jit.script and the dynamo
    ONNX exporter: senet.export, tests/test_export.py.)"""
    ort = pytest.importorskip("onnxruntime")
    model, x, other = small(name, kwargs, side)
    with torch.no_grad():
        ref, ref_other = model(x), model(other)
        with quiet():
            traced = torch.jit.trace(model, x, check_inputs=[(other,)])
        assert_close(traced(other), ref_other, 1e-5)
    f = io.BytesIO()
    with quiet():
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for inp, expected in ((x, ref), (other, ref_other)):
        assert_close(torch.from_numpy(session.run(None, {"x": inp.numpy()})[0]), expected)


@pytest.mark.parametrize("name,kwargs,side", FAMILY_CASES, ids=IDS)
def test_compile_fullgraph(name, kwargs, side):
    """torch.compile(fullgraph=True) captures the whole forward: no graph break (dynamo's capture,
    with the eager backend so the test does not wait for code generation)."""
    model, x, _ = small(name, kwargs, side)
    torch._dynamo.reset()
    with torch.no_grad():
        assert_close(torch.compile(model, fullgraph=True, backend="eager")(x), model(x), 1e-5)


def test_se_block_submodules_are_called_as_modules():
    """Hooks on the SE block's squeeze, FC layers and gate see one call each."""
    model = senet.create_model("cifar_se_resnet20").eval()
    se = model.layer1[0].se
    calls = []
    for child in (se.pool, se.fc1, se.act, se.fc2, se.gate):
        child.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert calls == ["AvgSqueeze", "PooledFC", "ReLU", "PooledFC", "Sigmoid"]

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


def test_se_block_steps_are_modules_that_hooks_see():
    """Each step of the SE block (squeeze, fc1, act, fc2, gate, scale) is a module called once per
    forward, in that order: a hook on the gate sees the excitation ``s``, one on the scale step
    sees ``u``, ``s`` and the block's output (``identity + u * s`` in a residual unit)."""
    model = senet.create_model("cifar_se_resnet20").eval()
    se = model.layer1[0].se
    steps = ("pool", "fc1", "act", "fc2", "gate", "scale")
    seen = []
    for name in steps:
        getattr(se, name).register_forward_hook(lambda m, i, o, n=name: seen.append((n, i, o.clone())))
    block_io = []
    model.layer1[0].register_forward_hook(lambda m, i, o: block_io.append((i[0], o)))
    se.register_forward_pre_hook(lambda m, i: block_io.append(i[0].clone()))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert [n for n, _, _ in seen] == list(steps)
    out = {n: o for n, _, o in seen}
    assert out["pool"].shape == (2, 16, 1, 1) and out["fc1"].shape == (2, se.hidden, 1, 1)
    s = out["gate"]
    assert s.shape == (2, 16, 1, 1) and 0 < s.min() and s.max() < 1
    u, (unit_in, unit_out) = block_io
    scale_in = seen[-1][1]
    assert torch.equal(scale_in[0], u) and torch.equal(scale_in[1], s)
    torch.testing.assert_close(unit_out, torch.relu(unit_in + u * s))  # the unit: relu(identity + u * s)
    torch.testing.assert_close(torch.relu(out["scale"]), unit_out)


@pytest.mark.parametrize("squeeze", ["avg", "none"])
def test_se_layers_feed_their_parameters_to_autograd_directly(squeeze):
    """Structural pruning (torch-pruning's DepGraph) maps the autograd node that makes a module's
    output to the module and follows it to the module's parameters: each FC layer's output must
    come from an op on its weight itself (no view or reshape of the weight or of the output)."""
    se = senet.SqueezeExcite(32, 4, squeeze=squeeze)
    nodes = {}
    for name in ("fc1", "fc2"):
        getattr(se, name).register_forward_hook(lambda m, i, o, n=name: nodes.__setitem__(n, o.grad_fn))
    se(torch.randn(2, 32, 5, 5)).sum().backward()
    for name in ("fc1", "fc2"):
        fc = getattr(se, name)
        params = {id(f.variable) for f, _ in nodes[name].next_functions if f is not None and hasattr(f, "variable")}
        assert params == {id(fc.weight), id(fc.bias)}

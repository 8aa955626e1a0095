"""senet models in the PyTorch ecosystem's tools: fx and torchvision's feature extraction (every
model), and TorchScript, torch.jit.trace, torch.export, both ONNX exporters (with onnxruntime)
and torch.compile (one small model per family and per code path: the tools see the same modules
whatever the depth)."""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
from torch import nn

import senet
from tests.conftest import randomise

MODELS = senet.list_models()

# (name, keywords, input side): every family, its SE and plain paths, the stochastic-depth path,
# the deep stem and the odd layouts (ceil-mode pooling, valid padding, grouped convolutions)
FAMILY_CASES = [
    ("se_resnet18", {"se_stages": (3, 4)}, 64),
    ("se_resnext26_32x4d", {"stem": "deep", "down_kernel": 3, "drop_path_rate": 0.1}, 64),
    ("cifar_se_resnet20", {}, 32),
    ("se_wrn16_8", {}, 32),
    ("se_shake_shake26_2x32d", {}, 32),
    ("se_vgg16_bn", {"mlp_width": 32}, 224),
    ("se_bn_inception", {}, 64),
    ("se_inception_resnet_v2", {"blocks": (1, 1, 1)}, 75),
    ("se_mobilenet", {"width_mult": 0.25}, 64),
    ("se_shufflenet_g3", {"layers": (2, 1, 1)}, 64),
]
PLACEMENT_CASES = [("cifar_se_resnet20", {"placement": p}, 32) for p in ("pre", "post", "identity", "conv3x3")]
IDS = [c[0] for c in FAMILY_CASES]


def small(name: str, kwargs: dict, side: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model in eval mode with random BN statistics, an input and a second input of another
    batch size and spatial size (for the dynamic-shape checks)."""
    torch.manual_seed(0)
    model = randomise(senet.create_model(name, num_classes=5, **kwargs)).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(2, 3, side, side, generator=g), torch.randn(1, 3, side + 32, side + 64, generator=g)


def assert_close(out: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    err = (out - ref).abs().max().item()
    assert err <= rel * ref.abs().max().item(), f"max |diff| {err:.3g} for logits up to {ref.abs().max().item():.3g}"


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


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
def test_torchscript_trace_and_onnx(name, kwargs, side):
    """torch.jit.script and torch.jit.trace (with its own check) agree with eager PyTorch; the
    TorchScript-based ONNX exporter with dynamic batch and H/W matches in onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    model, x, other = small(name, kwargs, side)
    with torch.no_grad():
        ref, ref_other = model(x), model(other)
        with quiet():
            scripted = torch.jit.script(model)
            traced = torch.jit.trace(model, x, check_inputs=[(other,)])
        assert_close(scripted(other), ref_other, 1e-5)
        assert_close(traced(other), ref_other, 1e-5)
    f = io.BytesIO()
    with quiet():
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for inp, expected in ((x, ref), (other, ref_other)):
        assert_close(torch.from_numpy(session.run(None, {"x": inp.numpy()})[0]), expected)


@pytest.mark.parametrize("name,kwargs,side", FAMILY_CASES, ids=IDS)
def test_export_and_dynamo_onnx(name, kwargs, side):
    """torch.export with dynamic batch and H/W (through the dynamo ONNX exporter, which is built on
    it): the exported program and onnxruntime both match eager PyTorch at another shape."""
    ort = pytest.importorskip("onnxruntime")
    model, x, other = small(name, kwargs, side)
    auto = torch.export.Dim.AUTO
    with quiet():
        program = torch.onnx.export(model, (x,), dynamo=True, optimize=False, input_names=["x"],
                                    dynamic_shapes=({0: auto, 2: auto, 3: auto},))
    with torch.no_grad():
        ref_other = model(other)
        assert_close(program.exported_program.module()(other), ref_other, 1e-5)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(torch.from_numpy(session.run(None, {"x": other.numpy()})[0]), ref_other)


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
    assert calls == ["AvgSqueeze", "Conv2d", "ReLU", "Conv2d", "Sigmoid"]

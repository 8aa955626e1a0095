"""Every registered model gets the same checks, parametrized over the registry."""

import pytest
import torch

import senet
from senet.layers import SqueezeExcite

MODELS = senet.list_models()


def _small_input(name: str, batch: int = 2) -> torch.Tensor:
    info = senet.model_info(name)
    c, h, w = info.input_size
    side = max(32 if h <= 32 else 64, info.min_input_size)
    return torch.randn(batch, c, side, side)


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    """(name, model) for the checks below: each registered model built once (pytest groups the
    tests by model; initialising the large ones costs more than running them)."""
    torch.manual_seed(0)
    return request.param, senet.create_model(request.param, num_classes=7)


def test_forward_backward_shapes(built):
    name, model = built
    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(0)
    x = _small_input(name)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_se_blocks_are_all_called(built):
    """Each SE block runs exactly once per forward pass (spec section 9)."""
    name, model = built
    model.eval()
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert bool(se) == senet.model_info(name).has_se
    calls = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod)) for m in se]
    try:
        with torch.no_grad():
            model(_small_input(name, 1))
    finally:
        for h in hooks:
            h.remove()
    assert len(calls) == len(se) and {id(m) for m in calls} == {id(m) for m in se}


@pytest.mark.parametrize("name", [n for n in MODELS if senet.model_info(n).input_size[1] > 32][:3])
@pytest.mark.parametrize("side", [97, 160])
def test_any_input_size(name, side):
    model = senet.create_model(name, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, side, side)).shape == (1, 3)


def test_default_num_classes():
    assert senet.create_model("resnet18").fc.out_features == 1000


def test_unknown_name_lists_the_closest():
    with pytest.raises(ValueError, match="closest: se_resnet50"):
        senet.create_model("se_resnet5")


def test_list_models_pattern():
    assert senet.list_models("se_resnet*") == [
        "se_resnet101", "se_resnet152", "se_resnet18", "se_resnet34", "se_resnet50",
    ]
    assert "senet154" in MODELS and "resnext101_32x4d" in MODELS


def test_stride_layouts():
    """stride_in_1x1 (released SENet / Caffe) vs V1.5 (torchvision): same params, ~4.1 vs 3.86 GFLOPs."""
    with torch.device("meta"):
        caffe = senet.complexity(senet.create_model("resnet50"))
        v15 = senet.complexity(senet.create_model("resnet50", stride_in_1x1=False))
    assert caffe.params == v15.params
    assert round(caffe.gflops, 2) == 3.86 and 4.05 < v15.gflops < 4.15

"""``senet.add_se``: SE blocks in torchvision / timm / custom networks (issue 4, spec section 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import senet
from tests.conftest import randomise
from senet.complexity import count_params
from senet.layers import SqueezeExcite
from senet.models import vgg
from senet.surgery import DESCEND, ResidualLayout, SEAfter, SEResidual, register_se_rule

torchvision = pytest.importorskip("torchvision")


def se_blocks(model: nn.Module) -> list[SqueezeExcite]:
    return [m for m in model.modules() if isinstance(m, SqueezeExcite)]


def test_torchvision_resnet50_is_senet_se_resnet50():
    """torchvision's ResNet-50 strides the 3x3 ("V1.5") and pads its stem pooling: with SE it is
    senet's SE-ResNet-50 with stride_in_1x1=False, stem_pool="torch", parameter for parameter."""
    torch.manual_seed(0)
    model = senet.add_se(torchvision.models.resnet50())
    ref = senet.create_model("se_resnet50", stride_in_1x1=False, stem_pool="torch")
    assert count_params(model) == count_params(ref) == 28_088_024
    assert isinstance(model.layer1[0], SEResidual) and len(se_blocks(model)) == 16
    randomise(model)
    assert senet.load_weights(ref, model.state_dict()) == ([], [])  # torchvision keys = timm's ResNet keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref.eval()(x), model.eval()(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_existing_weights_are_kept():
    model = torchvision.models.resnet18()
    before = dict(model.named_parameters())
    values = {k: v.detach().clone() for k, v in before.items()}
    old_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert senet.add_se(model) is model  # in place
    after = dict(model.named_parameters())
    assert all(after[k] is p for k, p in before.items())  # same Parameter objects, same names
    assert all(torch.equal(after[k], v) for k, v in values.items())
    new = set(after) - set(before)
    assert new and all(".se." in k for k in new)
    missing, unexpected = model.load_state_dict(old_state, strict=False)  # the original checkpoint still loads
    assert not unexpected and all(".se." in k for k in missing)


def test_new_se_blocks_start_sanely_and_are_all_called():
    model = senet.add_se(torchvision.models.resnet18(num_classes=5)).double()
    se = se_blocks(model)
    assert all(m.fc1.weight.dtype == torch.float64 for m in se)
    assert all(not m.fc2.bias.any() and m.fc1.weight.std() > 0 for m in se)
    calls, gates = [], []
    for m in se:
        m.register_forward_hook(lambda mod, i, o: calls.append(mod))
        m.gate.register_forward_hook(lambda mod, i, o: gates.append(o))
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert torch.isfinite(out).all()
    assert sorted(map(id, calls)) == sorted(map(id, se))
    s = torch.cat([g.flatten() for g in gates])
    assert 0.3 < s.mean() < 0.7 and s.min() > 0.001  # no channel switched off at the start


def test_the_result_trains():
    torch.manual_seed(0)
    block = torchvision.models.resnet.BasicBlock
    model = senet.add_se(torchvision.models.resnet.ResNet(block, [1, 1, 1, 1], num_classes=4))
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # built after add_se
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for m in se_blocks(model) for p in m.parameters())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("placement", ["standard", "pre", "post", "identity", "conv3x3"])
def test_placements_match_senet(placement):
    torch.manual_seed(0)
    model = randomise(senet.add_se(torchvision.models.resnet18(), placement=placement, reduction=8))
    ref = senet.create_model("se_resnet18", stem_pool="torch", placement=placement, reduction=8)
    assert senet.load_weights(ref, model.state_dict()) == ([], [])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x), rtol=0, atol=1e-5)


def test_stages_use_the_papers_numbering():
    model = senet.add_se(torchvision.models.resnet50(), se_stages=[5])
    assert count_params(model) == count_params(senet.create_model("se_resnet50", se_stages=[5]))
    assert isinstance(model.layer4[0], SEResidual) and not isinstance(model.layer3[0], SEResidual)
    with pytest.raises(ValueError, match=r"stages are \[2, 3, 4, 5\]"):
        senet.add_se(torchvision.models.resnet18(), se_stages=[1])


def test_old_stages_keyword_still_works_with_a_warning():
    with pytest.warns(FutureWarning, match=r"se_stages="):
        model = senet.add_se(torchvision.models.resnet18(), stages=[5])
    assert len(se_blocks(model)) == 2 and isinstance(model.layer4[0], SEResidual)
    with pytest.raises(ValueError, match="both se_stages= and stages="):
        senet.add_se(torchvision.models.resnet18(), se_stages=[4], stages=[5])


def test_se_options_pass_through():
    model = senet.add_se(torchvision.models.resnet18(), reduction=4, se_bias=False, gate="tanh")
    first = se_blocks(model)[0]
    assert first.hidden == 16 and first.fc1.bias is None and isinstance(first.gate, nn.Tanh)
    with pytest.raises(ValueError, match=r"unknown SE options \['se_ratio'\]"):
        senet.add_se(torchvision.models.resnet18(), se_ratio=0.25)
    with pytest.raises(ValueError, match="unknown placement"):
        senet.add_se(torchvision.models.resnet18(), placement="middle")


def test_vgg_gets_se_after_each_conv_activation():
    with torch.device("meta"):
        model = senet.add_se(torchvision.models.vgg16_bn())
        ref = senet.create_model("se_vgg16_bn")
    assert count_params(model) == count_params(ref)
    wrapped = [m for m in model.features if isinstance(m, SEAfter)]
    assert len(wrapped) == 13 and all(isinstance(m.module, nn.ReLU) for m in wrapped)
    assert not any(isinstance(m, SEAfter) for m in model.classifier)
    with pytest.raises(ValueError, match="placement 'post' needs residual blocks"):
        senet.add_se(torchvision.models.vgg11(), placement="post")


def test_vgg_features_match_senet_se_vgg():
    """torchvision's VGG-16 conv stack with add_se computes senet's SE-VGG-16 features."""
    torch.manual_seed(0)
    tv_cfg = torchvision.models.vgg.cfgs["D"]
    features = randomise(senet.add_se(torchvision.models.vgg.make_layers(tv_cfg, batch_norm=True)))
    ref = senet.create_model("se_vgg16_bn", mlp_width=8, num_classes=2)
    state = {}
    for key, value in features.state_dict().items():
        index, _, rest = key.partition(".")
        if rest.startswith("se."):  # SEAfter wraps the ReLU two places after its convolution
            index = str(int(index) - 2)
        state[f"features.{index}.{rest}"] = value
    # torchvision numbers the conv stack as timm does
    mapped = {k.replace(".conv.se.", ".se."): v for k, v in vgg.from_timm(state).state.items()}
    missing, unexpected = ref.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.startswith(("pre_logits.", "fc.")) for k in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(features.eval()(x), ref.eval().forward_features(x), rtol=0, atol=1e-5)


timm = pytest.importorskip("timm")


def test_timm_resnet18_is_timm_seresnet18():
    """timm's SE-ResNet rounds SE widths to multiples of 8: se_divisor=8 gives the same network."""
    torch.manual_seed(0)
    model = senet.add_se(timm.create_model("resnet18"), se_divisor=8)
    ref = randomise(timm.create_model("seresnet18"))
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x), rtol=0, atol=1e-5)


def test_timm_bottleneck_resnet_and_vgg():
    with torch.device("meta"):
        model = senet.add_se(timm.create_model("resnet50"), se_divisor=8)
        assert count_params(model) == count_params(timm.create_model("seresnet50"))
        tvgg = senet.add_se(timm.create_model("vgg11_bn"))  # the ConvMlp head is left alone
    assert len(se_blocks(tvgg)) == 8 and not se_blocks(tvgg.pre_logits)


class Odd(nn.Module):
    """A residual block add_se has never heard of."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.b(torch.relu(self.a(x)))))


class Declared(Odd):
    """The same block, declaring its layout itself (the protocol of add_se)."""

    se_layout = ResidualLayout(branch=("a", "_relu", "b", "bn"), shortcut=None, act="_relu", conv3x3=1)

    def __init__(self, c: int = 8) -> None:
        super().__init__(c)
        self._relu = nn.ReLU()


def _net(block: type) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), block(), block(), nn.AdaptiveAvgPool2d(1))


def test_unknown_module_type_is_an_error_that_says_how_to_register_it():
    with pytest.raises(ValueError, match=r"module type .*test_add_se\.Odd \(at '2'\).*register_se_rule\(Odd"):
        senet.add_se(_net(Odd))
    with pytest.raises(ValueError, match="InvertedResidual"):
        senet.add_se(torchvision.models.mobilenet_v2())


def test_registered_and_declared_residual_blocks():
    net = _net(Declared)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        plain = net(x)
    senet.add_se(net, reduction=4)
    assert isinstance(net[2], SEResidual) and not isinstance(net[1], SEAfter)  # blocks only, stem untouched
    with torch.no_grad():
        for m in se_blocks(net):  # gate -> 1: the wrapped block computes what the original did
            nn.init.zeros_(m.fc2.weight)
            nn.init.constant_(m.fc2.bias, 30.0)
        torch.testing.assert_close(net(x), plain)

    class Odd2(Odd):
        pass

    register_se_rule(Odd2, lambda m, se, stage: SEAfter(m, se.make(8)))
    assert len(se_blocks(senet.add_se(_net(Odd2), reduction=4))) == 2
    register_se_rule(Odd2, None)  # leave it alone: then the plain stem conv gets SE
    out = senet.add_se(_net(Odd2), reduction=4)
    assert isinstance(out[1], SEAfter) and len(se_blocks(out)) == 1
    with pytest.raises(ValueError, match="rule must be"):
        register_se_rule(Odd2, 3)


def test_descend_rule_and_wrapped_models():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torchvision.models.resnet18()
            self.extra = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(self.extra(x))

    model = senet.add_se(Wrapper())  # the root and torchvision's ResNet are looked into
    assert len(se_blocks(model)) == 8 and not isinstance(model.extra, SEAfter)

    class Holder(nn.Module):  # not the root: unknown, until registered as a container
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())

    with pytest.raises(ValueError, match="Holder"):
        senet.add_se(nn.Sequential(Holder()))
    register_se_rule(Holder, DESCEND)
    assert len(se_blocks(senet.add_se(nn.Sequential(Holder())))) == 1


def test_refuses_twice_and_models_without_a_place():
    model = senet.add_se(torchvision.models.resnet18())
    with pytest.raises(ValueError, match="already has SE blocks"):
        senet.add_se(model)
    with pytest.raises(ValueError, match="no place for an SE block"):
        senet.add_se(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_senet_resnet_blocks():
    model = senet.add_se(senet.create_model("resnet50"), se_stages=[4, 5])
    assert count_params(model) == count_params(senet.create_model("se_resnet50", se_stages=[4, 5]))

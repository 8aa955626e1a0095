"""The SE block (eqs. 2-4) and its variants (Tables 10-16)."""

import pytest
import torch
import torch.nn.functional as F

import senet
from senet.layers import SEConfig, SqueezeExcite, hidden_channels


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomise(se: SqueezeExcite) -> SqueezeExcite:
    for p in se.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return se


def test_forward_is_equations_2_to_4():
    se = _randomise(SqueezeExcite(32, 4))
    u = torch.randn(3, 32, 5, 7)
    z = u.mean((2, 3))  # eq. 2
    w1, b1 = se.fc1.weight.view(8, 32), se.fc1.bias
    w2, b2 = se.fc2.weight.view(32, 8), se.fc2.bias
    s = torch.sigmoid(F.relu(z @ w1.T + b1) @ w2.T + b2)  # eq. 3
    expected = u * s[:, :, None, None]  # eq. 4
    torch.testing.assert_close(se(u), expected)
    residual = torch.randn_like(u)
    torch.testing.assert_close(se(u, residual), residual + expected)


def test_max_squeeze():
    se = _randomise(SqueezeExcite(16, 4, squeeze="max"))
    u = torch.randn(2, 16, 4, 4)
    z = u.amax((2, 3))
    s = torch.sigmoid(F.relu(z @ se.fc1.weight.view(4, 16).T + se.fc1.bias) @ se.fc2.weight.view(16, 4).T + se.fc2.bias)
    torch.testing.assert_close(se.excite(u), s[:, :, None, None])


def test_nosqueeze_gates_every_position_with_same_parameters():
    avg, none = SqueezeExcite(64, 16), SqueezeExcite(64, 16, squeeze="none")
    assert [p.shape for p in avg.parameters()] == [p.shape for p in none.parameters()]
    none.load_state_dict(_randomise(avg).state_dict())
    u = torch.randn(2, 64, 6, 5)
    s = none.excite(u)
    assert s.shape == u.shape
    # one position's gate is the avg-squeeze gate of that position's vector alone
    pos = u[:, :, 2:3, 3:4]
    torch.testing.assert_close(s[:, :, 2:3, 3:4], avg.excite(pos))


@pytest.mark.parametrize("gate,low,high", [("sigmoid", 0, 1), ("tanh", -1, 1), ("relu", 0, float("inf"))])
def test_gate_range(gate, low, high):
    se = _randomise(SqueezeExcite(32, 2, gate=gate))
    s = se.excite(torch.randn(64, 32, 3, 3) * 5)
    assert s.min() >= low and s.max() <= high
    if gate == "relu":
        assert (s == 0).any() and (s > 1).any()  # unbounded above, unlike the sigmoid


def test_bias_option():
    assert SqueezeExcite(64, 16, bias=False).fc1.bias is None
    assert sum(p.numel() for p in SqueezeExcite(64, 16, bias=False).parameters()) == 2 * 64 * 64 // 16


@pytest.mark.parametrize("c,r,divisor,expected", [(256, 16, None, 16), (2048, 16, None, 128), (64, 32, None, 2),
                                                  (16, 16, None, 1), (16, 16, 8, 8), (100, 16, 8, 8), (2048, 16, 8, 128),
                                                  (96, 16, 8, 8), (200, 16, 8, 16)])
def test_hidden_size(c, r, divisor, expected):
    assert hidden_channels(c, r, divisor) == expected
    assert SqueezeExcite(c, r, divisor=divisor).fc1.out_channels == expected


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(reduction=0), "must be > 0"),
        (dict(reduction=-2), "must be > 0"),
        (dict(gate="softmax"), "allowed: 'sigmoid', 'tanh', 'relu'"),
        (dict(squeeze="median"), "allowed: 'avg', 'max', 'none'"),
        (dict(placement="inside"), "allowed: 'standard', 'pre', 'post', 'identity', 'conv3x3'"),
        (dict(se_stages=(1, 2)), "stage(s) [1] that do not exist"),
        (dict(se_stages=(6,)), "this model's stages are [2, 3, 4, 5]"),
        (dict(reduction=128), "rounds to 0"),
        (dict(se_divisor=0), "se_divisor"),
    ],
)
def test_invalid_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        senet.create_model("se_resnet18", **kwargs)


@pytest.mark.parametrize("kwargs,message", [(dict(squeeze="median"), "allowed: 'avg', 'max', 'none'"),
                                            (dict(gate="softmax"), "allowed: 'sigmoid'"),
                                            (dict(reduction=0), "must be > 0"), (dict(reduction=64), "rounds to 0"),
                                            (dict(divisor=2.5), "se_divisor"), (dict(divisor=0), "se_divisor")])
def test_the_block_alone_checks_its_keywords(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SqueezeExcite(32, **{"reduction": 4, **kwargs})


def test_se_options_on_a_baseline_are_an_error():
    with pytest.raises(ValueError, match="without SE blocks"):
        senet.create_model("resnet50", reduction=8)


def test_config_round_trips_through_kwargs():
    cfg = SEConfig(reduction=8, bias=False, squeeze="max", gate="tanh", placement="pre", stages=(3, 4), divisor=8)
    assert SEConfig.from_kwargs(cfg.to_kwargs()) == cfg


def _se_modules(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, SqueezeExcite)}


@pytest.mark.parametrize("stages,expected", [((2,), {"layer1"}), ((3,), {"layer2"}), ((4,), {"layer3"}),
                                             ((5,), {"layer4"}), ((3, 5), {"layer2", "layer4"}), ((), set())])
def test_stage_selection(stages, expected):
    model = senet.create_model("se_resnet50", se_stages=stages)
    assert {n.split(".")[0] for n in _se_modules(model)} == expected
    depth = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
    assert len(_se_modules(model)) == sum(depth[s] for s in expected)


def test_no_stage_is_the_baseline():
    a = senet.create_model("se_resnet50", se_stages=())
    b = senet.create_model("resnet50")
    assert senet.complexity(a).params == senet.complexity(b).params


def _capture(model, block, x):
    """Run ``model`` and return (SE input, the block's named intermediate tensors)."""
    seen = {}
    hooks = [block.se.register_forward_hook(lambda m, i, o: seen.__setitem__("se_in", i[0].clone()))]
    for name in ("bn2", "bn3", "downsample"):
        mod = getattr(block, name, None)
        if mod is not None:
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o.clone())))
    hooks.append(block.register_forward_hook(lambda m, i, o: seen.update(block_in=i[0].clone(), block_out=o.clone())))
    model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("placement", ["standard", "pre", "post", "identity", "conv3x3"])
def test_placement_position_in_the_bottleneck(placement):
    model = senet.create_model("se_resnet50", placement=placement).eval()
    block = model.layer2[0]  # a downsampling block: identity path is the projection
    with torch.no_grad():
        seen = _capture(model, block, torch.randn(2, 3, 64, 64))
    where = {
        "standard": lambda: seen["bn3"],
        "pre": lambda: seen["block_in"],
        "post": lambda: F.relu(seen["bn3"] + seen["downsample"]),
        "identity": lambda: seen["downsample"],
        "conv3x3": lambda: F.relu(seen["bn2"]),
    }[placement]()
    torch.testing.assert_close(seen["se_in"], where)
    expected_channels = {"standard": 512, "pre": 256, "post": 512, "identity": 512, "conv3x3": 128}[placement]
    assert block.se.channels == expected_channels


@pytest.mark.parametrize("placement", ["standard", "pre", "post", "identity"])
def test_placement_changes_the_block_as_described(placement):
    """The unit's output follows the placement's formula (Fig. 5 of the paper)."""
    model = senet.create_model("se_resnet18", placement=placement).eval()
    block = model.layer2[0]
    for p in block.se.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        identity = block.downsample(x)
        branch = lambda t: block.bn2(block.conv2(F.relu(block.bn1(block.conv1(t)))))  # noqa: E731
        if placement == "standard":
            u = branch(x)
            expected = F.relu(identity + u * block.se.excite(u))
        elif placement == "pre":
            expected = F.relu(identity + branch(block.se(x)))
        elif placement == "post":
            expected = block.se(F.relu(identity + branch(x)))
        else:
            expected = F.relu(branch(x) + identity * block.se.excite(identity))
        torch.testing.assert_close(block(x), expected)


def test_every_se_block_is_called_once_and_matters():
    """Guards against SE modules that exist but are never called (spec section 9)."""
    model = senet.create_model("se_resnet50").eval()
    calls = {}
    for name, se in _se_modules(model).items():
        se.register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    assert calls == {n: 1 for n in _se_modules(model)} and len(calls) == 16
    with torch.no_grad():
        for se in _se_modules(model).values():
            se.fc2.weight.zero_()
            se.fc2.bias.fill_(-30.0)  # gate ~ 0: the branch is switched off
        after = model(x)
    assert not torch.allclose(before, after, atol=1e-3)


def test_gate_hook_sees_the_excitation():
    se = _randomise(SqueezeExcite(32, 4))
    got = []
    se.gate.register_forward_hook(lambda m, i, o: got.append(o))
    u = torch.randn(2, 32, 4, 4)
    se(u)
    torch.testing.assert_close(got[0], se.excite(u))

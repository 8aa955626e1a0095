"""CIFAR model families (issue 3): ResNet-20..110, pre-act ResNet-164, WRN, Shake-Shake, with SE."""

import csv
from decimal import Decimal
from pathlib import Path

import pytest
import torch

import senet
from senet.complexity import count_params
from senet.layers import PLACEMENTS, SqueezeExcite
from senet.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD, CifarResNet, ZeroPadShortcut
from senet.models.shake_shake import ShakeBlock, ShakeResNet, TwoPathShortcut
from senet.models.wide_resnet import WideResNet

FAMILIES = ("cifar_resnet", "wide_resnet", "shake_shake")
NAMES = [n for n in senet.list_models() if senet.model_info(n).family in FAMILIES]
TABLE = list(csv.DictReader((Path(__file__).parent / "data" / "cifar_params.csv").open()))


def _small(kind: str, **se_kwargs) -> torch.nn.Module:
    """Small members of each family (one block per stage), with SE if ``se_kwargs`` is not None."""
    se = senet.SEConfig(**se_kwargs) if se_kwargs is not None else None
    torch.manual_seed(0)
    return {
        "basic": lambda: CifarResNet(8, se=se),
        "preact_bottleneck": lambda: CifarResNet(11, block="preact_bottleneck", shortcut="B", se=se),
        "wrn": lambda: WideResNet(10, 2, se=se),
        "shake": lambda: ShakeResNet(8, 8, se=se),
        "shake_bottleneck": lambda: ShakeResNet(11, 4, bottleneck=True, cardinality=2, stem_width=8, se=se),
    }[kind]()


KINDS = ("basic", "preact_bottleneck", "wrn", "shake", "shake_bottleneck")


def _se_blocks(module: torch.nn.Module) -> list[SqueezeExcite]:
    return [m for m in module.modules() if isinstance(m, SqueezeExcite)]


# ---------------------------------------------------------------- published parameter counts


def test_table_lists_every_baseline():
    baselines = {n for n in NAMES if not senet.model_info(n).has_se}
    assert {row["model"] for row in TABLE} == baselines


@pytest.mark.parametrize("row", TABLE, ids=[r["model"] for r in TABLE])
def test_published_parameter_count(row):
    """Our count, in millions, rounds to the paper's figure (tolerance: half its last digit)."""
    assert row["source"].strip()
    published = Decimal(row["published_mparams"])
    half_unit = Decimal(1).scaleb(published.as_tuple().exponent) / 2
    with torch.device("meta"):
        model = senet.create_model(row["model"], num_classes=int(row["num_classes"]))
    ours = Decimal(count_params(model)) / Decimal(10**6)
    assert abs(ours - published) <= half_unit, f"{row['model']}: {ours:.4f}M vs published {published}M"


def test_shortcut_options():
    with torch.device("meta"):
        a, b = senet.create_model("cifar_resnet20"), senet.create_model("cifar_resnet20", shortcut="B")
    assert all(not list(m.parameters()) for m in a.modules() if isinstance(m, ZeroPadShortcut))
    assert sum(isinstance(m, ZeroPadShortcut) for m in a.modules()) == 2
    # option B: two 1x1 projections with BN (16->32, 32->64)
    assert count_params(b) - count_params(a) == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    out = ZeroPadShortcut(2, 5, 2)(x)
    assert out.shape == (1, 5, 2, 2)
    assert torch.equal(out[:, :2], x[:, :, ::2, ::2]) and not out[:, 2:].any()


def test_two_path_shortcut_subsamples_and_shifts():
    sc = TwoPathShortcut(2, 4, 2).eval()
    with torch.no_grad():
        for conv in (sc.conv1, sc.conv2):
            conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    sc.bn.eps = 0.0  # BN at its initial statistics is then the identity
    x = torch.arange(1, 1 + 2 * 5 * 5, dtype=torch.float32).view(1, 2, 5, 5)
    out = sc(x)
    assert out.shape == (1, 4, 3, 3)
    torch.testing.assert_close(out[:, :2], x[:, :, ::2, ::2])
    shifted = torch.zeros_like(x)
    shifted[:, :, 1:, 1:] = x[:, :, :-1, :-1]  # one pixel right and down
    torch.testing.assert_close(out[:, 2:], shifted[:, :, ::2, ::2])


# ---------------------------------------------------------------- registry and shapes


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name):
    info = senet.model_info(name)
    assert info.input_size == (3, 32, 32) and info.num_classes == 10
    assert info.mean == CIFAR10_MEAN and info.std == CIFAR10_STD
    assert info.has_se == ("_se_" in name or name.startswith("se_"))


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_shapes_at_two_sizes(name):
    torch.manual_seed(0)
    model = senet.create_model(name, num_classes=5)
    for side in (32, 20):
        model.zero_grad()
        out = model(torch.randn(2, 3, side, side))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        out.logsumexp(1).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, model.num_features, 8, 8)
    assert model.forward_head(feats).shape == (2, 5)
    assert len([model.layer1, model.layer2, model.layer3]) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_smallest_input_and_headless_model(kind):
    model = _small(kind, reduction=4)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    model.fc = torch.nn.Identity()
    assert model(torch.randn(2, 3, 9, 9)).shape == (2, model.num_features)


def test_num_classes_zero_returns_features():
    model = senet.create_model("wrn16_8", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512)


# ---------------------------------------------------------------- SE


@pytest.mark.parametrize("name", [n for n in NAMES if senet.model_info(n).has_se])
def test_se_changes_the_logits(name):
    torch.manual_seed(0)
    model = senet.create_model(name).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for se in _se_blocks(model):
            se.fc2.weight.zero_()
            se.fc2.bias.zero_()
        assert not torch.allclose(before, model(x))


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_placement_and_every_block_is_live(kind, placement):
    """Each placement builds, runs, and each SE block is called once and changes the output."""
    model = _small(kind, reduction=4, placement=placement).eval()
    blocks = _se_blocks(model)
    per_block = 2 if placement == "conv3x3" and kind.startswith("shake") else 1
    assert len(blocks) == 3 * per_block
    calls = []
    for se in blocks:
        se.register_forward_hook(lambda m, i, o: calls.append(id(m)))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        assert sorted(calls) == sorted(id(m) for m in blocks)
        for se in blocks:
            # force the gate to sigmoid(3) (zeroing alone can leave s at sigmoid(0) when every
            # hidden unit of a freshly initialised block is inactive)
            saved = se.fc2.weight.clone(), se.fc2.bias.clone()
            se.fc2.weight.zero_()
            se.fc2.bias.fill_(3.0)
            assert not torch.allclose(before, model(x)), f"{placement} SE block has no effect"
            se.fc2.weight.copy_(saved[0])
            se.fc2.bias.copy_(saved[1])


def test_se_channels_follow_the_placement():
    def channels(placement):
        return [se.channels for se in _se_blocks(CifarResNet(11, block="preact_bottleneck", shortcut="B",
                                                              se=senet.SEConfig(reduction=4, placement=placement)))]

    assert channels("standard") == [64, 128, 256] == channels("post") == channels("identity")
    assert channels("pre") == [16, 64, 128]
    assert channels("conv3x3") == [16, 32, 64]


@pytest.mark.parametrize("name", ["cifar_se_resnet20", "cifar_se_preact_resnet164", "se_wrn16_8",
                                  "se_shake_shake26_2x32d", "se_shake_even29_2x4x64d"])
def test_se_stages_selects_stage_three_only(name):
    with torch.device("meta"):
        model = senet.create_model(name, se_stages=(3,))
    assert [bool(_se_blocks(stage)) for stage in (model.layer1, model.layer2, model.layer3)] == [False, True, False]
    assert all(_se_blocks(block) for block in model.layer2)


@pytest.mark.parametrize("bad", [(1,), (5,), (2, 6)])
def test_invalid_se_stage_raises(bad):
    with pytest.raises(ValueError, match="se_stages"):
        senet.create_model("cifar_se_resnet20", se_stages=bad)


def test_hidden_size_is_exact_by_default_and_divisor_is_an_option():
    with torch.device("meta"):
        exact = senet.create_model("cifar_se_resnet20")
        rounded = senet.create_model("cifar_se_resnet20", se_divisor=8)
    assert [se.hidden for se in _se_blocks(exact)][::3] == [1, 2, 4]
    assert [se.hidden for se in _se_blocks(rounded)][::3] == [8, 8, 8]


@pytest.mark.parametrize("name", ["cifar_resnet20", "wrn16_8", "shake_shake26_2x32d"])
def test_models_without_se_reject_se_options(name):
    with pytest.raises(ValueError, match="without SE"):
        senet.create_model(name, reduction=8)


# ---------------------------------------------------------------- family options


def test_shake_keywords_reach_every_block():
    with torch.device("meta"):
        model = senet.create_model("shake_shake26_2x32d", shake_backward="keep", shake_level="batch")
        even = senet.create_model("shake_even29_2x4x64d")
    blocks = [m for m in model.modules() if isinstance(m, ShakeBlock)]
    assert len(blocks) == 12
    assert {(b.shake_forward, b.shake_backward, b.shake_level) for b in blocks} == {("shake", "keep", "batch")}
    even_blocks = [m for m in even.modules() if isinstance(m, ShakeBlock)]
    assert len(even_blocks) == 9
    assert {(b.shake_forward, b.shake_backward, b.shake_level) for b in even_blocks} == {("shake", "even", "image")}
    with pytest.raises(ValueError, match="shake_backward"):
        senet.create_model("shake_shake26_2x32d", shake_backward="random")


def test_shake_even_branches_are_resnext_bottlenecks():
    with torch.device("meta"):
        model = senet.create_model("shake_even29_2x4x64d")
    grouped = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert {(m.in_channels, m.groups) for m in grouped} == {(256, 4), (512, 4), (1024, 4)}
    assert model.num_features == 1024


@pytest.mark.parametrize("make, match", [
    (lambda: CifarResNet(21), "6n \\+ 2"),
    (lambda: CifarResNet(21, block="preact_bottleneck"), "9n \\+ 2"),
    (lambda: CifarResNet(20, shortcut="C"), "shortcut"),
    (lambda: WideResNet(17, 8), "6n \\+ 4"),
    (lambda: ShakeResNet(27, 32), "6n \\+ 2"),
    (lambda: ShakeResNet(26, 32, cardinality=4), "cardinality"),
])
def test_bad_architecture_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrn_dropout_between_convolutions():
    torch.manual_seed(0)
    model = WideResNet(10, 1, dropout=0.3)
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(model(x), model(x))  # dropout is active in training
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="dropout"):
        WideResNet(10, 1, dropout=1.0)

"""VGG, BN-Inception, Inception-ResNet-v2, MobileNet and ShuffleNet (issue 4; spec sections 2 and 4).

Registry-wide forward/backward checks live in test_models.py; here: where each family puts its
SE blocks, its stage numbering, the paper rows that are documented exceptions (their measured
values pinned), family options, and logit equivalence with timm where timm has the network
(random weights with randomised BN statistics, fp32 eval mode, at most 1e-5 apart).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import senet
from senet.errors import WeightsError
from senet.models import convert_weights, infer_model
from tests.conftest import randomise
from senet.layers import SqueezeExcite
from senet.models import bn_inception, inception_resnet_v2, mobilenet, shufflenet, vgg
from senet.paper import TOLERANCE, paper_rows

# registered SE model -> (number of SE blocks, stages they can be in)
SE_MODELS = {
    "se_vgg16_bn": (13, (0, 1, 2, 3, 4)),
    "se_bn_inception": (10, (3, 4, 5)),
    "se_inception_resnet_v2": (40, (3, 4, 5)),
    "se_mobilenet": (13, (1, 2, 3, 4, 5)),
    "se_shufflenet_g3": (16, (3, 4, 5)),
}


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return senet.create_model(name, **kwargs)


def se_input_sides(model: nn.Module, side: int) -> list[int]:
    """Spatial side of the input of every SE block, in call order, for one ``side`` x ``side`` image (meta)."""
    sides: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: sides.append(i[0].shape[-1]))
             for m in model.modules() if isinstance(m, SqueezeExcite)]
    with torch.no_grad():
        model.eval()(torch.empty(1, 3, side, side, device="meta"))
    for h in hooks:
        h.remove()
    return sides


@pytest.mark.parametrize("name", sorted(SE_MODELS))
def test_se_count_and_stage_numbering(name):
    """Stage ``s`` is where the output is 1/2**s of the input side, in every family (and in add_se)."""
    count, stages = SE_MODELS[name]
    side = senet.model_info(name).input_size[1]
    assert len(se_input_sides(meta_model(name), side)) == count
    per_stage = 0
    for stage in stages:
        sides = se_input_sides(meta_model(name, se_stages=[stage]), side)
        assert sides and all(round(math.log2(side / s)) == stage for s in sides), (stage, sides)
        per_stage += len(sides)
    assert per_stage == count
    with pytest.raises(ValueError, match="do not exist"):
        meta_model(name, se_stages=[max(stages) + 1])


@pytest.mark.parametrize("name", ["vgg16_bn", "bn_inception", "inception_resnet_v2", "mobilenet", "shufflenet_g3"])
def test_baselines_reject_se_options(name):
    with pytest.raises(ValueError, match="without SE blocks"):
        meta_model(name, reduction=8)


@pytest.mark.parametrize("name", ["se_vgg16_bn", "se_bn_inception", "se_mobilenet"])
def test_plain_families_have_only_the_standard_placement(name):
    with pytest.raises(ValueError, match="placement 'post' is not available"):
        meta_model(name, placement="post")


def test_inception_resnet_v2_placements():
    with pytest.raises(ValueError, match="placement 'conv3x3' is not available"):
        meta_model("se_inception_resnet_v2", placement="conv3x3")
    model = meta_model("se_inception_resnet_v2", placement="pre", se_stages=[5])
    assert {m.channels for m in model.modules() if isinstance(m, SqueezeExcite)} == {2080}


def test_se_widths_follow_the_paper():
    """SE sees each VGG conv's, each MobileNet unit's and each Inception module's output, and a
    ShuffleNet unit's branch before the concatenation (216 = 240 - 24 channels in the first one)."""
    widths = lambda name, **kw: [m.channels for m in meta_model(name, **kw).modules() if isinstance(m, SqueezeExcite)]  # noqa: E731
    assert widths("se_vgg16_bn")[:3] == [64, 64, 128]
    assert widths("se_mobilenet")[-2:] == [1024, 1024]
    assert widths("se_bn_inception") == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    assert widths("se_shufflenet_g3", se_stages=[3]) == [216, 240, 240, 240]
    assert widths("se_shufflenet_g3", se_stages=[3], placement="post")[0] == 240
    assert widths("se_shufflenet_g3", se_stages=[3], placement="identity")[0] == 24
    assert widths("se_shufflenet_g3", se_stages=[3], placement="conv3x3")[0] == 60


@pytest.mark.parametrize("placement", ["standard", "pre", "post", "identity", "conv3x3"])
def test_shufflenet_placements_run_and_change_the_output(placement):
    torch.manual_seed(0)
    model = senet.create_model("se_shufflenet_g3", num_classes=5, placement=placement, se_stages=[3]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        for m in model.modules():
            if isinstance(m, SqueezeExcite):
                nn.init.zeros_(m.fc2.weight)
                nn.init.constant_(m.fc2.bias, 5.0)  # gate ~ 1: almost no SE
        assert not torch.allclose(out, model(x), atol=1e-4)


# --- paper rows: the documented exceptions, measured values pinned -------------------------------

PINNED = {  # model: (params, multiply-adds) at the paper's input size
    "inception_resnet_v2": (55_843_464, 13_155_794_016),
    "se_inception_resnet_v2": (64_387_444, 13_187_369_056),
    "shufflenet_g3": (1_865_728, 137_460_672),
    "se_shufflenet_g3": (2_484_533, 141_279_216),
}
FAMILY_ROWS = [r for r in paper_rows() if r.table in ("2", "3") and r.model in set(SE_MODELS) | {
    "vgg16_bn", "bn_inception", "inception_resnet_v2", "mobilenet", "shufflenet_g3"}]


def test_paper_rows_cover_the_families():
    assert {r.model for r in FAMILY_ROWS} == set(SE_MODELS) | set(PINNED) | {"vgg16_bn", "bn_inception", "mobilenet"}
    assert {r.model for r in FAMILY_ROWS if r.note} == set(PINNED)


@pytest.mark.parametrize("row", [r for r in FAMILY_ROWS if r.note], ids=lambda r: r.model)
def test_documented_exception_pinned(row):
    measured = senet.complexity(meta_model(row.model), (3, row.input, row.input))
    assert (measured.params, measured.flops) == PINNED[row.model]
    diffs = [measured.params / 1e6 / row.params_m - 1 if row.params_m else 0, measured.gflops / row.gflops - 1]
    assert max(abs(d) for d in diffs) > TOLERANCE  # else the note is stale: make it an ordinary row
    assert f"{measured.gflops:.2f}" in row.note or f"{measured.flops / 1e6:.1f}" in row.note


# --- family details -----------------------------------------------------------------------------

def test_inception_resnet_v2_minimum_input():
    info = senet.model_info("inception_resnet_v2")
    assert info.input_size == (3, 299, 299) and info.min_input_size == inception_resnet_v2.MIN_INPUT
    model = meta_model("inception_resnet_v2", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.empty(1, 3, 75, 75, device="meta")).shape == (1, 3)
        with pytest.raises(ValueError, match="at least 75x75"):
            model(torch.empty(1, 3, 74, 74, device="meta"))


@pytest.mark.parametrize("side", [28, 29])
def test_bn_inception_reduction_pool(side):
    """Caffe's ceil-mode pooling at even sides; at odd sides the pool keeps up with the strided convs."""
    x = torch.randn(1, 4, side, side)
    pool = bn_inception._Pool("max", 2)
    conv_side = (side - 1) // 2 + 1
    assert pool(x).shape[-1] == conv_side
    if side % 2 == 0:
        assert torch.equal(pool(x), nn.MaxPool2d(3, 2, ceil_mode=True)(x))


@pytest.mark.parametrize("side", [9, 10, 112, 113])
def test_bn_inception_stem_pool_is_caffes_ceil_mode_pooling(side):
    x = torch.randn(1, 2, side, side + 1)
    assert torch.equal(bn_inception.CeilMaxPool()(x), nn.MaxPool2d(3, 2, ceil_mode=True)(x))


@pytest.mark.parametrize("side", [199, 207, 224])  # 199: odd side at 3c, 207: at 4e
def test_bn_inception_input_sides(side):
    model = meta_model("se_bn_inception", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.empty(1, 3, side, side, device="meta")).shape == (1, 3)


def test_vgg_head_is_vggs_fc_layers():
    """``pre_logits.fc1`` is VGG's 25088 -> 4096 FC layer on the 7x7 map of a 224x224 input; a smaller
    map is pooled up to 7x7 first, so the head costs the same (and runs) at any input size."""
    model = meta_model("vgg16_bn")
    assert model.pre_logits.fc1.weight.shape == (4096, 512, 7, 7)
    fc_flops = 25088 * 4096 + 4096 * 4096
    assert senet.complexity(model.pre_logits, (512, 7, 7)).flops == fc_flops
    assert senet.complexity(model.pre_logits, (512, 2, 2)).flops == fc_flops
    with pytest.raises(ValueError, match="unknown VGG depth"):
        vgg.VGG(17)


def test_family_options():
    half = meta_model("mobilenet", width_mult=0.5)
    assert half.num_features == 512 and half.stem.conv.out_channels == 16
    assert isinstance(meta_model("mobilenet", act="relu").stem.act, nn.ReLU)
    with pytest.raises(ValueError, match="unknown act"):
        meta_model("mobilenet", act="gelu")
    assert meta_model("shufflenet_g3").num_features == 960  # registered: g=3; the class takes any g
    with torch.device("meta"):
        assert shufflenet.ShuffleNet(8).num_features == 1536
    with pytest.raises(ValueError, match="unknown ShuffleNet groups"):
        shufflenet.ShuffleNet(5)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert shufflenet.channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


# --- timm equivalence ---------------------------------------------------------------------------

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("timm_name,name,side", [
    ("vgg16_bn", "vgg16_bn", 64),
    ("inception_resnet_v2", "inception_resnet_v2", 75),
    ("mobilenetv1_100", "mobilenet", 64),
])
def test_timm_logits_match(tmp_path, timm_name, name, side):
    torch.manual_seed(0)
    ref = randomise(timm.create_model(timm_name, num_classes=10)).eval()
    state = ref.state_dict()
    family = {"vgg16_bn": vgg, "inception_resnet_v2": inception_resnet_v2, "mobilenet": mobilenet}[name]
    # the family's own renaming, checked key by key against a freshly built model
    model = senet.create_model(name, num_classes=10).eval()
    model.load_state_dict(family.from_timm(state).state, strict=True)
    # timm's keys as they are: create_model / load_weights / infer_model find the family's from_timm
    # (VGG-16's 0.5 GB stays in memory as a state dict; the others go through a .pth file)
    source = state if name == "vgg16_bn" else tmp_path / f"{timm_name}.pth"
    if name != "vgg16_bn":
        torch.save(state, source)
    loaded = senet.create_model(name, pretrained=source).eval()
    assert infer_model(source) == name
    assert senet.load_weights(senet.create_model(name, num_classes=10), source) == ([], [])
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected, got, got_loaded = ref(x), model(x), loaded(x)
    assert expected.abs().max() > 1e-2  # the comparison means something
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_loaded, expected, rtol=0, atol=1e-5)


def test_timm_weights_of_another_family_or_without_se_are_named(tmp_path):
    path = tmp_path / "mobilenetv1_100.pth"
    torch.save(timm.create_model("mobilenetv1_100", num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError, match="timm weights are of the mobilenet family; vgg16_bn is a vgg model"):
        senet.create_model("vgg16_bn", pretrained=path)
    with pytest.raises(WeightsError, match="of the mobilenet family; resnet50 is a resnet model"):
        convert_weights(path, tmp_path / "x.safetensors", model="resnet50")
    with pytest.raises(WeightsError, match="of the mobilenet family; resnet18 is a resnet model"):
        senet.load_weights(senet.create_model("resnet18"), path)
    with pytest.raises(WeightsError, match=r"missing key.*\.se\.fc1\.weight"):
        senet.create_model("se_mobilenet", pretrained=path)
    assert not (tmp_path / "x.safetensors").exists()

"""The model interface every registered model shares (timm's), checked for every model on the
meta device: head options, feature_info and features_only, stage numbering, keywords."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import senet
from senet.layers import SqueezeExcite
from senet.models import FeatureNet, model_keywords, module_stages

MODELS = senet.list_models()


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return senet.create_model(name, **kwargs).eval()


def meta_input(name: str, batch: int = 2, channels: int = 3) -> torch.Tensor:
    c, h, w = senet.model_info(name).input_size
    return torch.empty(batch, channels, h, w, device="meta")


@pytest.mark.parametrize("name", MODELS)
def test_head_interface(name):
    model = meta_model(name, num_classes=7)
    x = meta_input(name)
    features = model.forward_features(x)
    assert features.dim() == 4
    assert model.forward_head(features).shape == (2, 7) == model(x).shape
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.fc and model.num_classes == 7
    model.reset_classifier(3, global_pool="max")
    assert model(x).shape == (2, 3) and model.global_pool.pool_type == "max" and model.fc.weight.device.type == "meta"
    model.reset_classifier(0, global_pool="")  # no pooling: the feature map (after VGG's conv FC layers)
    out = model(x)
    assert model.num_classes == 0 and out.dim() == 4 and out.shape[1] == model.num_features
    with pytest.raises(ValueError, match="num_classes=0"):
        model.reset_classifier(5)


@pytest.mark.parametrize("name", MODELS)
def test_feature_info_matches_the_feature_maps(name):
    """Each stage's module, channels and stride as declared; the last stage is forward_features."""
    model = meta_model(name)
    info = model.feature_info
    x = meta_input(name)
    net = FeatureNet(model)
    outs = net(x)
    side = x.shape[-1]
    assert [o.shape[1] for o in outs] == [e["num_chs"] for e in info] == net.feature_info.channels()
    # nominal strides (valid-padded networks such as Inception-ResNet-v2 lose a few pixels)
    assert [2 ** round(math.log2(side / o.shape[-1])) for o in outs] == [e["reduction"] for e in info]
    assert outs[-1].shape == model.forward_features(x).shape
    stages = [e["stage"] for e in info]
    assert stages == sorted(stages) and len(set(stages)) == len(stages)


@pytest.mark.parametrize("name", MODELS)
def test_features_only_picks_stages(name):
    n = len(meta_model(name).feature_info)
    with torch.device("meta"):
        net = senet.create_model(name, features_only=True, out_indices=(1, -1))
    outs = net(meta_input(name))
    assert len(outs) == 2 and net.out_indices == [1, n - 1]
    assert [o.shape[1] for o in outs] == net.feature_info.channels()
    assert net.pretrained_cfg["input_size"] == senet.model_info(name).input_size
    with pytest.raises(ValueError, match="not a stage index"):
        with torch.device("meta"):
            senet.create_model(name, features_only=True, out_indices=(n,))


@pytest.mark.parametrize("name", [n for n in MODELS if senet.model_info(n).has_se])
def test_se_stages_follow_feature_info(name):
    """The stage numbers feature_info gives every SE block are the ones se_stages selects."""
    model = meta_model(name)
    stages = module_stages(model)
    found = sorted({stages[p] for p, m in model.named_modules() if isinstance(m, SqueezeExcite)})
    for stage in found:
        one = meta_model(name, se_stages=[stage], se_divisor=1)
        blocks = [p for p, m in one.named_modules() if isinstance(m, SqueezeExcite)]
        assert blocks and {module_stages(one)[p] for p in blocks} == {stage}


@pytest.mark.parametrize("name", MODELS)
def test_common_keywords(name):
    keywords = model_keywords(senet.model_info(name))
    assert {"num_classes", "in_chans", "drop_rate", "global_pool"} <= set(keywords)
    model = meta_model(name, in_chans=1, drop_rate=0.25, global_pool="avgmax")
    assert model(meta_input(name, channels=1)).shape[0] == 2
    assert model.in_chans == 1 and model.drop_rate == 0.25 and model.global_pool.pool_type == "avgmax"
    with pytest.raises(ValueError, match="takes no keyword 'no_such_option'"):
        meta_model(name, no_such_option=1)


# numeric keywords out of range, with the range the error must state
BAD_NUMBERS = [
    ("num_classes", -1, ">= 0"), ("num_classes", 2.0, ">= 0"), ("in_chans", 0, ">= 1"), ("in_chans", -3, ">= 1"),
    ("in_chans", True, ">= 1"), ("widths", [16, 0, 64], ">= 1"), ("blocks", [1, -1, 1], ">= 1"),
    ("layers", [1, 1, 0], ">= 1"), ("groups", 0, ">= 1"), ("width_per_group", -4, ">= 1"),
    ("down_kernel", 0, ">= 1"), ("cardinality", 0, ">= 1"), ("stem_width", 0, ">= 1"), ("mlp_width", 0, ">= 1"),
    ("reduction", 0, "> 0"), ("reduction", math.inf, "> 0"), ("se_divisor", 0, ">= 1"), ("se_stages", [-1], ">= 0"),
    ("width_mult", -0.5, "> 0"), ("first_ratio", math.nan, "> 0"), ("drop_rate", 1.5, "in [0, 1)"),
    ("drop_path_rate", -0.1, "in [0, 1)"), ("dropout", 1.0, "in [0, 1)"),
]


@pytest.mark.parametrize("name", MODELS)
def test_numeric_keywords_are_range_checked(name):
    """Every numeric keyword a model takes is checked in the builder: a ValueError naming it and
    its range, before anything is built; sizes no machine has are refused before allocating."""
    takes = set(model_keywords(senet.model_info(name))) | {"num_classes"}
    probes = [(k, v, allowed) for k, v, allowed in BAD_NUMBERS if k in takes]
    assert len(probes) >= 5
    for key, value, allowed in probes:
        with pytest.raises(ValueError, match=rf"{key} must be .*{re.escape(allowed)}.*, got {re.escape(repr(value))}"):
            meta_model(name, **{key: value})
    with pytest.raises(ValueError, match=r"num_classes=1000000000000 would need at least [\d.e+]+ TiB.*at most 8 GiB"):
        meta_model(name, num_classes=10**12)



def test_keywords_that_leave_a_layer_empty_are_refused():
    with pytest.raises(ValueError, match=r"senet154 with groups=1, width_per_group=1 would have a layer without channels"):
        meta_model("senet154", groups=1, width_per_group=1)  # SENet-154's first 1x1: int(1 * 0.5) = 0 wide


RESIDUAL_FAMILIES = {"resnet", "cifar_resnet", "wide_resnet", "shake_shake", "inception_resnet_v2", "shufflenet"}


@pytest.mark.parametrize("name", MODELS)
def test_drop_path_rate_where_there_are_residual_branches(name):
    info = senet.model_info(name)
    assert ("drop_path_rate" in model_keywords(info)) == (info.family in RESIDUAL_FAMILIES)
    if info.family in RESIDUAL_FAMILIES:
        rates = [m.drop_path.p for m in meta_model(name, drop_path_rate=0.2).modules()
                 if getattr(m, "drop_path", None) is not None]
        assert rates == sorted(rates) and rates[-1] == pytest.approx(0.2) and rates[0] > 0


def test_drop_path_drops_whole_samples_in_training_only():
    torch.manual_seed(0)
    model = senet.create_model("cifar_se_resnet20", drop_path_rate=0.5)
    block = model.layer3[-1]
    x = torch.randn(64, 64, 8, 8)
    branch = block.dropped(torch.ones_like(x))
    kept = branch.flatten(1).amax(1)
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0 < (kept == 0).sum() < 64  # per sample, 1/(1-p)
    block.eval()
    assert torch.equal(block.dropped(x), x)


def test_drop_rate_reaches_the_head():
    model = senet.create_model("cifar_resnet20", drop_rate=0.5)
    assert isinstance(model.head_drop, nn.Dropout) and model.head_drop.p == 0.5


def test_timm_names_build_timm_layouts():
    """timm's names are accepted; they build the layout timm builds (list_models keeps senet's)."""
    timm_style = senet.create_model("seresnet50")
    legacy = senet.create_model("legacy_seresnet50")
    assert timm_style.senet_spec.name == legacy.senet_spec.name == "se_resnet50"
    assert timm_style.layer2[0].conv1.stride == (1, 1) and legacy.layer2[0].conv1.stride == (2, 2)
    assert timm_style.maxpool.padding == 1 and legacy.maxpool.ceil_mode
    assert "seresnet50" not in senet.list_models() and "seresnet50" in senet.models.list_aliases()
    assert senet.create_model("seresnet50", stride_in_1x1=True).layer2[0].conv1.stride == (2, 2)


def test_pretrained_false_and_none_build_without_weights():
    for value in (False, None):
        model = senet.create_model("cifar_resnet20", pretrained=value)
        assert not hasattr(model, "senet_weights")
    assert senet.create_model("cifar_resnet20").pretrained_cfg["input_size"] == (3, 32, 32)


def test_torchvision_fpn_takes_the_features():
    pytest.importorskip("torchvision")
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import FeaturePyramidNetwork

    net = senet.create_model("se_resnet18", features_only=True, out_indices=(1, 2, 3, 4))
    x = torch.randn(1, 3, 64, 64)
    fpn = FeaturePyramidNetwork(net.feature_info.channels(), 32)
    maps = fpn(dict(zip(map(str, range(4)), net(x))))
    assert [m.shape[-1] for m in maps.values()] == [16, 8, 4, 2]
    backbone = BackboneWithFPN(net, net.return_layers, net.feature_info.channels(), 32)
    assert [m.shape[1] for m in backbone(x).values()] == [32] * 5  # 4 levels and FPN's max-pooled one
    # a whole senet model works with torchvision's IntermediateLayerGetter too, as its ResNets do
    model = senet.create_model("se_resnet18")
    whole = BackboneWithFPN(model, {"layer2": "0", "layer4": "1"}, [128, 512], 16)
    assert [m.shape[-1] for m in whole(x).values()] == [8, 2, 1]

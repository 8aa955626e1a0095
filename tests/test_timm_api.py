"""timm's model API beyond the head on every family, checked with the installed timm's own helpers:
set_grad_checkpointing, forward_intermediates, prune_intermediate_layers, group_matcher (timm's
layer-wise LR decay), default_cfg, output_stride and FeatureInfo; and, where timm has the same
network (SE-ResNet, MobileNet), the same results as timm's model with the same weights."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

import senet
from senet.models import FeatureNet, model_keywords, module_stages
from tests.conftest import randomise

timm = pytest.importorskip("timm")
import timm.optim  # noqa: E402
from timm.models import FeatureInfo as TimmFeatureInfo  # noqa: E402
from timm.models._features import feature_take_indices  # noqa: E402
from timm.models._manipulate import group_parameters  # noqa: E402

# one small model per family: (name, keywords, input side)
CASES = [
    ("se_resnet18", {}, 32),
    ("cifar_se_resnet20", {}, 16),
    ("se_wrn16_8", {}, 16),
    ("se_shake_shake26_2x32d", {}, 16),
    ("se_vgg16_bn", {"mlp_width": 16}, 32),
    ("se_bn_inception", {}, 32),
    ("se_inception_resnet_v2", {"blocks": (1, 1, 1)}, 75),
    ("se_mobilenet", {"width_mult": 0.25}, 32),
    ("se_shufflenet_g3", {"layers": (2, 1, 1)}, 32),
]
IDS = [c[0] for c in CASES]


@functools.lru_cache(maxsize=None)
def _built(name: str, kwargs: tuple) -> nn.Module:
    torch.manual_seed(0)
    return randomise(senet.create_model(name, num_classes=5, **dict(kwargs)))


def build(name: str, kwargs: dict, **extra) -> nn.Module:
    """A fresh copy of the case's model (built once), in eval mode."""
    return copy.deepcopy(_built(name, tuple(sorted({**kwargs, **extra}.items())))).eval()


def image(side: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))


def test_cases_cover_every_family():
    assert {senet.model_info(name).family for name, _, _ in CASES} == set(senet.models.families())


# --- set_grad_checkpointing ---------------------------------------------------------------------

def _step(model: nn.Module, x: torch.Tensor, forward) -> tuple[float, int]:
    """Loss of one training forward pass (backward done) and the bytes autograd saved for it."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(3)  # the same dropout / drop-path / Shake-Shake draws in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward(model, x)
    loss = sum(o.float().square().mean() for o in out) if isinstance(out, list) else out.logsumexp(1).mean()
    loss.backward()
    return loss.item(), saved[0]


def _assert_same_step(plain: nn.Module, ckpt: nn.Module, x: torch.Tensor, forward=lambda m, x: m(x)) -> int:
    """One training step of each: the same loss, gradients and BN statistics, fewer saved bytes
    with checkpointing. Returns the bytes saved without."""
    loss, saved = _step(plain.train(), x, forward)
    loss_ckpt, saved_ckpt = _step(ckpt.train(), x, forward)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(q.grad, p.grad, rtol=0, atol=1e-6), name
    for (name, b), c in zip(plain.named_buffers(), ckpt.buffers()):  # BN statistics updated once
        assert torch.equal(b, c), name
    assert saved_ckpt < 0.8 * saved
    return saved


@pytest.mark.parametrize("name,kwargs,side", CASES, ids=IDS)
def test_grad_checkpointing_same_step_fewer_saved_activations(name, kwargs, side):
    """Same loss, gradients and BN statistics (stochastic depth on where the family has it), and
    autograd keeps fewer activations."""
    if "drop_path_rate" in model_keywords(senet.model_info(name)):
        kwargs = {**kwargs, "drop_path_rate": 0.3}
    plain = build(name, kwargs)
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    saved = _assert_same_step(plain, ckpt, image(side))
    ckpt.set_grad_checkpointing(False)
    assert _step(ckpt, image(side), lambda m, x: m(x))[1] == saved


def test_grad_checkpointing_of_stage_taps_and_features_only():
    """forward_intermediates and features_only nets checkpoint too, also where a tapped stage ends
    inside a block container (BN-Inception's Inception modules)."""
    plain = build("se_bn_inception", {})
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    _assert_same_step(plain, ckpt, image(32), lambda m, x: m.forward_intermediates(x, intermediates_only=True))
    net, net_ckpt = FeatureNet(build("se_bn_inception", {})), FeatureNet(build("se_bn_inception", {}))
    net_ckpt.set_grad_checkpointing()
    _assert_same_step(net, net_ckpt, image(32), lambda m, x: m(x))


# --- forward_intermediates / prune_intermediate_layers -----------------------------------------

INDICES = [None, 1, 2, [0, -1], [-2], (1, 2)]


@pytest.mark.parametrize("name,kwargs,side", CASES, ids=IDS)
def test_forward_intermediates(name, kwargs, side):
    """The stage outputs timm's index rules select (feature_take_indices), the final features,
    stop_early and intermediates_only."""
    model = build(name, kwargs)
    x = image(side, batch=1)
    n = len(model.feature_info)
    with torch.no_grad():
        stages = FeatureNet(model)(x)
        features = model.forward_features(x)
        for indices in INDICES:
            expected = sorted(feature_take_indices(n, indices)[0])
            final, intermediates = model.forward_intermediates(x, indices)
            assert torch.equal(final, features)
            assert len(intermediates) == len(expected)
            assert all(torch.equal(a, stages[i]) for a, i in zip(intermediates, expected))
            final, early = model.forward_intermediates(x, indices, stop_early=True)
            assert torch.equal(final, stages[expected[-1]]) and all(map(torch.equal, early, intermediates))
            only = model.forward_intermediates(x, indices, intermediates_only=True, norm=True)
            assert all(map(torch.equal, only, intermediates))


def test_forward_intermediates_bad_arguments():
    model = build("cifar_se_resnet20", {})
    x = image(16)
    for indices in (0, 5, [4], [-5], [1.0]):
        with pytest.raises(ValueError, match="indices"):
            model.forward_intermediates(x, indices)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="at least 75x75"):
        build("se_inception_resnet_v2", {"blocks": (1, 1, 1)}).forward_intermediates(image(64))


@pytest.mark.parametrize("name,kwargs,side", CASES, ids=IDS)
def test_prune_intermediate_layers(name, kwargs, side):
    """Pruned to stage 1: the stages after it are gone (parameters included), forward gives
    stage 1's map, forward_intermediates still gives the kept stages."""
    model = build(name, kwargs)
    x = image(side, batch=1)
    with torch.no_grad():
        stages = FeatureNet(model)(x)
    params = sum(p.numel() for p in model.parameters())
    n = len(model.feature_info)
    assert model.prune_intermediate_layers([0, 1 - n]) == feature_take_indices(n, [0, 1 - n])[0] == [0, 1]
    assert sum(p.numel() for p in model.parameters()) < params
    assert len(model.feature_info) == 2 and model.num_features == stages[1].shape[1] and model.num_classes == 0
    with torch.no_grad():
        assert torch.equal(model(x), stages[1])
        final, kept = model.forward_intermediates(x)
    assert torch.equal(final, stages[1]) and all(map(torch.equal, kept, stages[:2]))


def test_prune_up_to_the_last_stage_keeps_the_trunk():
    model = build("se_vgg16_bn", {"mlp_width": 16})
    x = image(32, batch=1)
    with torch.no_grad():
        features, logits = model.forward_features(x), model(x)
        assert model.prune_intermediate_layers(2, prune_head=False) == [4, 5]  # an int: the last n stages
        assert torch.equal(model(x), logits) and model.num_classes == 5
        assert model.prune_intermediate_layers() == [5]  # timm's default: the last stage; the head goes
        assert torch.equal(model(x), features)  # no conv FC layers, no pooling, no classifier
    assert model.num_features == features.shape[1]


# --- group_matcher: timm's layer-wise learning-rate decay --------------------------------------

def _param_stage(model: nn.Module) -> dict[str, int | None]:
    stages = module_stages(model)
    return {n: stages.get(n.rpartition(".")[0]) for n, _ in model.named_parameters()}


@pytest.mark.parametrize("name,kwargs,side", CASES, ids=IDS)
def test_group_matcher_with_timm_layer_decay(name, kwargs, side):
    model = build(name, kwargs)
    names = [n for n, _ in model.named_parameters()]
    fine = group_parameters(model, model.group_matcher(), reverse=True)
    coarse = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    stage = _param_stage(model)
    for layers in (fine, coarse):
        assert set(layers) == set(names)
        ids = [layers[n] for n in names]  # parameters are registered in the order of the network
        assert ids == sorted(ids)
        head = [n for n in names if stage[n] is None]
        assert {layers[n] for n in head} == {max(ids)} and max(ids) not in {layers[n] for n in names if n not in head}
        for group in set(ids):  # no group straddles two paper stages
            assert len({stage[n] for n in names if layers[n] == group}) == 1
    assert len(set(coarse.values())) < len(set(fine.values()))
    optimizer = timm.optim.create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.5)
    scales = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert len(scales) == len(names)
    by_name = [scales[id(p)] for _, p in model.named_parameters()]
    assert by_name == sorted(by_name) and by_name[-1] == 1.0 and by_name[0] == 0.5 ** max(fine.values())


# --- default_cfg, FeatureInfo -------------------------------------------------------------------

def test_default_cfg_is_the_pretrained_cfg():
    model = senet.create_model("cifar_resnet20")
    net = senet.create_model("cifar_resnet20", features_only=True)
    assert model.default_cfg is model.pretrained_cfg and net.default_cfg is net.pretrained_cfg
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 32, 32) and config["mean"] == model.default_cfg["mean"]


@pytest.mark.parametrize("name,kwargs,side", CASES, ids=IDS)
@pytest.mark.parametrize("out_indices", [None, 2, (1, 2), (0, -1)])
def test_feature_info_answers_as_timms(name, kwargs, side, out_indices):
    """A features_only net's feature_info gives what timm's FeatureInfo gives for the same stages;
    the model's own feature_info stays a list of dicts, as on timm's models."""
    with torch.device("meta"):
        model = senet.create_model(name, **kwargs)
        net = senet.create_model(name, features_only=True, out_indices=out_indices, **kwargs).eval()
    assert isinstance(model.feature_info, list) and all(isinstance(e, dict) for e in model.feature_info)
    n = len(model.feature_info)
    given = tuple(range(n)) if out_indices is None else out_indices
    ref = TimmFeatureInfo(copy.deepcopy(model.feature_info), given)
    info = net.feature_info
    assert [i % n for i in info.out_indices] == [i % n for i in ref.out_indices]
    assert len(info) == len(ref) and info[n - 1] == ref[n - 1]
    for key in ("num_chs", "reduction", "module", "stage"):
        assert info.get(key) == ref.get(key)
        assert info.get(key, 0) == ref.get(key, 0) and info.get(key, [0, n - 1]) == ref.get(key, [0, n - 1])
    assert info.channels() == ref.channels() and info.reduction() == ref.reduction()
    assert info.module_name() == ref.module_name() and info.channels(-1) == ref.channels(-1)
    assert info.get_dicts() == ref.get_dicts() and info.get_dicts(idx=1) == ref.get_dicts(idx=1)
    assert info.get_dicts(keys=["num_chs", "reduction"]) == ref.get_dicts(keys=["num_chs", "reduction"])
    assert info.from_other(1).channels() == ref.from_other(1).channels()
    with torch.device("meta"):
        outs = net(torch.empty(1, 3, side, side))
    assert [o.shape[1] for o in outs] == info.channels()


# --- output_stride ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [("se_resnet18", {}), ("se_resnext26_32x4d", {"stem": "deep", "down_kernel": 3}),
                                         ("se_mobilenet", {"width_mult": 0.25})])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_dilates_the_last_stages(name, kwargs, output_stride):
    """Maps of 1/output_stride, feature_info reductions as measured, the same weights."""
    with torch.device("meta"):
        model = senet.create_model(name, output_stride=output_stride, **kwargs)
        plain = senet.create_model(name, **kwargs)
    side = 64
    outs = FeatureNet(model)(torch.empty(1, 3, side, side, device="meta"))
    assert [side // o.shape[-1] for o in outs] == [e["reduction"] for e in model.feature_info]
    assert model.feature_info[-1]["reduction"] == output_stride
    assert [e["reduction"] for e in plain.feature_info][-1] == 32
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in plain.state_dict().items()}


def test_output_stride_weights_load_and_deeplab_runs():
    """A dilated trunk loads the same weights and feeds torchvision's DeepLabV3 (whole model via
    IntermediateLayerGetter, and features_only with DeepLab's head)."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    plain = build("se_resnet18", {})
    model = senet.create_model("se_resnet18", num_classes=5, output_stride=8, pretrained=plain.state_dict()).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    x = image(32, batch=1)
    deeplab = DeepLabV3(IntermediateLayerGetter(model, {"layer4": "out"}), DeepLabHead(512, 3)).eval()
    with torch.no_grad():
        assert deeplab(x)["out"].shape == (1, 3, 32, 32)
        net = senet.create_model("se_resnet18", features_only=True, out_indices=(-1,), output_stride=8)
        assert net.feature_info.reduction() == [8]
        assert DeepLabHead(512, 3).eval()(net(x)[-1]).shape == (1, 3, 4, 4)


def test_output_stride_is_refused_where_not_supported():
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32"):
        senet.create_model("se_resnet18", output_stride=4)
    for name in ("se_vgg16_bn", "cifar_resnet20", "inception_resnet_v2"):
        with pytest.raises(ValueError, match="no keyword 'output_stride'"):
            senet.create_model(name, output_stride=16)


# --- the same as timm's own models ---------------------------------------------------------------

@pytest.fixture(scope="module")
def timm_pair():
    """timm's seresnet18 (random weights and BN statistics) and senet's seresnet18 with its weights."""
    ref = randomise(timm.create_model("seresnet18", num_classes=5)).eval()
    model = senet.create_model("seresnet18", num_classes=5, pretrained=ref.state_dict()).eval()
    return ref, model


def test_forward_intermediates_and_prune_as_timm_resnet(timm_pair):
    ref, model = (copy.deepcopy(m) for m in timm_pair)
    x = image(32)
    with torch.no_grad():
        for indices in INDICES:
            for stop_early in (False, True):
                final, inter = model.forward_intermediates(x, indices, stop_early=stop_early)
                ref_final, ref_inter = ref.forward_intermediates(x, indices, stop_early=stop_early)
                assert torch.allclose(final, ref_final, atol=1e-5)
                assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(inter, ref_inter, strict=True))
        for indices in ([0, 2], 2, [-1]):
            pruned, ref_pruned = copy.deepcopy(model), copy.deepcopy(ref)
            assert pruned.prune_intermediate_layers(indices) == ref_pruned.prune_intermediate_layers(indices)
            assert pruned.num_features == ref_pruned.num_features
            assert torch.allclose(pruned(x), ref_pruned(x), atol=1e-5)


def test_group_matcher_as_timm_resnet(timm_pair):
    ref, model = timm_pair
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        ref_groups = group_parameters(ref, ref.group_matcher(coarse=coarse))
        assert [len(v) for _, v in sorted(groups.items())] == [len(v) for _, v in sorted(ref_groups.items())]


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_computes_what_timm_computes(timm_pair, output_stride):
    ref = timm.create_model("seresnet18", num_classes=5, output_stride=output_stride).eval()
    ref.load_state_dict(timm_pair[0].state_dict())
    model = senet.create_model("seresnet18", num_classes=5, output_stride=output_stride,
                               pretrained=ref.state_dict()).eval()
    mobile_ref = randomise(timm.create_model("mobilenetv1_100", num_classes=5, output_stride=output_stride)).eval()
    mobile = senet.create_model("mobilenet", num_classes=5, output_stride=output_stride,
                                pretrained=mobile_ref.state_dict()).eval()
    x = image(32)
    with torch.no_grad():
        for ours, theirs in ((model, ref), (mobile, mobile_ref)):
            out, expected = ours.forward_features(x), theirs.forward_features(x)
            assert out.shape == expected.shape == (2, ours.num_features, 32 // output_stride, 32 // output_stride)
            assert torch.allclose(out, expected, atol=1e-5)
            assert [e["reduction"] for e in ours.feature_info[-3:]] == [e["reduction"] for e in theirs.feature_info[-3:]]

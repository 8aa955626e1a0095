"""create_model's weight options: released weights (downloaded from a local server: no internet
here), a file that names its own model, checkpoint_path, in_chans, saving after reset_classifier,
the pretrained config, and SE-BN-Inception's bias-free layout with older files still loading."""

from __future__ import annotations

import pytest
import torch

import senet
from senet.errors import WeightsError
from senet.models import read_metadata, save_weights
from tests.conftest import randomise
from tests.hub_helpers import closed_port, hashed_copy, released_at


@torch.no_grad()
def test_pretrained_true_downloads_the_released_weights(tmp_path, monkeypatch, served):
    """The released SE-ResNet-18 (Cadene layout; timm fetches it from its release URL, here a
    local server) is downloaded into torch.hub's cache, converted and its preprocessing
    recorded; the logits are the file's."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = randomise(timm.create_model("legacy_seresnet18")).eval()
    url, www = served
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    file = hashed_copy(tmp_path / "w.pth", www, "seresnet18")
    released_at(monkeypatch, "se_resnet18", f"{url}/{file.name}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = senet.create_model("se_resnet18", pretrained=True).eval()
    assert (tmp_path / "torch" / "hub" / "checkpoints" / file.name).read_bytes() == file.read_bytes()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
    assert model.pretrained_cfg["interpolation"] == "bicubic" and model.pretrained_cfg["crop_pct"] == 0.875
    assert model.pretrained_cfg["classes"][:2] == ("tench", "goldfish") and len(model.pretrained_cfg["classes"]) == 1000
    assert model.senet_weights.format == "legacy"
    file.unlink()  # from now on the cached copy is used
    # features_only and another head work on released weights too
    features = senet.create_model("se_resnet18", pretrained=True, features_only=True, out_indices=(4,)).eval()
    torch.testing.assert_close(features(x)[0], reference.forward_features(x), rtol=0, atol=1e-5)
    with pytest.warns(UserWarning, match="freshly initialised"):
        assert senet.create_model("se_resnet18", pretrained=True, num_classes=3).fc.out_features == 3
    assert "se_resnet18.in1k" in senet.list_models(pretrained=True)


def test_pretrained_true_offline_names_the_file_to_pass(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/se_resnet50-ce0d4300.pth"
    released_at(monkeypatch, "se_resnet50", url)
    with pytest.raises(WeightsError) as err:
        senet.create_model("se_resnet50", pretrained=True, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and url in msg and str(tmp_path / "cache") in msg
    assert msg.endswith("pretrained=PATH (--weights PATH)")
    with pytest.raises(WeightsError, match="has no released weights"):
        senet.create_model("cifar_se_resnet20", pretrained=True)


@torch.no_grad()
def test_a_senet_file_rebuilds_its_model_alone(tmp_path):
    model = randomise(senet.create_model("cifar_se_resnet20", num_classes=4, reduction=8)).eval()
    path = save_weights(model, tmp_path / "m.safetensors", classes=["a", "b", "c", "d"])
    again = senet.create_model(pretrained=path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert again.senet_spec.name == "cifar_se_resnet20" and torch.equal(again(x), model(x))
    assert again.pretrained_cfg["classes"] == ("a", "b", "c", "d")
    assert again.pretrained_cfg["mean"] == senet.model_info("cifar_se_resnet20").mean
    with pytest.raises(ValueError, match="needs a model name"):
        senet.create_model()


@torch.no_grad()
def test_reset_classifier_then_save_and_reload(tmp_path):
    model = randomise(senet.create_model("cifar_se_resnet20")).eval()
    model.reset_classifier(3, global_pool="max")
    path = save_weights(model, tmp_path / "head.safetensors")
    meta = read_metadata(path)
    assert meta.kwargs["num_classes"] == 3 and meta.kwargs["global_pool"] == "max"
    assert meta.classes is None  # the new head's outputs have no names yet
    again = senet.create_model(pretrained=path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again(x), model(x))


@torch.no_grad()
def test_checkpoint_path_loads_after_building(tmp_path):
    tuned = randomise(senet.create_model("cifar_resnet20", num_classes=3)).eval()
    path = save_weights(tuned, tmp_path / "tuned.safetensors")
    model = senet.create_model("cifar_resnet20", num_classes=3, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), tuned(x))
    with pytest.raises(WeightsError, match="fc.weight file \\[3, 64\\] vs model \\[10, 64\\]"):
        senet.create_model("cifar_resnet20", checkpoint_path=path)


@torch.no_grad()
def test_in_chans_adapts_the_first_convolution(tmp_path):
    """RGB weights into a grey-input model: the first convolution's weights summed over colours,
    so a grey image gives what the RGB model gives for the same image in three channels."""
    rgb = randomise(senet.create_model("se_resnet18")).eval()
    path = save_weights(rgb, tmp_path / "rgb.safetensors")
    grey = senet.create_model("se_resnet18", pretrained=path, in_chans=1).eval()
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(grey(x), rgb(x.expand(1, 3, 64, 64)), rtol=1e-4, atol=1e-4)
    assert grey.pretrained_cfg["input_size"] == (1, 224, 224)


def test_se_bn_inception_has_the_released_layout():
    """No convolution bias (``bias_term: false`` in the released definition): 11,931,622 parameters."""
    with torch.device("meta"):
        model = senet.create_model("se_bn_inception")
    assert senet.complexity(model).params == 11_931_622
    convs = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and ".se." not in f".{n}."]
    assert convs and all(c.bias is None for c in convs)


@torch.no_grad()
def test_bn_inception_files_with_conv_biases_still_load(tmp_path):
    """A state dict of the former layout (a bias on every convolution) loads: each bias is folded into
    its batch norm's running mean, which computes the same function."""
    torch.manual_seed(0)
    model = randomise(senet.create_model("se_bn_inception", num_classes=3)).eval()
    state = model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    old = dict(state)
    for key in [k for k in state if k.endswith(".conv.weight")]:
        bias = torch.randn(state[key].shape[0])
        old[key[: -len("weight")] + "bias"] = bias
        old[key[: -len("conv.weight")] + "bn.running_mean"] = state[key[: -len("conv.weight")] + "bn.running_mean"] + bias
    loaded = senet.create_model("se_bn_inception", num_classes=3, pretrained=old).eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)

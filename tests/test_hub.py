"""torch.hub.load(path, name, source="local") builds every registered model."""

import importlib.util
from pathlib import Path

import pytest
import torch

import senet

ROOT = Path(__file__).resolve().parents[1]


def test_hubconf_exposes_every_model():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    # what torch.hub.load looks up: a callable module attribute of that name
    assert all(callable(getattr(hubconf, n, None)) for n in senet.list_models())


@pytest.mark.parametrize("reduction", [None, 8])
def test_hub_load_takes_create_models_keywords(reduction):
    kwargs = {"num_classes": 3, "reduction": reduction} if reduction else {}
    model = torch.hub.load(str(ROOT), "cifar_se_resnet20", source="local", **kwargs)
    assert model.senet_spec.name == "cifar_se_resnet20"
    assert model.num_classes == (3 if reduction else 10)
    assert model.layer1[0].se.hidden == 16 // (reduction or 16)


def test_hub_load_pretrained_file(tmp_path):
    saved = senet.create_model("cifar_resnet20", num_classes=4)
    path = senet.save_weights(saved, tmp_path / "w.safetensors")
    model = torch.hub.load(str(ROOT), "cifar_resnet20", source="local", pretrained=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))

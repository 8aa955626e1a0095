"""The one preprocessing type: every model's config is a valid one, and it takes the shapes it
has elsewhere (``model.pretrained_cfg``, a file's header) without loss."""

from __future__ import annotations

import zipfile

import pytest
import torch

import senet
from senet.data import GpuAugment
from senet.data.transforms import normalize, resolve_data_config
from senet.errors import WeightsError
from senet.models import read_metadata, registry
from senet.preprocess import PretrainedCfg


@pytest.mark.parametrize("name", senet.list_models(pretrained=True, include_tags=True) + senet.list_models())
def test_each_registered_config_round_trips(name):
    """The config a registered model (with a tag: its weights') is built with survives its
    timm dict and a file header."""
    cfg = registry.model_info(name).cfg
    released = registry.released_weights(name) if "." in name else None
    cfg = cfg.updated(released.cfg) if released is not None else cfg
    assert PretrainedCfg.from_dict(cfg.to_dict()) == cfg
    classes = ("a", "b")
    named = cfg.updated({"classes": classes})
    assert cfg.updated(PretrainedCfg.metadata_entries(named.to_metadata())) == named


def test_a_bad_value_is_refused_when_a_config_is_made():
    for entries, match in (({"crop_pct": 1.5}, "'crop_pct' must be a number in"),
                           ({"interpolation": "lanczos"}, "'interpolation' must be one of"),
                           ({"std": [0.2, 0.0, 0.2]}, "'std' must be a list of positive numbers"),
                           ({"mean": [0.5]}, "'mean' and 'std' have different lengths"),
                           ({"input_size": [3, 0, 224]}, "'input_size' must be")):
        with pytest.raises(ValueError, match=match):
            PretrainedCfg().updated(entries)


def test_evaluation_normalises_as_training_does():
    """``senet eval`` of a CIFAR run feeds the model what the run's own test pass fed it."""
    cfg = resolve_data_config(senet.create_model("cifar_resnet20"))
    batch = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(normalize(batch, cfg), GpuAugment(cfg.mean, cfg.std, crop=None, flip=False).normalize(batch))


def test_a_damaged_exported_header_is_one_line_naming_the_file(tmp_path):
    """The senet.json of a TorchScript archive is read without loading the program, and checked."""
    for text, match in (('["not", "a", "header"]', "must map strings to strings"),
                        ('{"format": "senet", "mean": "' + "[" * 100_000 + '"}', "'mean' is nested too deeply"),
                        ('{"format": "senet", "crop_pct": "2"}', "'crop_pct' must be a number in")):
        path = tmp_path / "m.pt"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("m/extra/senet.json", text)
        with pytest.raises(WeightsError, match=match) as err:
            read_metadata(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)

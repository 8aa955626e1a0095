"""A model's own state dict (``torch.save(model.state_dict())`` or a plain safetensors file) loads
back as it is, for every registered model, through every entry point: ``load_weights``,
``create_model(pretrained=...)`` and ``checkpoint_path=...``, ``infer_model`` and ``senet convert``
(before any timm / Cadene layout is guessed: the CIFAR ResNets, wide ResNets and ShuffleNets have
keys that timm's ResNet reader also recognises).

Models are built with the smallest keywords their family takes (and 3 classes), so the whole
registry costs seconds; shapes-only checks run on the meta device."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import senet
from senet.cli.main import main
from senet.models import infer_model, load_weights, model_keywords, read_metadata

MODELS = senet.list_models()
# keywords that shrink a model, each used where the model takes it
SHRINK = {"groups": 1, "width_per_group": 2, "down_kernel": 1, "widths": [4, 8, 16], "blocks": [1, 1, 1],
          "layers": [1, 1, 1], "width_mult": 0.25, "mlp_width": 8, "cardinality": 1, "stem_width": 8,
          "reduction": 64, "se_divisor": 1}


def small_model(name: str) -> tuple[torch.nn.Module, dict]:
    """``name`` with the shrinking keywords it takes, and those keywords."""
    takes = model_keywords(senet.model_info(name))
    kwargs = {"num_classes": 3, **{k: v for k, v in SHRINK.items() if k in takes}}
    torch.manual_seed(0)
    try:
        return senet.create_model(name, **kwargs), kwargs
    except ValueError:  # ResNet's basic blocks take only width_per_group=64
        del kwargs["width_per_group"]
        return senet.create_model(name, **kwargs), kwargs


def assert_same(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(state) == list(expected) or sorted(state) == sorted(expected)
    different = [k for k in expected if not torch.equal(state[k], expected[k])]
    assert not different, f"{len(different)} tensors differ: {different[:5]}"


@torch.no_grad()
@pytest.mark.parametrize("name", MODELS)
def test_own_state_dict_loads_back_everywhere(tmp_path, name):
    model, kwargs = small_model(name)
    state = model.state_dict()
    pth = tmp_path / "m.pth"
    torch.save(state, pth)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the file fits as it is
        loaded = senet.create_model(name, pretrained=pth, **kwargs)
    assert_same(loaded.state_dict(), state)
    assert loaded.senet_weights.format == "state dict"  # read as it is, not as a timm file
    for tensor in loaded.state_dict().values():
        tensor.zero_()
    assert load_weights(loaded, state) == ([], [])  # (files: test_files_without_a_model_name)
    assert_same(loaded.state_dict(), state)
    out = tmp_path / "out.safetensors"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in kwargs.items()]  # the keywords it was built with
    assert main(["convert", str(pth), str(out), "--model", name, *sets]) == 0
    assert_same(load_file(str(out)), state)
    assert read_metadata(out).model == name


@pytest.mark.parametrize("name", MODELS)
def test_infer_model_names_the_model_of_its_own_state_dict(name):
    with torch.device("meta"):
        state = senet.create_model(name).state_dict()
    assert infer_model(state) == name


@torch.no_grad()
@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_se_resnet20", "se_wrn16_8", "se_shufflenet_g3"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_files_without_a_model_name(tmp_path, capsys, name, suffix):
    """The models of the report, as ``torch.save`` and plain safetensors files (keys that timm's
    ResNet reader also claims): their shapes alone name their model for ``create_model`` and
    ``senet convert``; ``checkpoint_path`` and ``load_weights`` take them as they are."""
    torch.manual_seed(0)
    model = senet.create_model(name)
    state = model.state_dict()
    path = tmp_path / f"m{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert_same(senet.create_model(pretrained=path).state_dict(), state)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(path), str(out)]) == 0
    assert f"wrote {out}: {name}" in capsys.readouterr().out
    assert_same(load_file(str(out)), state)
    again = senet.create_model(name, checkpoint_path=path)
    assert_same(again.state_dict(), state)
    for tensor in again.state_dict().values():
        tensor.zero_()
    assert load_weights(again, path) == ([], [])
    assert_same(again.state_dict(), state)

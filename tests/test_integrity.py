"""Every file senet writes carries a SHA-256 that every read checks; foreign torch zip files
must match their CRC-32s. A damaged file is refused with one line naming it, never loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from senet.cli.main import main
from senet.data import cache, load_split
from senet.errors import SenetError, WeightsError
from senet.models import create_model
from senet.train.checkpoint import load_checkpoint, load_latest, save_checkpoint
from senet.utils.integrity import DIGEST_KEY, state_digest
from senet.models import load_weights, read_metadata, save_weights
from senet.weights.io import read_safetensors, read_torch, write_safetensors
from tests.conftest import make_tree, randomise
from tests.fault_helpers import flip_in_safetensors, flip_in_zip_member


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    save_weights(randomise(create_model("cifar_resnet20", num_classes=4)), path, classes=list("abcd"),
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return path


def test_weight_files_record_a_digest_of_their_tensors(weights: Path) -> None:
    tensors = load_file(weights)
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        recorded = f.metadata()[DIGEST_KEY]
    assert recorded == state_digest({k: tensors[k] for k in sorted(tensors)})
    _, meta = read_safetensors(weights)
    assert DIGEST_KEY not in meta and DIGEST_KEY not in read_metadata(weights).extra  # checked, not passed on


def test_a_flipped_bit_in_a_weight_file_is_refused(weights: Path, tiny_tree: Path, capsys) -> None:
    before = {k: v.clone() for k, v in load_file(weights).items()}
    key = flip_in_safetensors(weights)
    assert not torch.equal(load_file(weights)[key], before[key])  # safetensors itself reads it happily
    with pytest.raises(WeightsError, match=rf"{weights}: damaged: its tensors do not match the SHA-256"):
        load_weights(create_model("cifar_resnet20", num_classes=4), weights)
    with pytest.raises(WeightsError, match="damaged"):
        create_model("cifar_resnet20", pretrained=weights)
    assert main(["eval", "--weights", str(weights), "--dataset", "imagefolder", "--data", str(tiny_tree)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(weights) in err and "damaged" in err


def test_files_without_a_digest_still_load(weights: Path, tmp_path: Path) -> None:
    """A file of an older senet or another tool (no digest) is read as it is, unverified."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != DIGEST_KEY}
    old = tmp_path / "old.safetensors"
    save_file(load_file(weights), str(old), metadata=meta)
    model = create_model("cifar_resnet20", pretrained=old)
    assert all(torch.equal(v, load_file(weights)[k]) for k, v in model.state_dict().items())


def test_non_finite_weights_are_not_written(tmp_path: Path) -> None:
    model = create_model("cifar_resnet20", num_classes=4)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(WeightsError, match=r"refusing to write .*1 tensor\(s\) hold NaN or inf values \(fc.weight\)"):
        save_weights(model, tmp_path / "nan.safetensors")
    assert list(tmp_path.iterdir()) == []
    write_safetensors(tmp_path / "nan.safetensors", {"w": torch.tensor([float("inf")])}, {}, allow_nonfinite=True)
    assert torch.isinf(read_safetensors(tmp_path / "nan.safetensors")[0]["w"]).all()


def test_a_damaged_foreign_pth_is_refused_before_unpickling(tmp_path: Path, capsys) -> None:
    """torch.load does not check the zip's CRC-32s: senet does, before trusting the tensors."""
    model = randomise(create_model("cifar_resnet20", num_classes=4))
    pth = tmp_path / "timm.pth"
    torch.save({"state_dict": model.state_dict()}, pth)
    assert read_torch(pth)["state_dict"].keys() == model.state_dict().keys()
    member = flip_in_zip_member(pth)
    torch.load(pth, weights_only=True)  # what senet guards against: torch itself accepts it
    with pytest.raises(WeightsError, match=rf"{pth}: damaged: member '{member}' does not match its CRC-32"):
        read_torch(pth)
    assert main(["convert", str(pth), str(tmp_path / "out.safetensors"), "--model", "cifar_resnet20",
                 "--model-kw", "num_classes=4"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "damaged" in err and str(pth) in err
    assert not (tmp_path / "out.safetensors").exists()


def _state() -> dict:
    return {"model": {"w": torch.arange(1000, dtype=torch.float32), "n": torch.tensor(3)},
            "history": [{"epoch": 1, "loss": 0.5}], "epoch": 1, "name": "x", "none": None}


def test_a_checkpoint_verifies_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], _state()["model"]["w"]) and state["history"] == _state()["history"]
    # a value changed by something other than senet, in a zip whose CRCs are right: the digest finds it
    raw = torch.load(path, weights_only=True)
    raw["model"]["w"][500] += 1
    torch.save(raw, path)
    with pytest.raises(SenetError, match=rf"checkpoint {path} is damaged: its contents do not match the SHA-256"):
        load_checkpoint(path)
    # a checkpoint of an older senet (no digest) is read unverified
    del raw["sha256"]
    torch.save(raw, path)
    assert load_checkpoint(path)["model"]["w"][500] == 501


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state())
    flip_in_zip_member(path)
    with pytest.raises(SenetError, match=rf"checkpoint {path} is damaged: member .* does not match its CRC-32"):
        load_checkpoint(path)


def test_the_previous_checkpoint_is_kept_and_used_when_the_newest_is_damaged(tmp_path: Path) -> None:
    new, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    assert load_latest(new, prev) == (None, None, None)  # a run that has none yet
    save_checkpoint(new, {**_state(), "epoch": 1}, previous=prev)
    save_checkpoint(new, {**_state(), "epoch": 2}, previous=prev)
    assert load_checkpoint(new)["epoch"] == 2 and load_checkpoint(prev)["epoch"] == 1
    state, used, problem = load_latest(new, prev)
    assert (state["epoch"], used, problem) == (2, new, None)
    new.write_bytes(new.read_bytes()[: new.stat().st_size // 2])  # torn
    state, used, problem = load_latest(new, prev)
    assert (state["epoch"], used) == (1, prev) and str(new) in problem
    new.unlink()  # killed between the two renames of a save
    state, used, problem = load_latest(new, prev)
    assert (state["epoch"], used) == (1, prev) and f"no checkpoint at {new}" in problem
    flip_in_zip_member(prev)
    new.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(SenetError, match="Refusing to start the run again from scratch"):
        load_latest(new, prev)


def test_a_damaged_data_cache_is_decoded_again(tmp_path: Path, caplog) -> None:
    tree = make_tree(tmp_path / "tree", classes=2, train=4, test=2)
    first = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "cache")
    (path,) = (tmp_path / "cache" / "tensors").glob("tree-train-*.safetensors")
    flip_in_safetensors(path, "images")
    with caplog.at_level(logging.WARNING, logger="senet.data.cache"):
        assert cache.load(path) is None
    assert "ignoring damaged data cache" in caplog.text
    again = load_split("imagefolder", "train", data=tree, cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, first.images)
    assert cache.load(path) is not None  # rewritten whole

"""Coming from timm: timm's tagged names, its weight locations, its Hugging Face repo layout and
its readers of ``pretrained_cfg``, checked against the installed timm; fetching fails fast
offline; ``senet --version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import senet
from senet.errors import WeightsError
from senet.models import registry
from tests.conftest import randomise
from tests.hub_helpers import closed_port, put_in_hf_cache, released_at

timm = pytest.importorskip("timm")

WEIGHTED = senet.list_models(pretrained=True, include_aliases=True)
CFG_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation", "num_classes", "test_input_size",
            "test_crop_pct")


def meta_model(name: str, **kwargs):
    with torch.device("meta"):
        return senet.create_model(name, **kwargs)


# --- names and tags ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", WEIGHTED)
def test_each_tagged_name_is_timms_weights(name):
    """Every ``name.tag`` senet lists has timm's location (hub repo or release URL) and
    preprocessing for those weights."""
    released = registry.released_weights(name)
    theirs = timm.models.get_pretrained_cfg(released.timm_name)
    assert theirs is not None and theirs.has_weights
    assert (released.hf_hub_id, released.url) == (theirs.hf_hub_id, theirs.url or None)
    ours = registry.model_info(name).cfg.updated(released.cfg)  # what the builder applies (see the next test)
    assert {k: getattr(ours, k) for k in CFG_KEYS} == {k: getattr(theirs, k) for k in CFG_KEYS}
    arch, tag = name.split(".")
    assert released.tag == tag
    if registry.alias_info(arch) is not None:  # timm's own name: the same weights under the same name
        assert released.timm_name == name


@pytest.mark.parametrize("alias", sorted(senet.models.list_aliases()))
def test_timm_names_have_timms_tags_default_first(alias):
    """A timm name knows each set of weights timm has under it, timm's default first."""
    ours = [n.split(".")[1] for n in senet.list_models(alias, pretrained=True, include_aliases=True)]
    default = registry.released_weights(alias)
    theirs = [n.split(".")[1] for n in timm.list_models(alias, pretrained=True)]
    assert sorted(ours) == sorted(theirs)
    if theirs:
        assert timm.models.get_pretrained_cfg(alias).tag == default.tag
    else:
        assert default is None


def test_tags_select_weights_and_unknown_tags_are_named():
    assert meta_model("seresnet50").pretrained_cfg["input_size"] == (3, 224, 224)  # untagged, no weights: as built
    a3 = meta_model("seresnet50.a3_in1k", in_chans=1).pretrained_cfg
    theirs = timm.models.get_pretrained_cfg("seresnet50.a3_in1k")
    assert a3["input_size"] == (1, *theirs.input_size[1:]) and a3["test_input_size"] == (1, *theirs.test_input_size[1:])
    assert (a3["architecture"], a3["tag"], a3["hf_hub_id"]) == ("seresnet50", "a3_in1k", theirs.hf_hub_id)
    with pytest.raises(ValueError) as err:
        senet.create_model("seresnet50.a9_in1k")
    known = [n.split(".")[1] for n in senet.list_models("seresnet50", pretrained=True, include_aliases=True)]
    assert "a9_in1k" in str(err.value) and all(tag in str(err.value) for tag in known)
    with pytest.raises(ValueError, match="cifar_resnet20 has no released weights"):
        senet.create_model("cifar_resnet20.in1k")
    with pytest.raises(ValueError, match="unknown model 'seresnet51'; closest: seresnet50"):
        senet.model_info("seresnet51.a1_in1k")


def test_list_models_lists_tags_and_aliases_on_request():
    plain = senet.list_models()
    assert not any("." in n for n in plain) and "seresnet50" not in plain  # a loop over it builds each network once
    every = senet.list_models(include_aliases=True)
    assert sorted(set(every) - set(plain)) == sorted(senet.models.list_aliases())
    assert senet.list_models("seresnet50", pretrained=True, include_aliases=True) == \
        sorted(n for n in WEIGHTED if n.startswith("seresnet50."))
    assert senet.list_models("se_resnet50", pretrained=True) == ["se_resnet50.in1k"]
    assert senet.list_models("se_resnet50", include_tags=True) == ["se_resnet50.in1k"]
    assert set(WEIGHTED) >= set(senet.list_models(pretrained=True))


# --- fetching: release URLs, fast failure offline ------------------------------------------------


def test_release_url_with_a_wrong_hash_is_refused_and_not_kept(tmp_path, monkeypatch, served):
    url, www = served
    (www / "se_resnet50-ce0d4300.pth").write_bytes(b"not the released file" * 10)
    released_at(monkeypatch, "se_resnet50", f"{url}/se_resnet50-ce0d4300.pth")
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match=r"sha256 [0-9a-f]{64}, not the official ce0d4300; discarded") as err:
        senet.create_model("se_resnet50", pretrained=True, cache_dir=cache)
    assert str(cache) in str(err.value) and list(cache.iterdir()) == []


def test_release_url_offline_fails_at_once_naming_where_to_put_the_file(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/seresnet18-4bb0ce65.pth"
    released_at(monkeypatch, "se_resnet18", url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        senet.create_model("legacy_seresnet18", pretrained=True)
    assert time.perf_counter() - start < 3
    msg = str(err.value)
    assert "\n" not in msg and url in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    # the detection builders take the file through their own option
    pytest.importorskip("torchvision")
    from senet.detection import fpn_backbone

    with pytest.raises(WeightsError) as err:
        fpn_backbone("se_resnet18", weights_backbone=True)
    assert "weights_backbone=PATH" in str(err.value) and "pretrained=" not in str(err.value)


@torch.no_grad()
def test_released_weights_with_a_hub_repo_come_through_the_hub_cache(tmp_path):
    reference = randomise(timm.create_model("mobilenetv1_100")).eval()
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    released = registry.released_weights("mobilenet")
    put_in_hf_cache(tmp_path / "hf", released.hf_hub_id, {released.filename: tmp_path / "model.safetensors"})
    model = senet.create_model("mobilenet", pretrained=True, cache_dir=tmp_path / "hf").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
    assert model.pretrained_cfg["tag"] == released.tag and len(model.pretrained_cfg["classes"]) == 1000


HUB_OFFLINE = """
import json, sys, time
import senet.models
from senet.errors import WeightsError
start = time.perf_counter()
try:
    senet.models.create_model(sys.argv[1], pretrained=True)
except WeightsError as e:
    print(json.dumps({"seconds": time.perf_counter() - start, "message": str(e)}))
"""


def test_hub_offline_fails_at_once_with_the_whole_message(tmp_path):
    """No retries: a refused connection is an error within seconds, whose message is whole and
    one line (HF_ENDPOINT is read when huggingface_hub is imported: a fresh process)."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    out = subprocess.run([sys.executable, "-c", HUB_OFFLINE, "mobilenet"], capture_output=True, text=True,
                         timeout=120, env=env)
    result = json.loads(out.stdout)
    assert result["seconds"] < 5, out.stderr
    msg = result["message"]
    assert "\n" not in msg and msg.endswith("pass pretrained=PATH (--weights PATH)")
    assert registry.released_weights("mobilenet").hf_hub_id in msg and "Retrying" not in out.stderr


def test_hub_offline_mode_fails_without_a_request(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="offline mode is enabled") as err:
        senet.create_model("mobilenet", pretrained=True, cache_dir=tmp_path / "hf")
    assert time.perf_counter() - start < 1 and "\n" not in str(err.value)
    with pytest.raises(WeightsError) as err:  # a repo missing from the cache likewise
        senet.create_model("hf-hub:someone/missing", cache_dir=tmp_path / "hf", pretrained=True)
    assert "\n" not in str(err.value) and str(err.value).endswith("local-dir:FOLDER")


# --- Hugging Face repo layout --------------------------------------------------------------------


@torch.no_grad()
def test_timms_save_for_hf_works_on_senet_models_and_senet_reads_it(tmp_path):
    model = randomise(senet.create_model("se_resnet18", reduction=8, num_classes=5)).eval()
    timm.models.save_for_hf(model, tmp_path / "repo")  # timm's pytorch_model.bin
    again = senet.create_model(f"local-dir:{tmp_path / 'repo'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again(x), model(x))
    assert again.senet_spec.kwargs["reduction"] == 8 and again.pretrained_cfg["architecture"] == "se_resnet18"


@torch.no_grad()
def test_a_repo_timm_saved_loads_in_senet_from_a_folder_and_the_hub_cache(tmp_path):
    reference = randomise(timm.create_model("legacy_seresnet18", num_classes=7)).eval()
    folder = tmp_path / "repo"
    timm.models.save_for_hf(reference, folder, safe_serialization=True,
                            model_config={"label_names": [f"c{i}" for i in range(7)]})
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layout read from the repo contradicts nothing
        local = senet.create_model(f"local-dir:{folder}", pretrained=True).eval()
    torch.testing.assert_close(local(x), reference(x), rtol=0, atol=1e-5)
    assert local.pretrained_cfg["classes"] == tuple(f"c{i}" for i in range(7))
    assert local.pretrained_cfg["interpolation"] == reference.pretrained_cfg["interpolation"]
    cache = tmp_path / "hf-cache"
    put_in_hf_cache(cache, "someone/se18", {f.name: f for f in folder.iterdir()})
    hub = senet.create_model("hf-hub:someone/se18", pretrained=True, cache_dir=cache).eval()
    torch.testing.assert_close(hub(x), reference(x), rtol=0, atol=1e-5)
    bare = meta_model("hf-hub:someone/se18", cache_dir=cache)  # the config alone: random weights
    assert bare.num_classes == 7 and not hasattr(bare, "senet_weights")


@torch.no_grad()
@pytest.mark.parametrize("name, kwargs, timm_name", [
    ("seresnet18", {}, "seresnet18"),
    ("se_resnet18", {"stem_pool": "caffe", "branch_act": True}, "legacy_seresnet18"),  # senet's name, timm's layout
])
def test_senet_save_for_hf_is_read_by_timm_and_senet(tmp_path, name, kwargs, timm_name):
    model = randomise(senet.create_model(name, num_classes=3, **kwargs)).eval()
    folder = senet.save_for_hf(model, tmp_path / "repo")
    assert json.loads((folder / "config.json").read_text())["architecture"] == timm_name
    x = torch.randn(2, 3, 32, 32)
    theirs = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    torch.testing.assert_close(theirs(x), model(x), rtol=0, atol=1e-5)
    ours = senet.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert torch.equal(ours(x), model(x))


@torch.no_grad()
def test_senet_save_for_hf_of_a_model_timm_lacks_keeps_senets_keys(tmp_path):
    model = randomise(senet.create_model("cifar_se_resnet20", reduction=4, num_classes=3)).eval()
    folder = senet.save_for_hf(model, tmp_path / "repo", safe_serialization="both")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "pytorch_model.bin"]
    again = senet.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again(x), model(x)) and again.senet_spec.kwargs["reduction"] == 4
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model(f"local-dir:{folder}")


def test_push_to_hf_hub_uploads_the_saved_folder(monkeypatch):
    import huggingface_hub

    uploaded = {}

    class Api:  # the two calls push_to_hf_hub makes, recorded (no network)
        def __init__(self, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            uploaded[repo_id] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    model = senet.create_model("cifar_se_resnet20", num_classes=3)
    assert senet.push_to_hf_hub(model, "me/cifar-se") == "commit"
    assert sorted(uploaded["me/cifar-se"]) == ["config.json", "model.safetensors"]
    assert json.loads(uploaded["me/cifar-se"]["config.json"])["architecture"] == "cifar_se_resnet20"


def test_bad_repos_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model source 'hf'"):
        senet.create_model("hf:timm/x")
    with pytest.raises(WeightsError, match="no such folder"):
        senet.create_model(f"local-dir:{tmp_path / 'nowhere'}")
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not a JSON model config"):
        senet.create_model(f"local-dir:{folder}")
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "pretrained_cfg": {}}))
    with pytest.raises(ValueError, match="unknown model 'vit_base_patch16_224'"):
        senet.create_model(f"local-dir:{folder}")
    (folder / "config.json").write_text(json.dumps({"architecture": "seresnet18",
                                                    "pretrained_cfg": {"mean": "grey"}}))
    with pytest.raises(WeightsError, match="'mean' must be a list of numbers"):
        senet.create_model(f"local-dir:{folder}")
    (folder / "config.json").write_text(json.dumps({"architecture": "seresnet18", "pretrained_cfg": {}}))
    with pytest.raises(WeightsError, match="no weight file"):
        senet.create_model(f"local-dir:{folder}", pretrained=True)




ONE_PER_FAMILY = sorted({senet.model_info(n).family: n for n in reversed(senet.list_models())}.values())


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_timm_reads_pretrained_cfg(tmp_path, name):
    """timm's data config and its repo config writer take the ``pretrained_cfg`` of each family
    (one function builds it for every model)."""
    model = meta_model(name)
    data = timm.data.resolve_data_config({}, model=model)
    assert {k: data[k] for k in ("input_size", "interpolation", "crop_pct", "mean", "std")} == \
        {k: model.pretrained_cfg[k] for k in ("input_size", "interpolation", "crop_pct", "mean", "std")}
    timm.models._hub.save_config_for_hf(model, tmp_path / "config.json")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == name and config["pretrained_cfg"]["input_size"] == list(data["input_size"])


# --- command line --------------------------------------------------------------------------------


def test_version_without_importing_torch(tmp_path):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "senet", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"senet {senet.__version__}"
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    assert "torch" not in imported


def test_models_command_marks_timm_names(capsys):
    from senet.cli.main import main

    assert main(["models", "*seresnet18"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"seresnet18", "legacy_seresnet18"}
    assert all("se_resnet18" in row for row in rows.values())
    assert main(["models", "--pretrained", "--names", "seresnext50_32x4d"]) == 0
    assert capsys.readouterr().out.split() == senet.list_models("seresnext50_32x4d", pretrained=True,
                                                                 include_aliases=True)

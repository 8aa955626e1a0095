"""Weights people already have: timm / Cadene checkpoints, senet-native files, safety.

Every timm / Cadene model with a senet counterpart is loaded on the meta device (keys and
shapes: strict, no memory, no initialisation). One full-size model per layout and block kind
goes through a file and a logit comparison: a randomly initialised timm model (with every
BatchNorm statistic and affine parameter and every SE bias randomised, so that a wrong mapping or
layout shows) is saved, loaded with senet and compared in fp32 eval mode: at most 1e-5 apart,
absolute. (With BN scales drawn from [0.5, 1] the random logits stay within about 0.3 to 150, and
the largest difference seen is about 1e-6; plain ResNets match exactly.) Depths of one family
differ only in how many blocks the same key map renames, which the meta check covers.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import senet
from tests.conftest import randomise
from senet.cli.main import main
from senet.errors import WeightsError
from senet.models import registry
from senet.models import infer_model, load_weights, read_metadata, save_weights
from senet.weights import WeightsMetadata

timm = pytest.importorskip("timm")

# (timm name, senet name)
LEGACY = [
    ("legacy_seresnet18", "se_resnet18"),
    ("legacy_seresnet34", "se_resnet34"),
    ("legacy_seresnet50", "se_resnet50"),
    ("legacy_seresnet101", "se_resnet101"),
    ("legacy_seresnet152", "se_resnet152"),
    ("legacy_seresnext26_32x4d", "se_resnext26_32x4d"),
    ("legacy_seresnext50_32x4d", "se_resnext50_32x4d"),
    ("legacy_seresnext101_32x4d", "se_resnext101_32x4d"),
    ("legacy_senet154", "senet154"),
]
TIMM_SE = [
    ("seresnet18", "se_resnet18"),
    ("seresnet34", "se_resnet34"),
    ("seresnet50", "se_resnet50"),
    ("seresnet101", "se_resnet101"),
    ("seresnet152", "se_resnet152"),
    ("seresnext50_32x4d", "se_resnext50_32x4d"),
    ("seresnext101_32x4d", "se_resnext101_32x4d"),
    ("senet154", "senet154"),
]
TIMM_BASELINES = [
    ("resnet18", "resnet18"),
    ("resnet34", "resnet34"),
    ("resnet50", "resnet50"),
    ("resnet101", "resnet101"),
    ("resnet152", "resnet152"),
    ("resnext50_32x4d", "resnext50_32x4d"),
    ("resnext101_32x4d", "resnext101_32x4d"),
]
PAIRS = LEGACY + TIMM_SE + TIMM_BASELINES
# (timm name, senet name, file suffix, input side) for the logit check: each layout (Cadene,
# timm) with basic and bottleneck blocks, grouped convolutions and SENet-154's stem and
# downsampling, the baseline without SE; both file formats; 99x99 inputs (stem output 50x50:
# ceil-mode pooling matters)
LOGITS = [
    ("legacy_seresnet18", "se_resnet18", ".pth", 64),
    ("legacy_seresnet50", "se_resnet50", ".safetensors", 64),
    ("legacy_seresnet50", "se_resnet50", ".pth", 99),
    ("legacy_seresnext26_32x4d", "se_resnext26_32x4d", ".pth", 64),
    ("legacy_senet154", "senet154", ".safetensors", 99),
    ("seresnet18", "se_resnet18", ".pth", 64),
    ("seresnet50", "se_resnet50", ".pth", 64),
    ("seresnext50_32x4d", "se_resnext50_32x4d", ".safetensors", 99),
    ("senet154", "senet154", ".pth", 64),
    ("resnet50", "resnet50", ".pth", 64),
]


def save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def timm_file(name: str, path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = randomise(timm.create_model(name)).eval()
    return model, save_state(model.state_dict(), path)


def assert_logits_close(ref: torch.Tensor, out: torch.Tensor) -> None:
    assert ref.abs().max() > 0.1, "logits too small for the comparison to mean anything"
    err = (ref - out).abs().max().item()
    assert err <= 1e-5, f"max |diff| {err:.3g} (logits up to {ref.abs().max().item():.3g})"


@pytest.mark.parametrize("timm_name,senet_name", PAIRS, ids=[t for t, _ in PAIRS])
def test_timm_keys_and_shapes_fit(timm_name, senet_name):
    """Each timm / Cadene model's state dict loads into its senet model strictly (every key of the
    file used, every tensor of the model filled, every shape equal) with the layout it was
    trained with and without a warning."""
    with torch.device("meta"):
        ref_model = timm.create_model(timm_name)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("error")  # the layout read from the file must not contradict anything
        model = senet.create_model(senet_name, pretrained=ref_model.state_dict())
    assert model.senet_weights.format == ("legacy" if timm_name.startswith("legacy_") else "timm")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref_model.parameters())


@torch.no_grad()
@pytest.mark.parametrize("timm_name,senet_name,suffix,size", LOGITS,
                         ids=[f"{t}-{s}{x}-{n}" for t, s, x, n in LOGITS])
def test_timm_logits_match(tmp_path, timm_name, senet_name, suffix, size):
    ref_model, path = timm_file(timm_name, tmp_path / f"weights{suffix}")
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    ref = ref_model(x)
    del ref_model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layout read from the file must not contradict anything
        model = senet.create_model(senet_name, pretrained=path).eval()
    assert_logits_close(ref, model(x))
    assert model.senet_weights.format == ("legacy" if timm_name.startswith("legacy_") else "timm")


@torch.no_grad()
def test_layout_matters_and_contradiction_warns(tmp_path):
    ref_model, path = timm_file("seresnet50", tmp_path / "w.pth")
    x = torch.randn(2, 3, 64, 64)
    with pytest.warns(UserWarning, match=r"stride_in_1x1=True .*weights: False"):
        model = senet.create_model("se_resnet50", pretrained=path, stride_in_1x1=True).eval()
    assert (model(x) - ref_model(x)).abs().max() > 1e-2  # the layout changes the function
    wrong = senet.create_model("se_resnet50", se_divisor=8).eval()  # caffe pooling, stride in 1x1
    with pytest.warns(UserWarning, match=r"stem_pool='caffe'.*stride_in_1x1=True"):
        load_weights(wrong, path)
    right = senet.create_model("se_resnet50", se_divisor=8, stride_in_1x1=False, stem_pool="torch").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(right, path)
    assert_logits_close(ref_model(x), right(x))


def test_wrapped_checkpoint_with_module_prefix(tmp_path):
    ref_model, _ = timm_file("legacy_seresnet18", tmp_path / "unused.pth")
    state = {f"module.{k}": v for k, v in ref_model.state_dict().items()}
    path = tmp_path / "train.pth"
    torch.save({"epoch": 3, "args": Namespace(lr=0.1), "state_dict": state, "state_dict_ema": {}}, path)
    model = senet.create_model("se_resnet18", pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_logits_close(ref_model(x), model(x))
    # a state dict in memory works too, through load_weights
    fresh = senet.create_model("se_resnet18", stem_pool="caffe", branch_act=True)
    assert load_weights(fresh, {"model": state}) == ([], [])
    assert torch.equal(fresh.layer1[0].se.fc1.bias, ref_model.layer1[0].se_module.fc1.bias)


@torch.no_grad()
def test_senet_native_round_trip(tmp_path):
    model = randomise(senet.create_model("se_resnet18", num_classes=10, reduction=8, se_stages=(3, 4))).eval()
    classes = [f"class{i}" for i in range(10)]
    path = save_weights(model, tmp_path / "m.safetensors", classes=classes, mean=(0.5, 0.5, 0.5),
                        std=(0.25, 0.25, 0.25), metadata={"note": "round trip"})
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temporary file left behind
    meta = read_metadata(path)
    assert meta == WeightsMetadata(
        format="senet", model="se_resnet18", kwargs={"num_classes": 10, "reduction": 8, "se_stages": [3, 4]},
        data={"classes": classes, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": [3, 224, 224],
              "crop_pct": 0.875, "interpolation": "bilinear"},
        senet_version=senet.__version__, extra={"note": "round trip"})
    assert meta.mean == (0.5, 0.5, 0.5) and meta.classes == classes
    loaded = senet.create_model("se_resnet18", pretrained=path).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert loaded.senet_spec.kwargs == {"num_classes": 10, "reduction": 8, "se_stages": [3, 4]}
    assert loaded.layer1[0].se is None and loaded.layer3[0].se.hidden == 256 // 8
    assert loaded.senet_weights.classes == classes
    assert loaded.pretrained_cfg["classes"] == tuple(classes) and loaded.pretrained_cfg["std"] == (0.25, 0.25, 0.25)
    # overwriting goes through a temporary file too, and keeps the folder clean; the model's
    # pretrained config (class names, normalisation) goes with it
    save_weights(loaded, path)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"] and read_metadata(path).classes == classes


def test_save_weights_errors(tmp_path):
    model = senet.create_model("resnet18", num_classes=3)
    with pytest.raises(ValueError, match="reserved"):
        save_weights(model, tmp_path / "a.safetensors", metadata={"model": "x"})
    with pytest.raises(ValueError, match="3 classes"):
        save_weights(model, tmp_path / "a.safetensors", classes=["a", "b"])
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_weights(model, tmp_path / "a.pth")
    model.fc = torch.nn.Linear(512, 7)
    with pytest.raises(WeightsError, match="no longer matches"):
        save_weights(model, tmp_path / "a.safetensors")
    assert not any(tmp_path.iterdir())


def test_num_classes_mismatch_keeps_backbone(tmp_path):
    ref_model, path = timm_file("seresnet18", tmp_path / "w.safetensors")
    with pytest.warns(UserWarning, match=r"1000 classes, the model 10.*'fc'.*freshly initialised"):
        model = senet.create_model("se_resnet18", num_classes=10, pretrained=path).eval()
    assert model.fc.weight.shape == (10, 512)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), ref_model.forward_features(x), atol=1e-5, rtol=1e-5)
    assert model.senet_spec.kwargs["num_classes"] == 10


def test_bad_keys_are_all_named(tmp_path):
    state = senet.create_model("resnet18").state_dict()
    del state["layer1.0.conv1.weight"]
    state["layer9.0.extra.weight"] = torch.zeros(3)
    state["fc.bias"] = torch.zeros(999)
    path = save_state(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        senet.create_model("resnet18", pretrained=path)
    msg = str(err.value)
    assert str(path) in msg
    assert "1 missing key: layer1.0.conv1.weight" in msg
    assert "1 unexpected key: layer9.0.extra.weight" in msg
    assert "fc.bias file [999] vs model [1000]" in msg
    # timm names are shown next to senet's, and long lists are cut
    _, tpath = timm_file("resnet18", tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"missing keys: .* and \d+ more.*the file holds basic blocks \(2, 2, 2, 2\)"):
        senet.create_model("resnet34", pretrained=tpath)
    tstate = torch.load(tpath, weights_only=True)
    tstate["conv1.weight"] = tstate["conv1.weight"][:, :2]
    with pytest.raises(WeightsError, match=r"stem\.conv1\.weight \(file: conv1\.weight\) file \[64, 2, 7, 7\]"):
        senet.create_model("resnet18", pretrained=save_state(tstate, tmp_path / "t.pth"))


def test_strict_false_reports_instead_of_raising(tmp_path):
    state = senet.create_model("resnet18").state_dict()
    del state["fc.weight"]
    state["extra"] = torch.zeros(1)
    model = senet.create_model("resnet18")
    result = load_weights(model, state, strict=False)
    assert result.missing_keys == ["fc.weight"] and result.unexpected_keys == ["extra"]
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


class _Marker:
    """Unpickling this calls ``open(path, "w")``: the file appears if code runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_pickle_that_runs_code_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    payload = {"conv1.weight": torch.zeros(1), "evil": _Marker(marker)}
    path = tmp_path / "evil.pth"
    if kind == "zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Marker(control))).close()  # the payload does run when unpickled
    assert control.exists()
    for load in (lambda: senet.create_model("resnet18", pretrained=path),
                 lambda: load_weights(senet.create_model("resnet18"), path),
                 lambda: read_metadata(path)):
        with pytest.raises(WeightsError, match=r"not a plain tensor checkpoint: refusing to execute code"):
            load()
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_or_garbage_file(tmp_path, suffix):
    path = save_state(senet.create_model("resnet18").state_dict(), tmp_path / f"w{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=rf"{path.name}.*(truncated or corrupt|not a plain tensor)"):
        senet.create_model("resnet18", pretrained=path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match=path.name):
        senet.create_model("resnet18", pretrained=path)
    with pytest.raises(WeightsError, match="no such weight file"):
        senet.create_model("resnet18", pretrained=tmp_path / "missing.pth")


def test_unrecognised_keys(tmp_path):
    path = save_state({"encoder.weight": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="unrecognised checkpoint.*encoder.weight"):
        senet.create_model("resnet18", pretrained=path)


@torch.no_grad()
def test_convert_cli_infers_the_model(tmp_path, capsys):
    ref_model, src = timm_file("seresnet50", tmp_path / "seresnet50.pth")
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(src), str(dst), "--mean", "0.485", "0.456", "0.406",
                 "--std", "0.229", "0.224", "0.225"]) == 0
    assert "se_resnet50" in capsys.readouterr().out
    meta = read_metadata(dst)
    assert meta.model == "se_resnet50" and meta.mean == (0.485, 0.456, 0.406)
    assert meta.kwargs == {"num_classes": 1000, "stem_pool": "torch", "branch_act": False,
                           "stride_in_1x1": False, "se_divisor": 8}
    x = torch.randn(2, 3, 64, 64)
    assert_logits_close(ref_model(x), senet.create_model("se_resnet50", pretrained=dst).eval()(x))
    _, legacy = timm_file("legacy_seresnet18", tmp_path / "legacy.safetensors")
    assert infer_model(legacy) == "se_resnet18"
    assert main(["convert", str(legacy), str(tmp_path / "l.safetensors")]) == 0
    assert read_metadata(tmp_path / "l.safetensors").kwargs["branch_act"] is True


def test_convert_cli_errors(tmp_path, capsys, monkeypatch):
    state = senet.create_model("se_resnet50", reduction=8).state_dict()  # no default model has these shapes
    src = save_state(state, tmp_path / "r8.pth")
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no registered model" in err and "--model" in err
    assert main(["convert", str(src), str(dst), "--model", "se_resnet50", "--set", "reduction=8"]) == 0
    assert read_metadata(dst).kwargs == {"num_classes": 1000, "reduction": 8}
    # two registered models with the same shapes: ambiguous
    info = registry.model_info("se_resnet18")
    monkeypatch.setitem(registry._REGISTRY, "se_resnet18_twin", info)
    src18 = save_state(senet.create_model("se_resnet18").state_dict(), tmp_path / "r18.pth")
    assert main(["convert", str(src18), str(dst)]) == 2
    assert "several models (se_resnet18, se_resnet18_twin); pass --model" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="refusing to execute code"):
        torch.save({"x": _Marker(tmp_path / "m")}, tmp_path / "e.pth")
        senet.create_model("resnet18", pretrained=tmp_path / "e.pth")
    assert main(["convert", str(tmp_path / "e.pth"), str(dst)]) == 2
    assert not (tmp_path / "m").exists()


def test_every_torch_load_in_the_package_is_weights_only():
    call = re.compile(r"torch\.load\((?:[^()]|\([^()]*\))*\)")
    calls = 0
    for path in Path(senet.__file__).parent.rglob("*.py"):
        for m in call.finditer(path.read_text()):
            calls += 1
            assert "weights_only=True" in m.group(0), f"{path}: {m.group(0)}"
    assert calls >= 1


_HEADER = {"format": "senet", "model": "cifar_resnet20", "kwargs": json.dumps({"num_classes": 2})}
_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("header,match,contradicts", [
    ({"kwargs": _DEEP}, "metadata 'kwargs' is nested too deeply", True),  # RecursionError in json
    ({"mean": _DEEP}, "metadata 'mean' is nested too deeply", True),
    ({"kwargs": json.dumps({"num_classes": 10**12})},  # would be a 256 TB classifier
     r"num_classes=1000000000000, but its classifier 'fc.weight' has 2 rows", True),
    ({"kwargs": json.dumps({"num_classes": 2, "in_chans": 10**9})}, "in_chans=1000000000, but its first", True),
    ({"kwargs": json.dumps({"num_classes": 2, "in_chans": 0})}, "in_chans must be an integer >= 1, got 0", True),
    ({"kwargs": json.dumps({"num_classes": 2, "widths": [16, 32, 10**9]})},
     r"widths=\[16, 32, 1000000000\] would need at least 1.05 TiB .*at most 8 GiB", False),
], ids=["deep-kwargs", "deep-mean", "num_classes", "in_chans-huge", "in_chans-0", "widths"])
def test_hostile_metadata_is_one_line_naming_the_file(tmp_path, capsys, header, match, contradicts):
    """A header is checked (JSON depth, keyword ranges, against the file's own tensors, and the
    size of what it would build) before anything is built from it."""
    path = tmp_path / "hostile.safetensors"
    save_file(senet.create_model("cifar_resnet20", num_classes=2).state_dict(), str(path), metadata={**_HEADER, **header})
    loads = [lambda: senet.create_model(pretrained=path), lambda: senet.create_model("cifar_resnet20", pretrained=path)]
    if contradicts:  # a header that cannot be read or contradicts the tensors: refused whatever the model
        loads.append(lambda: load_weights(senet.create_model("cifar_resnet20", num_classes=2), path))
    for load in loads:
        with pytest.raises(WeightsError, match=match) as err:
            load()
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "unexpected error" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_classes_file_encodings(tmp_path, capsys):
    """--classes takes UTF-8 (with or without BOM) and UTF-16 with BOM; anything else, and a list
    that does not fit the model, is one line naming the file and the option."""
    src = save_state(senet.create_model("cifar_resnet20").state_dict(), tmp_path / "m.pth")
    names = [f"clase {i} ñ" for i in range(10)]
    text = "\n".join(names) + "\n"
    files = {"utf-16.txt": text.encode("utf-16"), "utf-8-sig.txt": text.encode("utf-8-sig"),
             "utf-8.txt": text.encode("utf-8")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out = tmp_path / f"{name}.safetensors"
        assert main(["convert", str(src), str(out), "--classes", str(tmp_path / name)]) == 0
        assert read_metadata(out).classes == names
    capsys.readouterr()
    bad = {"latin-1.txt": (text.encode("latin-1"), "is not UTF-8"),
           "utf-16-le.txt": (text.encode("utf-16-le"), "UTF-16 without a byte-order mark?"),
           "three.txt": (b"a\nb\nc\n", "3 class names given for a model with 10 classes"),
           "empty.txt": (b"\n \n", "no class names"),
           "missing.txt": (None, "No such file")}
    for name, (data, match) in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--classes", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tmp_path / name) in err and "--classes" in err and match in err
    assert not (tmp_path / "x.safetensors").exists()

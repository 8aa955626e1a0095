"""Excitation analysis (paper section 7): hooks, block names, statistics and `senet analyze` end to end."""

import argparse
import csv
import warnings

import pytest
import torch
from PIL import Image

from senet.analysis import (
    block_statistics,
    excitation_hooks,
    find_se_blocks,
    last_block_per_stage,
    parse_classes,
    record_excitations,
    sample_channels,
    select_per_class,
)
from senet.errors import SenetError
from senet.layers import SqueezeExcite
from senet.models import create_model
from tests.conftest import randomise

RESNET50_DEPTHS = {2: 3, 3: 4, 4: 6, 5: 3}


def _gates_hooked(model):
    return sum(len(m.gate._forward_hooks) for m in model.modules() if isinstance(m, SqueezeExcite))


def test_se_resnet50_hooks_capture_one_excitation_per_block_named_as_in_the_paper():
    torch.manual_seed(0)
    model = randomise(create_model("se_resnet50", num_classes=10))
    x = torch.randn(3, 3, 64, 64)
    seen = []  # inputs of one SE block, to check that the recorded s is what the block computes
    handle = model.layer3[5].se.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    exc = record_excitations(model, x, torch.tensor([0, 1, 1]), batch_size=2)
    handle.remove()
    expected = [f"SE_{s}_{b}" for s, n in RESNET50_DEPTHS.items() for b in range(1, n + 1)]
    assert [b.name for b in exc.blocks] == expected and len(expected) == 16
    assert list(exc.values) == expected
    assert exc.block("SE_3_2").module == "layer2.1.se" and exc.block("SE_5_3").module == "layer4.2.se"
    widths = {2: 256, 3: 512, 4: 1024, 5: 2048}
    for b in exc.blocks:
        assert exc.values[b.name].shape == (3, widths[b.stage]) == (3, b.channels)
        assert exc.values[b.name].dtype == torch.float32
        assert 0 <= exc.values[b.name].min() and exc.values[b.name].max() <= 1
    assert exc.labels.tolist() == [0, 1, 1] and exc.image_ids.tolist() == [0, 1, 2]
    assert model.training  # ran in eval mode, mode restored
    # the recorded s is the excitation the block multiplies its input with (eq. 3)
    with torch.no_grad():
        want = torch.cat([model.layer3[5].se.excite(u).flatten(1) for u in seen])
    torch.testing.assert_close(exc.values["SE_4_6"], want)
    assert [b.name for b in last_block_per_stage(exc.blocks)] == ["SE_2_3", "SE_3_4", "SE_4_6", "SE_5_3"]


def test_cifar_names_use_the_se_stages_numbering():
    model = create_model("cifar_se_resnet20")
    blocks = find_se_blocks(model)
    assert [(b.name, b.module, b.channels) for b in blocks] == [
        (f"SE_{s}_{j}", f"layer{s - 1}.{j - 1}.se", 16 * 2 ** (s - 2)) for s in (2, 3, 4) for j in (1, 2, 3)]
    # a model with SE in one stage only names that stage as se_stages does
    assert [b.name for b in find_se_blocks(create_model("cifar_se_resnet20", se_stages=[3]))] == [
        "SE_3_1", "SE_3_2", "SE_3_3"]
    assert [b.name for b in find_se_blocks(create_model("se_wrn16_8", se_stages=[4]))] == ["SE_4_1", "SE_4_2"]


@pytest.mark.parametrize("name, first, block", [
    ("se_shufflenet_g3", "SE_3_1", ("SE_4_1", "layer2.0.se")),  # ShuffleNet's layer1 ("Stage2") is stage 3
    ("se_vgg16_bn", "SE_0_1", ("SE_4_3", "layer5.2.se")),  # conv1_x at full resolution is stage 0
    ("se_bn_inception", "SE_3_1", ("SE_4_1", "inception.3c.se")),  # 3c halves the resolution: stage 4
    ("se_mobilenet", "SE_1_1", ("SE_4_6", "blocks.3.5.se")),
])
def test_other_families_follow_their_se_stages_numbering(name, first, block):
    with torch.device("meta"):
        blocks = find_se_blocks(create_model(name))
    assert blocks[0].name == first
    assert {b.name: b.module for b in blocks}[block[0]] == block[1]


def test_names_of_models_not_built_by_create_model():
    # without senet_spec the layer<i> containers give stage i + 1 (torchvision / timm ResNets after add_se)
    model = create_model("se_resnet18")
    del model.senet_spec
    assert [b.name for b in find_se_blocks(model)] == [f"SE_{s}_{b}" for s in (2, 3, 4, 5) for b in (1, 2)]


def test_model_without_se_blocks_is_a_clear_error():
    with pytest.raises(SenetError, match="cifar_resnet20 has no SE blocks"):
        find_se_blocks(create_model("cifar_resnet20"))
    with pytest.raises(SenetError, match="no SE blocks"):
        record_excitations(create_model("cifar_resnet20"), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))


@pytest.mark.parametrize("gate", ["sigmoid", "tanh", "relu"])
def test_gate_ranges_and_hooks_removed_and_modes_restored(gate):
    model = randomise(create_model("cifar_se_resnet20", gate=gate), seed=1)
    model.train()
    model.layer2[0].bn1.eval()  # a mixed mode must come back as it was
    modes = {n: m.training for n, m in model.named_modules()}
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    exc = record_excitations(model, images, torch.arange(10) % 2, lambda x: x.float() / 127.5 - 1, batch_size=4)
    values = torch.cat([v.flatten() for v in exc.values.values()])
    assert len(exc.labels) == 10
    if gate == "sigmoid":
        assert values.min() > 0 and values.max() < 1
    elif gate == "tanh":
        assert values.min() >= -1 and values.max() <= 1 and values.min() < 0 < values.max()
    else:
        assert values.min() == 0 and values.max() > 0
    assert _gates_hooked(model) == 0
    assert {n: m.training for n, m in model.named_modules()} == modes


def test_loader_input_nosqueeze_and_hooks_removed_after_an_error():
    model = create_model("cifar_se_resnet20", squeeze="none")
    loader = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])),
              (torch.randn(2, 3, 32, 32), torch.tensor([4, 5]))]
    exc = record_excitations(model, loader, classes=[f"c{i}" for i in range(6)])
    assert exc.values["SE_4_3"].shape == (6, 64)  # per-position gates averaged over positions
    assert exc.labels.tolist() == [0, 1, 2, 3, 4, 5] and exc.classes[5] == "c5"
    with pytest.raises(RuntimeError), excitation_hooks(model) as store:
        assert _gates_hooked(model) == 9
        model(torch.randn(1, 5, 32, 32))  # wrong number of input channels
    assert _gates_hooked(model) == 0 and len(store["SE_2_1"]) == 0
    with pytest.raises(ValueError, match="pass a transform"):
        record_excitations(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]))


def test_se_block_skipped_by_the_forward_pass_is_reported():
    model = create_model("cifar_se_resnet20")
    model.layer3[1].placement = "skipped"  # residual_forward then never calls this block's SE
    with pytest.raises(SenetError, match="SE_4_2 ran 0 times"):
        record_excitations(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))


def test_specificity_score_formula_and_behaviour():
    s = block_statistics(torch.tensor([[0.0], [2.0], [4.0], [6.0]]), torch.tensor([0, 0, 1, 1]))
    # class means 1 and 5 (between-class variance 4), within-class variances 1 and 1
    assert s.score == pytest.approx(4.0) and s.class_share == pytest.approx(0.8)
    assert s.class_mean[:, 0].tolist() == [1.0, 5.0] and s.class_std[:, 0].tolist() == [1.0, 1.0]
    assert s.mean.tolist() == [3.0] and s.chance == pytest.approx(0.5 * 0.5 / 0.5)

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(50)
    noise = 0.05 * torch.randn(200, 32, generator=g)
    agnostic = block_statistics(0.5 + noise, labels)
    assert agnostic.chance == pytest.approx(3 / (4 * 49))
    assert agnostic.score < 3 * agnostic.chance and agnostic.hint == "class-agnostic"
    offsets = 0.6 * torch.rand(4, 32, generator=g)
    specific = block_statistics(0.4 + offsets[labels] + noise, labels)
    assert specific.score > 5 and specific.class_share > 0.8 and specific.hint == "class-specific"
    torch.testing.assert_close(specific.class_mean, (0.4 + offsets[labels] + noise).view(4, 50, 32).mean(1))
    saturated = block_statistics(torch.full((200, 8), 0.97) + 0.01 * torch.randn(200, 8, generator=g), labels)
    assert saturated.frac_high == 1.0 and saturated.hint.endswith("mostly > 0.9")


def test_choosing_classes_images_and_channels():
    names = ["cat", "dog", "ship", "car"]
    assert parse_classes(None, names) == [0, 1, 2, 3]
    assert parse_classes(None, [str(i) for i in range(100)]) == [0, 1, 2, 3]
    assert parse_classes("ship,0", names) == [2, 0] and parse_classes(["dog", 3], names) == [1, 3]
    with pytest.raises(ValueError, match="unknown class 'horse'; classes: cat, dog"):
        parse_classes("cat,horse", names)
    with pytest.raises(ValueError, match="out of range"):
        parse_classes("7", names)
    with pytest.raises(ValueError, match="given twice"):
        parse_classes("cat,0", names)
    labels = torch.tensor([0, 1, 0, 1, 0, 2, 0, 0])
    assert select_per_class(labels, [1, 0], 2, seed=None).tolist() == [1, 3, 0, 2]
    picked = select_per_class(labels, [0], 3, seed=5)
    assert picked.tolist() == select_per_class(labels, [0], 3, seed=5).tolist()
    assert len(set(picked.tolist())) == 3 and all(labels[picked] == 0)
    with pytest.warns(UserWarning, match="class 2 has only 1 images"):
        assert select_per_class(labels, [2], 4).tolist() == [5]
    with pytest.raises(ValueError, match="class 3 has no images"):
        select_per_class(labels, [3], 1)
    with pytest.raises(ValueError, match="class 'car' has no images"):
        select_per_class(labels, [3], 1, class_names=names)
    assert sample_channels(16, 50).tolist() == list(range(16))
    ch = sample_channels(64, 10, seed=1)
    assert len(ch) == 10 and ch.tolist() == sorted(set(ch.tolist())) and ch.max() < 64


# ---------------------------------------------------------------- the command


def _analyze(*argv):
    from senet.cli import analyze_cmd

    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    return analyze_cmd.run(parser.parse_args(list(argv)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny training run (2 steps on the conftest tree) shared by the command's tests."""
    from senet.cli.main import main
    from tests.conftest import make_tree

    base = tmp_path_factory.mktemp("analyze")
    tree, out = make_tree(base / "tiny"), base / "run"
    with pytest.MonkeyPatch.context() as mp:  # the data cache of conftest's isolated_cache
        mp.setenv("SENET_CACHE", str(tmp_path_factory.getbasetemp() / "senet-cache"))
        assert main(["train", "--data", str(tree), "--out", str(out), "--set", "data.dataset=imagefolder",
                     "--set", "data.crop=16", "--set", "data.pad=2", "--set", "data.batch_size=16",
                     "--set", "run.max_steps=2", "--epochs", "1", "--no-progress"]) == 0
    return out


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_analyze_a_run_end_to_end(tiny_run, tmp_path, capsys):
    from safetensors.torch import load_file

    assert _analyze("--run", str(tiny_run), "--per-class", "20", "--channels", "10", "--no-progress") == 0
    out = tiny_run / "analysis"  # the default
    captured = capsys.readouterr()
    assert "class 'class0' has only 8 images; using all of them instead of 20" in captured.err
    names = [f"SE_{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3)]
    for name in names:
        assert f"\n{name} " in captured.out
    assert "32 images of 4 classes (class0, class1, class2, class3)" in captured.out

    rows = _rows(out / "excitations.csv")
    assert set(rows[0]) == {"block", "image", "class", "channel", "value"}
    assert len(rows) == 32 * 3 * (16 + 32 + 64)
    assert {r["class"] for r in rows} == {"class0", "class1", "class2", "class3"}
    assert all(0 <= float(r["value"]) <= 1 for r in rows[:: 97])
    tensors = load_file(out / "excitations.safetensors")
    assert tensors["SE_4_3"].shape == (32, 64) and tensors["labels"].tolist() == sorted(tensors["labels"].tolist())
    importance = load_file(out / "importance.safetensors")
    assert sorted(importance) == sorted(names) and importance["SE_3_1"].shape == (32,)
    torch.testing.assert_close(importance["SE_3_1"], tensors["SE_3_1"].mean(0))
    imp_rows = [r for r in _rows(out / "importance.csv") if r["block"] == "SE_3_1"]
    assert [int(r["channel"]) for r in imp_rows] == list(range(32))
    assert float(imp_rows[5]["importance"]) == pytest.approx(float(importance["SE_3_1"][5]), rel=1e-5)
    spec = _rows(out / "specificity.csv")
    assert [r["block"] for r in spec] == names and all(float(r["score"]) >= 0 for r in spec)
    assert spec[0]["images"] == "32" and spec[0]["classes"] == "4" and spec[-1]["channels"] == "64"
    for fig in ("figure6.png", "figure7.png"):
        with Image.open(out / fig) as im:
            im.load()
            assert im.size[0] > 300 and im.size[1] > 150

    # chosen classes by name and index, the first images, chosen blocks
    assert _analyze("--run", str(tiny_run), "--classes", "class2,1", "--per-class", "3", "--first",
                    "--blocks", "SE_4_1,SE_4_3", "--out", str(tmp_path / "a2"), "--no-progress") == 0
    rows = _rows(tmp_path / "a2" / "excitations.csv")
    assert {r["class"] for r in rows} == {"class2", "class1"} and len(rows) == 6 * 336
    assert sorted({int(r["image"]) for r in rows if r["class"] == "class2"}) == [16, 17, 18]


def test_analyze_errors(tiny_run, tiny_tree, tmp_path, monkeypatch, capsys):
    from senet.models import save_weights

    with pytest.raises(ValueError, match="unknown class 'cat'"):
        _analyze("--run", str(tiny_run), "--classes", "class1,cat")
    with pytest.raises(ValueError, match="unknown SE block 'SE_5_1'"):
        _analyze("--run", str(tiny_run), "--blocks", "SE_5_1")
    with pytest.raises(SenetError, match="no such folder"):
        _analyze("--run", str(tmp_path / "missing"))
    plain = tmp_path / "plain.safetensors"
    save_weights(create_model("cifar_resnet20", num_classes=4), plain)
    with pytest.raises(SenetError, match="cifar_resnet20 has no SE blocks"):
        _analyze("--weights", str(plain), "--dataset", "imagefolder", "--data", str(tiny_tree))
    # --weights: the normalisation the file records; default out dir analysis/<model>
    se = tmp_path / "se.safetensors"
    save_weights(create_model("cifar_se_resnet20", num_classes=4), se)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _analyze("--weights", str(se), "--dataset", "imagefolder", "--data", str(tiny_tree),
                        "--per-class", "2", "--no-progress") == 0
    assert (tmp_path / "analysis" / "cifar_se_resnet20" / "figure6.png").is_file()

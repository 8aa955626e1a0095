"""Configuration schema, recipes, overrides and learning-rate schedules."""

import math

import pytest
import yaml

import senet
from senet.errors import ConfigError
from senet.train import list_recipes, lr_at, read_recipe, resolve
from senet.train.config import ScheduleConfig, parse_override

RECIPES = list_recipes()


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_resolves_to_a_registered_model(name):
    cfg = resolve(name)
    assert cfg.recipe == name and cfg.description
    info = senet.model_info(cfg.model.name)
    assert info.input_size[1] == cfg.data.crop == (224 if name.startswith(("imagenet/", "places365/")) else 32)
    assert read_recipe(name)  # states something


@pytest.mark.parametrize("name", [r for r in RECIPES if r.split("/")[-1].startswith("se_")])
def test_se_recipe_differs_from_its_baseline_only_in_the_model(name):
    """Table 4 compares SE and baseline under the same recipe."""
    folder, model = name.split("/")
    se, base = resolve(name).to_dict(), resolve(f"{folder}/{model[3:]}").to_dict()
    assert se["model"]["name"] != base["model"]["name"] and senet.model_info(se["model"]["name"]).has_se
    for section in ("data", "optim", "schedule", "run"):
        assert se[section] == base[section], section


def test_table4_hyperparameters():
    r110 = resolve("cifar10/resnet110")
    assert (r110.optim.lr, r110.optim.momentum, r110.optim.weight_decay, r110.data.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (r110.schedule.epochs, r110.schedule.milestones, r110.schedule.gamma) == (164, [82, 123], 0.1)
    assert (r110.schedule.warmup, r110.schedule.warmup_lr, r110.schedule.warmup_epochs) == ("constant", 0.01, 1)
    assert resolve("cifar10/resnet164").schedule.warmup_epochs == 0
    wrn = resolve("cifar10/wrn16_8")
    assert wrn.optim.nesterov and wrn.optim.weight_decay == 5e-4
    assert (wrn.schedule.epochs, wrn.schedule.milestones, wrn.schedule.gamma) == (200, [60, 120, 160], 0.2)
    ss = resolve("cifar10/se_shake_shake26_2x96d")
    assert (ss.schedule.name, ss.optim.lr, ss.schedule.final_lr, ss.schedule.epochs) == ("cosine", 0.2, 0, 1800)
    assert ss.data.cutout == 16 and ss.optim.weight_decay == 1e-4 and ss.data.batch_size == 128
    assert resolve("cifar100/shake_even29_2x4x64d").data.cutout == 8
    assert resolve("cifar100/se_resnet110").data.dataset == "cifar100"


def test_default_recipe_is_an_se_network_on_cifar10():
    cfg = resolve()
    assert cfg.recipe == "default" and cfg.data.dataset == "cifar10"
    assert senet.model_info(cfg.model.name).has_se


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"closest: cifar10/se_resnet110.*built-in recipes: .*cifar10/resnet110"):
        resolve("cifar10/se_resnet_110")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve("nothere.yaml")


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'optim.learning_rate'.*valid keys: .*optim.lr"):
        resolve(overrides=["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="unknown key 'optimizer'.*valid keys: recipe, description, model"):
        resolve(overrides=["optimizer.lr=0.1"])


@pytest.mark.parametrize("override,match", [
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("data.batch_size=1.5", "data.batch_size: expected an integer"),
    ("data.flip=maybe", "data.flip: expected true or false"),
    ("optim.lr=-1", "optim.lr must be > 0"),
    ("schedule.name=exp", "schedule.name 'exp' is unknown; choose from multistep"),
    ("schedule.milestones=[5, 2]", "increasing"),
    ("run.device=tpu", "choose from auto, cpu, cuda"),
    ("optim", "not of the form section.key=value"),
    ("data={x", "not valid YAML"),
])
def test_bad_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve(overrides=[override])


def test_overrides_are_typed_and_nested():
    cfg = resolve("cifar10/se_resnet110", ["optim.lr=0.05", "model.kwargs.reduction=8", "data.path=/x y",
                                           "schedule.milestones=[10, 20]", "optim.weight_decay=1e-4"])
    assert cfg.optim.lr == 0.05 and cfg.model.kwargs == {"reduction": 8} and cfg.data.path == "/x y"
    assert cfg.schedule.milestones == [10.0, 20.0] and cfg.optim.weight_decay == 1e-4
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


def test_recipe_files_inherit_and_loops_are_refused(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("inherit: cifar10/wrn16_8\noptim: {lr: 0.05}\n")
    child = tmp_path / "child.yaml"
    child.write_text("inherit: base.yaml\nmodel: {name: se_wrn16_8}\n")
    cfg = resolve(str(child))
    assert (cfg.model.name, cfg.optim.lr, cfg.optim.nesterov, cfg.schedule.gamma) == ("se_wrn16_8", 0.05, True, 0.2)
    base.write_text("inherit: child.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        resolve(str(child))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(str(bad))


def test_epochs_keeps_the_schedule_shape():
    full = resolve("cifar10/resnet110")
    short = resolve("cifar10/resnet110", epochs=41)
    assert short.schedule.epochs == 41
    assert short.schedule.milestones == [82 / 4, 123 / 4] and short.schedule.warmup_epochs == 0.25
    spe_full, spe_short = 100, 100
    for frac in (0.1, 0.49, 0.51, 0.76, 0.99):
        assert lr_at(full.schedule, 0.1, int(frac * 164 * spe_full), spe_full) == pytest.approx(
            lr_at(short.schedule, 0.1, int(frac * 41 * spe_short), spe_short))
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        resolve(epochs=0)


def test_multistep_with_constant_warmup():
    s = ScheduleConfig(name="multistep", epochs=164, milestones=[82, 123], gamma=0.1,
                       warmup="constant", warmup_lr=0.01, warmup_epochs=1)
    spe = 391
    assert lr_at(s, 0.1, 0, spe) == 0.01 and lr_at(s, 0.1, spe - 1, spe) == 0.01
    assert lr_at(s, 0.1, spe, spe) == 0.1
    assert lr_at(s, 0.1, 82 * spe - 1, spe) == 0.1
    assert lr_at(s, 0.1, 82 * spe, spe) == pytest.approx(0.01)
    assert lr_at(s, 0.1, 123 * spe, spe) == pytest.approx(0.001)


def test_cosine_step_linear_and_linear_warmup():
    cos = ScheduleConfig(name="cosine", epochs=10, final_lr=0.0)
    assert lr_at(cos, 0.2, 0, 10) == 0.2
    assert lr_at(cos, 0.2, 50, 10) == pytest.approx(0.1)
    assert lr_at(cos, 0.2, 99, 10) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    warm = ScheduleConfig(name="cosine", epochs=10, warmup_epochs=2, warmup="linear", warmup_lr=0.0)
    assert lr_at(warm, 0.2, 0, 10) == 0 and lr_at(warm, 0.2, 10, 10) == pytest.approx(0.1)
    assert lr_at(warm, 0.2, 20, 10) == pytest.approx(0.2)
    step = ScheduleConfig(name="step", epochs=90, step_size=30, gamma=0.1)
    assert [lr_at(step, 1.0, e * 5, 5) for e in (29, 30, 60)] == pytest.approx([1.0, 0.1, 0.01])
    lin = ScheduleConfig(name="linear", epochs=4, final_lr=0.0)
    assert lr_at(lin, 1.0, 2, 1) == pytest.approx(0.5)


def test_a_run_folder_from_before_channels_last_was_a_bool_still_reads(tmp_path):
    """Earlier releases wrote ``run.channels_last: null`` for "on everywhere"; such folders resume,
    evaluate and export as before."""
    from senet.train import RunDir
    from senet.utils.text import read_yaml

    cfg = resolve("default", [])
    RunDir.create(tmp_path / "run", cfg).release()
    path = tmp_path / "run" / "config.yaml"
    values = read_yaml(path, dict, what="a run's configuration")
    values["run"]["channels_last"] = None
    path.write_text(yaml.safe_dump(values))
    assert RunDir(tmp_path / "run").config() == cfg

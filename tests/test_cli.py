"""The ``senet`` command's vocabulary: the help without torch, one meaning per option across
commands (parametrized over the commands that take it), and the old spellings that still work
for one release with a note on stderr."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from senet.cli.main import COMMANDS

_HELP_SCRIPT = """
import contextlib, io, sys
import senet, senet.analysis
from senet.cli.main import COMMANDS, main
out = io.StringIO()
for argv in [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)]:
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(argv)
print(len(out.getvalue()), sorted(m for m in ("torch", "numpy", "PIL") if m in sys.modules))
"""


def test_help_and_version_import_no_torch():
    """``senet --help``, ``senet COMMAND --help`` and ``--version`` build the parser of every
    command without importing torch (nor numpy, PIL): the library is imported when a command runs."""
    proc = subprocess.run([sys.executable, "-c", _HELP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chars, imported = proc.stdout.split(" ", 1)
    assert int(chars) > 500 * len(COMMANDS)  # every help was printed
    assert imported.strip() == "[]"


# --- one meaning per option --------------------------------------------------------------------

#: what each command needs besides the option under test
NEEDS = {"train": [], "eval": ["--run", "r"], "predict": ["x.jpg"], "export": [], "recipes": [], "models": [],
         "complexity": [], "convert": ["a.pth", "b.safetensors"], "analyze": ["--run", "r"],
         "ablate": ["--study", "gate"], "prune": ["--run", "r", "--flops", "0.5"]}
MODEL_COMMANDS = ["eval", "predict", "export", "complexity", "convert", "analyze", "prune"]
CONFIG_COMMANDS = ["train", "ablate", "prune"]  # the commands with a training configuration: --set
FOLDER_COMMANDS = ["train", "ablate", "analyze", "prune"]  # --out DIR
PROGRESS_COMMANDS = ["train", "ablate", "analyze", "predict", "prune"]
DATA_COMMANDS = ["train", "ablate", "eval", "analyze", "prune", "export"]  # export: --int8 calibration
DEVICE_COMMANDS = ["train", "ablate", "eval", "analyze", "predict", "prune"]


def _parse(command: str, *argv: str):
    from senet.cli.main import build_parser

    return build_parser().parse_args([command, *NEEDS[command], *argv])


def _options(command: str) -> dict[str, object]:
    """The options ``senet COMMAND --help`` shows, by name."""
    from senet.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {s: a for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_the_commands_tables_name_every_command():
    assert sorted(NEEDS) == sorted(COMMANDS)


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_model_and_its_keywords_mean_the_same_everywhere(command, capsys):
    """``--model NAME --model-kw KEY=VALUE``: the value read as a ``--set`` value (YAML) is."""
    from senet.cli.options import model_kwargs
    from senet.train.config import parse_override

    values = {"reduction": "8", "stride_in_1x1": "false", "se_stages": "[3, 4]", "squeeze": "max", "drop_rate": "0.5"}
    args = _parse(command, "--model", "se_resnet18", *(a for k, v in values.items() for a in ("--model-kw", f"{k}={v}")))
    assert args.model == "se_resnet18"
    assert model_kwargs(args) == {k: parse_override(f"model.kwargs.{k}={v}")["model"]["kwargs"][k]
                                  for k, v in values.items()}
    assert capsys.readouterr().err == ""  # no note: nothing deprecated was used


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - set(MODEL_COMMANDS)))
def test_commands_without_a_model_option(command):
    assert "--model-kw" not in _options(command)


@pytest.mark.parametrize("bad, message", [("reduction", "takes KEY=VALUE"), ("a.b=1", "takes KEY=VALUE"),
                                          ("reduction=[1", "the value is not valid YAML"),
                                          (f"x={'[' * 100000}", "nested too deeply")])
def test_bad_model_keywords_are_option_errors(bad, message, capsys):
    with pytest.raises(SystemExit) as info:
        _parse("complexity", "--model-kw", bad)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model-kw: " in err and message in err


def test_model_keywords_reach_the_model(capsys):
    import senet
    from senet.cli.main import main
    from senet.cli.model_source import load_model

    args = _parse("export", "--model", "cifar_se_resnet20", "--model-kw", "num_classes=3", "--model-kw", "reduction=4")
    model = load_model(args, need_weights=False).model
    assert model.num_classes == 3 and model.senet_spec.kwargs["reduction"] == 4
    assert main(["complexity", "--model", "cifar_se_resnet20", "--model-kw", "reduction=4"]) == 0
    expected = senet.complexity(senet.create_model("cifar_se_resnet20", reduction=4), (3, 32, 32))
    assert f"{expected.params:,} params" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_set_is_a_config_override_only_where_there_is_a_config(command):
    """``--set`` overrides the training configuration in ``train``/``ablate``; no other command
    shows it (``complexity``/``convert`` keep it, hidden, as the old name of ``--model-kw``)."""
    if command in CONFIG_COMMANDS:
        assert _parse(command, "--set", "optim.lr=0.05", "--set", "data.crop=16").overrides == \
            ["optim.lr=0.05", "data.crop=16"]
    else:
        assert "--set" not in _options(command)


@pytest.mark.parametrize("command", COMMANDS)
def test_out_is_always_a_folder(command):
    options = _options(command)
    if command in FOLDER_COMMANDS:
        assert options["--out"].metavar == "DIR" and _parse(command, "--out", "somewhere").out == "somewhere"
    else:
        assert "--out" not in options
    assert ("--output" in options) == (command in ("export", "prune"))  # the commands that write one named file


@pytest.mark.parametrize("command", PROGRESS_COMMANDS)
def test_no_progress_means_the_same_everywhere(command, monkeypatch):
    from senet.cli.options import show_progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(_parse(command)) is True
    assert show_progress(_parse(command, "--no-progress")) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress(_parse(command)) is False


@pytest.mark.parametrize("command", COMMANDS)
def test_data_device_and_input_size_where_they_are(command):
    options = _options(command)
    assert ("--data" in options) == (command in DATA_COMMANDS)
    assert ("--device" in options) == (command in DEVICE_COMMANDS)
    if command in DATA_COMMANDS:
        assert _parse(command, "--data", "d.tar.gz").data == "d.tar.gz"
    if command in DEVICE_COMMANDS:
        assert _parse(command, "--device", "cpu").device == "cpu"
    if "--input-size" in options:
        assert options["--input-size"].metavar == "SIDE" and _parse(command, "--input-size", "40").input_size == 40


# --- old spellings: one more release, with a note ---------------------------------------------


def _note(err: str, old: str, new: str) -> None:
    notes = [line for line in err.splitlines() if "deprecated" in line]
    assert len(notes) == 1 and old in notes[0] and new in notes[0], err


def test_complexity_model_as_positional_and_set(capsys):
    from senet.cli.main import main

    assert main(["complexity", "--model", "resnet50", "--model-kw", "stride_in_1x1=false"]) == 0
    new = capsys.readouterr()
    assert new.err == ""
    assert main(["complexity", "resnet50", "--set", "stride_in_1x1=false"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out
    notes = [line for line in old.err.splitlines() if "deprecated" in line]
    assert len(notes) == 2 and "--model NAME" in notes[0] and "--set" in notes[1] and "--model-kw" in notes[1]


@pytest.mark.parametrize("command", ["complexity", "convert"])
def test_set_as_model_keywords_is_noted_once(command, capsys):
    from senet.cli.options import model_kwargs

    args = _parse(command, "--set", "reduction=8", "--set", "se_stages=[3]", "--model-kw", "squeeze=max")
    new = _parse(command, "--model-kw", "reduction=8", "--model-kw", "se_stages=[3]", "--model-kw", "squeeze=max")
    assert model_kwargs(args) == model_kwargs(new)
    _note(capsys.readouterr().err, "--set", "--model-kw KEY=VALUE")


def test_export_out_file(tmp_path, capsys):
    from senet.cli.main import main

    assert main(["export", "--model", "cifar_resnet20", "--format", "torchscript",
                 "--out", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").is_file()
    _note(capsys.readouterr().err, "--out", "--output FILE")
    assert _parse("export", "-o", "a.onnx").output == _parse("export", "--output", "a.onnx").output == "a.onnx"


# --- one rule for a model whose classes are not the data's ------------------------------------


def _on_tree(command: str, weights, tree) -> list[str]:
    """``eval`` or ``analyze`` of a weight file on an ImageFolder tree, small and on the CPU."""
    argv = [command, "--weights", str(weights), "--dataset", "imagefolder", "--data", str(tree), "--device", "cpu"]
    return argv + (["--per-class", "2", "--no-progress"] if command == "analyze" else [])


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_class_mismatch_is_an_error_unless_allowed(command, tiny_tree, tmp_path, monkeypatch, capsys):
    import senet
    from senet.cli.main import main

    monkeypatch.chdir(tmp_path)
    weights = senet.save_weights(senet.create_model("cifar_se_resnet20", num_classes=4), tmp_path / "w.safetensors",
                                 classes=["cat", "dog", "fox", "owl"])  # the tree's are class0..class3
    argv = _on_tree(command, weights, tiny_tree)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the model's classes (cat, dog, fox, owl, ...) are not those of" in err
    assert "--allow-class-mismatch" in err
    assert main([*argv, "--allow-class-mismatch"]) == 0
    assert "warning: the model's classes (cat, dog, fox, owl, ...) are not those of" in capsys.readouterr().err
    other = senet.save_weights(senet.create_model("cifar_se_resnet20", num_classes=3), tmp_path / "w3.safetensors")
    assert main([command, "--weights", str(other), *argv[3:]]) == 2
    assert "the model has 3 outputs but" in capsys.readouterr().err


# --- one --skip-corrupt -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_skip_corrupt_in_eval_and_analyze_as_in_train(command, tiny_tree, tmp_path, monkeypatch, capsys):
    """The error on an unreadable image suggests ``--skip-corrupt``; eval and analyze take it, as
    train does, and name what they left out."""
    import senet
    from senet.cli.main import main

    assert {"train", "predict", command} <= {c for c in COMMANDS if "--skip-corrupt" in _options(c)}
    monkeypatch.chdir(tmp_path)
    broken = tiny_tree / "test" / "class2" / "0003.png"
    broken.write_bytes(b"not an image")
    weights = senet.save_weights(senet.create_model("cifar_se_resnet20", num_classes=4), tmp_path / "w.safetensors")
    argv = _on_tree(command, weights, tiny_tree)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--skip-corrupt" in err
    assert main([*argv, "--skip-corrupt"]) == 0
    err = capsys.readouterr().err
    assert "left out 1 unreadable image(s)" in err and str(broken) in err

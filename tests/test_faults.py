"""Operating-system faults and bad options are one-line errors naming the path (or option) and
the cause, with exit code 2, and leave nothing half-written: a full disk in the middle of a
run, a read-only folder, a path below a regular file, a folder where a file should go."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from senet.cli.main import main
from senet.models import create_model
from senet.train import Trainer
from senet.models import save_weights
from tests.conftest import randomise
from tests.fault_helpers import fill, read_only, small_disk

SMALL = ["--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
         "--set", "data.batch_size=16", "--no-progress"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _temporary(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.tmp")]


def test_disk_full_while_writing_a_checkpoint(tiny_tree, tmp_path, monkeypatch, capsys):
    """The disk fills up during epoch 2; its checkpoint cannot be written: a one-line ENOSPC
    error naming the file, no temporary file left, metrics.csv not ahead of the checkpoint,
    and once there is room again the run resumes from epoch 1's checkpoint."""
    with small_disk(tmp_path / "disk", "32m") as disk:
        run = disk / "run"
        filled = []

        def fill_the_disk(self):
            if self.global_step == 5 and not filled:
                filled.append(fill(disk, leave=64 << 10))  # room for small files, not a checkpoint

        monkeypatch.setattr(Trainer, "_after_step", fill_the_disk)
        assert main(["train", "--data", str(tiny_tree), "--out", str(run), "--epochs", "3", *SMALL]) == 2
        err = _error(capsys)
        assert f"cannot write {run / 'checkpoint.pt'}: No space left on device (ENOSPC)" in err
        assert not _temporary(run)
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        assert [r["epoch"] for r in rows] == ["1"]  # what the checkpoint holds, not epoch 2
        assert not (run / "model.safetensors").exists() and not (run / "summary.json").exists()

        monkeypatch.undo()
        filled[0].unlink()
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
        assert "resuming" in capsys.readouterr().out
        assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2", "3"]


def test_a_full_disk_when_a_run_starts_leaves_no_folder(tiny_tree, tmp_path, capsys):
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk)
        run = disk / "run"
        assert main(["train", "--data", str(tiny_tree), "--out", str(run), *SMALL]) == 2
        err = _error(capsys)
        assert str(run) in err and "No space left on device (ENOSPC)" in err
        assert not run.exists()


def test_out_in_a_read_only_folder(tiny_tree, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    with read_only(tmp_path / "src", tmp_path / "ro") as ro:
        assert main(["train", "--data", str(tiny_tree), "--out", str(ro / "run"), *SMALL]) == 2
        assert _error(capsys).endswith(f"cannot create the run directory {ro / 'run'}: Read-only file system "
                                       "(EROFS); choose a writable location")
    assert list((tmp_path / "src").iterdir()) == []


def test_resume_and_analyze_on_a_read_only_run(tiny_tree, tmp_path, capsys):
    run = tmp_path / "src" / "run"
    assert main(["train", "--data", str(tiny_tree), "--out", str(run), "--set", "run.max_steps=1", *SMALL]) == 0
    (run / "summary.json").unlink()  # as if stopped before its end (a finished run has nothing to resume)
    capsys.readouterr()
    with read_only(tmp_path / "src", tmp_path / "ro") as ro:
        assert main(["train", "--resume", str(ro / "run"), "--no-progress"]) == 2
        assert f"cannot lock {ro / 'run' / '.senet.lock'}: Read-only file system (EROFS)" in _error(capsys)
        assert main(["eval", "--run", str(ro / "run")]) == 0  # reading needs no lock
        capsys.readouterr()
        assert main(["analyze", "--run", str(ro / "run"), "--per-class", "1", "--no-progress"]) == 2
        assert "Read-only file system (EROFS)" in _error(capsys)


def test_out_below_a_regular_file(tiny_tree, tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["train", "--data", str(tiny_tree), "--out", str(tmp_path / "file" / "run"), *SMALL]) == 2
    assert _error(capsys).endswith(f"cannot create the run directory {tmp_path / 'file' / 'run'}: Not a directory "
                                   "(ENOTDIR)")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_convert_onto_a_folder_named_like_the_destination(tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    save_weights(randomise(create_model("cifar_resnet20", num_classes=4)), src)
    (tmp_path / "dst.safetensors").mkdir()
    assert main(["convert", str(src), str(tmp_path / "dst.safetensors")]) == 2
    assert f"{tmp_path / 'dst.safetensors'} is a folder" in _error(capsys)
    assert list((tmp_path / "dst.safetensors").iterdir()) == []


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    from senet.cli import models_cmd

    def broken(args):
        raise RuntimeError("something deep inside\nsecond line")

    monkeypatch.setattr(models_cmd, "run", broken)
    monkeypatch.delenv("SENET_DEBUG", raising=False)
    assert main(["models"]) == 1
    assert _error(capsys) == ("senet models: unexpected error: RuntimeError: something deep inside (this is a bug "
                              "in senet; set SENET_DEBUG=1 for the full traceback)")
    monkeypatch.setenv("SENET_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something deep inside"):
        main(["models"])


def test_an_os_error_nobody_named_still_names_its_file(monkeypatch, capsys):
    from senet.cli import models_cmd

    def denied(args):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(models_cmd, "run", denied)
    assert main(["models"]) == 2
    assert _error(capsys) == ("senet models: error: cannot use /some/file: Permission denied (EACCES); check the "
                              "permissions or choose another location")


@pytest.mark.parametrize("argv, option, message", [
    (["eval", "--weights", "w.safetensors", "--batch-size", "0"], "--batch-size", "must be an integer >= 1, got '0'"),
    (["complexity", "--model", "cifar_resnet20", "--input-size", "0"], "--input-size",
     "must be an integer >= 1, got '0'"),
    (["train", "--epochs", "0"], "--epochs", "must be an integer >= 1, got '0'"),
    (["train", "--seed", "-1"], "--seed", "must be an integer >= 0, got '-1'"),
    (["train", "--seed", "x"], "--seed", "must be an integer, got 'x'"),
    (["analyze", "--run", "r", "--per-class", "0"], "--per-class", "must be an integer >= 1"),
    (["analyze", "--run", "r", "--channels", "-3"], "--channels", "must be an integer >= 1"),
    (["ablate", "--study", "gate", "--seeds", "0"], "--seeds", "must be an integer >= 1"),
    (["convert", "a", "b", "--std", "0", "1", "1"], "--std", "must be a number > 0, got '0'"),
    (["convert", "a", "b", "--mean", "nan"], "--mean", "must be a finite number, got 'nan'"),
])
def test_numeric_options_are_range_checked(argv, option, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


def test_complexity_at_an_input_too_small_for_the_model(capsys):
    assert main(["complexity", "--model", "resnet50", "--input-size", "1"]) == 2
    err = _error(capsys)
    assert "resnet50 cannot run at 1x1" in err and "try a larger --input-size" in err


def test_a_data_cache_that_cannot_be_written(tiny_tree, tmp_path, monkeypatch, capsys):
    (tmp_path / "src").mkdir()
    with read_only(tmp_path / "src", tmp_path / "ro") as ro:
        monkeypatch.setenv("SENET_CACHE", str(ro / "cache"))
        assert main(["train", "--data", str(tiny_tree), "--out", str(tmp_path / "run"), *SMALL]) == 2
        err = _error(capsys)
        assert f"cannot create the data cache folder {ro / 'cache' / 'tensors'}: Read-only file system" in err
        assert "set SENET_CACHE to a folder with room that you can write" in err
    assert not (tmp_path / "run").exists()
    assert os.listdir(tmp_path / "src") == []

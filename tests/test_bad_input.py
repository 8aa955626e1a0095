"""Bad or odd input on export, predict, eval, run and study folders and archives: one-line errors
naming the option or file, exit code 2, bounded memory, nothing half-written, file names that are
not UTF-8 working, CSV cells that cannot run formulas."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import senet
from senet.analysis.ablate import plan_study
from senet.analysis.ablate_run import run_study
from senet.cli.main import main
from senet.data import load_split
from senet.errors import SenetError
from senet.export import export_model, onnx_opsets
from senet.train import RunDir
from senet.utils.limits import check_input_size
from senet.utils.text import csv_cell, csv_text
from tests.conftest import make_tree
from tests.fault_helpers import fill, read_only, small_disk

NOT_UTF8 = b"caf\xe9.png"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def weights(tmp_path) -> Path:
    model = senet.create_model("cifar_resnet20", num_classes=4)
    return senet.save_weights(model, tmp_path / "w.safetensors", classes=["=1+1", "+cmd", "-2", "@SUM(A1)"])


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(path)
    return path


def _limited(tmp_path: Path, argvs: list[list[str]]) -> list[tuple[int, str]]:
    """``senet`` commands in one subprocess whose address space may grow by at most 1.5 GiB
    beyond what its imports took: (exit code, last line of stderr) of each."""
    script = tmp_path / "limited.py"
    script.write_text(
        "import io, json, resource, sys, contextlib\n"
        "import torch, senet.cli.main as m\n"
        "vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 29), resource.RLIM_INFINITY))\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            rc = m.main(argv)\n"
        "        except SystemExit as e:  # argparse\n"
        "            rc = e.code\n"
        "    out.append([rc, err.getvalue().strip().splitlines()[-1:]])\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, str(script), json.dumps(argvs)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [(rc, lines[0] if lines else "") for rc, lines in json.loads(proc.stdout.strip().splitlines()[-1])]


# ------------------------------------------------------------------ 1. options export cannot honour
def test_export_refuses_options_it_cannot_honour(weights, tmp_path, capsys):
    ok = onnx_opsets()
    for opset in (9, ok.start - 1, ok.stop, 99):
        assert main(["export", "--weights", str(weights), "--opset", str(opset),
                     "--output", str(tmp_path / "m.onnx")]) == 2
        assert f"--opset {opset} cannot be written" in _error(capsys)
    for option in (["--opset", str(ok.start)], ["--no-optimize"]):
        assert main(["export", "--weights", str(weights), "--format", "torchscript", *option,
                     "--output", str(tmp_path / "m.pt")]) == 2
        err = _error(capsys)
        assert err.endswith(f"error: {option[0]} ({option[0].strip('-').replace('no-', '')}) applies to ONNX files "
                            "only, not to torchscript")
    with pytest.raises(ValueError, match="tolerance must be a finite number > 0"):
        export_model(senet.create_model("cifar_resnet20"), tmp_path / "m.onnx", tolerance=float("nan"))
    assert list(tmp_path.iterdir()) == [weights]


def test_export_checks_the_written_opset(weights, tmp_path, monkeypatch, capsys):
    """The exporter writes another opset than asked for without failing (below its operator
    library's, or when its version converter gives up): senet compares and refuses."""
    import senet.export as export

    monkeypatch.setattr(export, "_written_opset", lambda program: 18)
    assert main(["export", "--weights", str(weights), "--opset", "19", "--no-optimize",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert "--opset 19: the exporter wrote opset 18 instead; nothing was written" in _error(capsys)
    assert list(tmp_path.iterdir()) == [weights]


# ------------------------------------------------------------------ 2. every writer on a bad disk
def test_torchscript_export_on_a_full_disk_is_a_named_error_not_an_abort(weights, tmp_path):
    with small_disk(tmp_path / "disk", "300k") as disk:  # the file is about 1.1 MB
        proc = subprocess.run([sys.executable, "-m", "senet", "export", "--weights", str(weights), "--format",
                               "torchscript", "--output", str(disk / "m.pt")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == (f"senet export: error: cannot write {disk / 'm.pt'}: No space "
                                                        "left on device (ENOSPC); free some space or write elsewhere")
        assert os.listdir(disk) == []  # no temporary file left


@pytest.mark.parametrize("fmt", ["torchscript", "predict-csv", "predict-json"])
def test_writers_into_read_only_and_missing_folders(fmt, weights, image, tmp_path, capsys):
    def command(out: Path) -> list[str]:
        if fmt == "torchscript":
            return ["export", "--weights", str(weights), "--format", "torchscript", "--output", str(out)]
        return ["predict", str(image), "--weights", str(weights), f"--{fmt.split('-')[1]}", str(out)]

    assert main(command(tmp_path / "missing" / "out")) == 2
    assert _error(capsys).endswith(f"cannot write {tmp_path / 'missing' / 'out'}: No such file or directory (ENOENT)")
    (tmp_path / "src").mkdir()
    with read_only(tmp_path / "src", tmp_path / "ro") as ro:
        assert main(command(ro / "out")) == 2
        assert _error(capsys).endswith(f"cannot write {ro / 'out'}: Read-only file system (EROFS); choose a "
                                       "writable location")
    assert os.listdir(tmp_path / "src") == []


def test_predict_outputs_on_a_full_disk(weights, image, tmp_path, capsys):
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk)
        for option in ("--csv", "--json"):
            assert main(["predict", str(image), "--weights", str(weights), option, str(disk / "out")]) == 2
            assert f"cannot write {disk / 'out'}: No space left on device (ENOSPC)" in _error(capsys)
        assert os.listdir(disk) == ["filler"]


# ------------------------------------------------------------------ 3. bad values are named, not bugs
def test_an_input_size_the_model_cannot_run_at(weights, tmp_path, capsys):
    assert main(["export", "--model", "se_resnet18", "--input-size", "1", "--output", str(tmp_path / "m.onnx")]) == 2
    err = _error(capsys)
    assert "se_resnet18 cannot run at 1x1 (--input-size 1)" in err and "the smallest side it runs at is" in err
    smallest = int(err.rsplit(" ", 1)[1])
    model = senet.create_model("se_resnet18").eval()
    check_input_size(model, (3, smallest, smallest), "--input-size")  # it does run there
    with torch.no_grad():
        model(torch.randn(2, 3, smallest, smallest))
    with torch.device("meta"):
        irv2 = senet.create_model("inception_resnet_v2")
    with pytest.raises(SenetError, match=r"--input-size 50 is below inception_resnet_v2's smallest input side, 75 "
                                         r"\(its pretrained_cfg min_input_size\)"):
        check_input_size(irv2, (3, 50, 50), "--input-size")
    assert list(tmp_path.iterdir()) == [weights]


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    cfg = senet.train.resolve(None, ["data.dataset=imagefolder"])
    RunDir.create(run, cfg).release()
    senet.save_weights(senet.create_model("cifar_se_resnet20", num_classes=4), run / "model.safetensors")
    return run


@pytest.mark.parametrize("text, message", [
    ("", "should hold a mapping (a run's configuration), got nothing"),
    ("[1, 2]\n", "should hold a mapping (a run's configuration), got a list"),
    ("recip", "should hold a mapping (a run's configuration), got a string"),
    ("recipe: default\nmodel:\n  name: cifar_se_resnet20\n  kwargs: {}\ndata:\n  dataset: image", "lacks the section"),
    ("recipe: default\nmodel: {name: [cifar", "is not valid YAML (a run's configuration): line 2, column"),
    (None, "data.batch_size: expected an integer, got 'many'"),
])
def test_a_damaged_config_yaml_is_named(text, message, tmp_path, capsys):
    run = _run_folder(tmp_path)
    config = run / "config.yaml"
    if text is None:  # whole, but with a bad value
        text = config.read_text().replace("batch_size: 128", "batch_size: many")
    config.write_text(text)
    assert main(["eval", "--run", str(run)]) == 2
    err = _error(capsys)
    assert str(config) in err and message in err


@pytest.mark.parametrize("text, message", [
    ("[0.1, 0.2]", "should hold a mapping (a run's summary), got a list"),
    ('{"test_top1_err": 0.25, "test_top5_err": "x', "is not valid JSON (a run's summary): Unterminated string "
                                                  "starting at: line 1, column 42"),
    ('{"test_top1_err": 0.25}', "test_top5_err should be an error rate in [0, 1], got None"),
    ('{"test_top1_err": 0.2, "test_top5_err": 0.1, "params": "many"}', "params should be a count, got 'many'"),
])
def test_a_damaged_study_file_is_named_before_anything_trains(text, message, tmp_path, monkeypatch):
    from senet.train import Trainer

    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("trained before checking every folder"))
    plan = plan_study("gate", "default", ["data.dataset=imagefolder"])
    out = tmp_path / "study"
    first = out / plan.runs[0].folder
    RunDir.create(first, plan.runs[0].config).release()
    (first / "summary.json").write_text(text)
    with pytest.raises(SenetError) as info:
        run_study(plan, out, log=lambda text: None)
    assert str(first / "summary.json") in str(info.value) and message in str(info.value)
    out.joinpath("study.json").write_text('["gate"]')
    with pytest.raises(SenetError, match=r"study.json should hold a mapping \(a study's plan\), got a list"):
        run_study(plan, out, log=lambda text: None)


def test_a_damaged_metrics_csv_is_named(tmp_path):
    run = _run_folder(tmp_path)
    (run / "metrics.csv").write_text("epoch,train_loss,test_top1_err\n1,0.5,0.3\n2,abc,0.2\n")
    with pytest.raises(SenetError, match=r"metrics.csv, line 3: a value that is not a number"):
        RunDir(run).metrics()


def test_a_recipe_with_a_syntax_error_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: [0.1\nschedule: {}\n")
    assert main(["train", "--recipe", str(recipe), "--print-config"]) == 2
    err = _error(capsys)
    assert str(recipe) in err and "is not valid YAML (a recipe): line 3, column 9: while parsing a flow sequence" in err


@pytest.mark.parametrize("key, low, high", [("data.workers", 0, "MAX_WORKERS"), ("run.threads", 0, "MAX_THREADS")])
def test_absurd_worker_and_thread_counts_are_named_config_errors(key, low, high, tmp_path, capsys):
    """A fork bomb or a thread pool exhausting memory is a one-line error naming the key and its range,
    from a recipe as from ``--set``; the ends of the range are accepted."""
    from senet.train import config

    high = getattr(config, high)
    for value in (low, high):
        assert main(["train", "--set", f"{key}={value}", "--print-config"]) == 0
    capsys.readouterr()
    recipe = tmp_path / "r.yaml"
    section, name = key.split(".")
    recipe.write_text(f"{section}:\n  {name}: {high * 1000}\n")
    for argv in (["--set", f"{key}={low - 1}"], ["--set", f"{key}={high + 1}"], ["--recipe", str(recipe)]):
        assert main(["train", *argv, "--print-config"]) == 2
        err = _error(capsys)
        assert f"{key} must be within {low}..{high}, got " in err


# ------------------------------------------------------------------ 5. bounded memory
def test_absurd_work_sizes_and_archive_bombs_are_refused_before_allocating(weights, image, tmp_path):
    tree = make_tree(tmp_path / "tree", classes=4, train=1, test=1, size=8)
    plain = senet.save_weights(senet.create_model("cifar_resnet20", num_classes=4), tmp_path / "e.safetensors")
    bomb = tmp_path / "bomb.tar.gz"  # 1.4 MB holding a 300 MiB entry
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        for split in ("train", "test"):
            info = tarfile.TarInfo(f"{split}/a/0.png")
            info.size = 8
            tar.addfile(info, io.BytesIO(b"\0" * 8))
        info = tarfile.TarInfo("train/a/big.png")
        info.size = 300 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    cases = _limited(tmp_path, [
        ["predict", str(image), "--weights", str(weights), "--crop-pct", "1e-6"],
        ["eval", "--weights", str(plain), "--dataset", "imagefolder", "--data", str(tree), "--crop-pct", "1e-6"],
        ["eval", "--weights", str(plain), "--dataset", "imagefolder", "--data", str(tree), "--input-size", "40000",
         "--crop-pct", "1"],
        ["predict", *[str(image)] * 100, "--weights", str(weights), "--input-size", "2000", "--crop-pct", "1",
         "--batch-size", "1000"],
        ["train", "--data", str(bomb), "--set", "data.dataset=imagefolder", "--out", str(tmp_path / "run")],
        ["train", "--data", str(tree), "--set", "data.dataset=imagefolder", "--set", "data.crop=20000",
         "--set", "data.resize=20000", "--set", "data.batch_size=2000", "--out", str(tmp_path / "run")],
    ])
    assert [rc for rc, _ in cases] == [2] * len(cases), cases
    messages = [err for _, err in cases]
    assert "--input-size 32 with --crop-pct 1e-06 (each image's short side resized to 32,000,000 pixels) would " \
           "need a 32,000,000x32,000,000x3 tensor" in messages[0]
    assert "--crop-pct 1e-06" in messages[1] and "--input-size 40000 with --crop-pct 1 " in messages[2]
    assert "--batch-size 1000 at --input-size 2000 would need a 100x3x2,000x2,000 tensor (4.47 GiB)" in messages[3]
    assert f"archive {bomb} expands to more than 268,435,456 bytes at entry 'train/a/big.png'" in messages[4]
    assert "data.batch_size 2000 at data.crop 20000 (data.pad 4) would need a 2,000x3x20,008x20,008" in messages[5]
    assert all("$SENET_MAX_WORK_BYTES" in m for m in messages[:4] + messages[5:]) and not (tmp_path / "run").exists()


def test_the_archive_limit_can_be_raised(tmp_path, monkeypatch):
    from senet.data.archive import read_archive

    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("train/a/0.png")
        info.size = 4096
        tar.addfile(info, io.BytesIO(bytes(4096)))
    monkeypatch.setenv("SENET_MAX_ARCHIVE_BYTES", "4000")
    with pytest.raises(SenetError, match=r"expands to more than 4,000 bytes at entry 'train/a/0.png' \(4,096 bytes\)"):
        read_archive(path)
    monkeypatch.setenv("SENET_MAX_ARCHIVE_BYTES", "8000")
    assert len(read_archive(path)[0]["train/a/0.png"]) == 4096


# ------------------------------------------------------------------ 6. file names that are not UTF-8
def test_file_names_that_are_not_utf8(weights, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree", classes=4, train=2, test=2, size=8)
    for split in ("train", "test"):
        folder = os.fsencode(tree / split / "class1")
        os.rename(os.path.join(folder, b"0000.png"), os.path.join(folder, NOT_UTF8))
    (tree / "test" / "class0" / "0000.png").write_bytes(b"not an image")
    bad = os.path.join(os.fsencode(tree / "test" / "class0"), b"bad\xff.png")
    with open(bad, "wb") as f:
        f.write(b"not an image either")
    ds = load_split("imagefolder", "train", data=str(tree))  # the data cache's fingerprint hashes the name
    assert len(ds) == 8
    skipped = load_split("imagefolder", "test", data=str(tree), skip_corrupt=True).skipped
    assert sorted(os.fsencode(s).rsplit(b"/", 1)[1] for s in skipped) == [b"0000.png", b"bad\xff.png"]

    out = tmp_path / "p.csv"
    assert main(["predict", str(tree / "test"), "--weights", str(weights), "--topk", "1", "--skip-corrupt",
                 "--csv", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"{tree / 'test' / 'class1'}/caf\\xe9.png: " in captured.out  # as `ls -b` shows it
    assert f"skipped {tree / 'test' / 'class0'}/bad\\xff.png: " in captured.err and "2 file(s) skipped" in captured.err
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"))))  # valid UTF-8 throughout
    assert len(rows) == 7 and f"{tree / 'test' / 'class1'}/caf\\xe9.png" in {r["path"] for r in rows}


# ------------------------------------------------------------------ 7. CSV cells that would be formulas
def test_csv_cells_that_would_be_formulas_are_neutralised(weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save("=HYPERLINK(x).png")
    assert main(["predict", "=HYPERLINK(x).png", "--weights", str(weights), "--csv", "p.csv"]) == 0
    rows = list(csv.DictReader(open("p.csv", newline="")))
    assert sorted(r["class"] for r in rows) == ["'+cmd", "'=1+1", "'@SUM(A1)", "-2"]  # -2 is a number
    assert {r["path"] for r in rows} == {"'=HYPERLINK(x).png"} and all(r["probability"][0].isdigit() for r in rows)
    assert [csv_cell(v) for v in ["\tx", "\rx", "-x", "-0.5", "1e-3", -3, "a=b"]] == \
        ["'\tx", "'\rx", "'-x", "-0.5", "1e-3", -3, "a=b"]
    assert csv_text(["=h"], [["@x", 1.5]]) == "'=h\n'@x,1.5\n"

"""One process owns a run directory: a second `senet train --resume` (or an ablation cell
already being trained) is refused naming the owner's pid, only the owner removes temporary
files, and a run that fails before its first checkpoint leaves nothing that blocks its retry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from senet.cli.main import main
from senet.errors import SenetError
from senet.train import RunDir, Trainer, resolve
from senet.utils.lock import FolderBusy, FolderLock
from tests.conftest import make_tree

SMALL = ["--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
         "--set", "data.batch_size=16", "--no-progress"]

# `senet train ...` that stops after optimizer step 3, says so (file READY) and waits for GO
PAUSED = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from senet.train import trainer

    def after_step(self):
        if self.global_step == 3:
            Path(os.environ["READY"]).touch()
            while not Path(os.environ["GO"]).exists():
                time.sleep(0.05)

    trainer.Trainer._after_step = after_step
    from senet.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def _interrupted_run(tree: Path, run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped by Ctrl-C after step 2 (its checkpoint after step 2 kept)."""
    def stop(self):
        if self.global_step == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_after_step", stop)
        assert main(["train", "--data", str(tree), "--out", str(run), "--epochs", "2",
                     "--set", "run.checkpoint_every=1", *SMALL]) == 130
    assert (run / "checkpoint.pt").is_file()


def test_a_second_resume_of_a_run_being_trained_is_refused(tiny_tree, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _interrupted_run(tiny_tree, run, monkeypatch)
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "READY": str(ready), "GO": str(go), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    first = subprocess.Popen([sys.executable, "-c", PAUSED, "train", "--resume", str(run), "--no-progress"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first resume never reached step 3"
            time.sleep(0.05)
        # the first process is writing a checkpoint: its temporary file must survive the second
        writing = run / f".checkpoint.pt.{first.pid}.tmp"
        writing.write_bytes(b"PK\x03\x04 being written")
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"senet train: error: run directory {run} is in use by another senet process "
                       f"(pid {first.pid}); wait for it to end or stop it")
        assert writing.exists()
        assert RunDir.open(run).config().schedule.epochs == 2  # reading needs no ownership, and cleans nothing
        assert writing.exists()
    finally:
        go.touch()
        out, errs = first.communicate(timeout=300)
    assert first.returncode == 0, errs
    assert (run / "summary.json").is_file()


def test_the_owner_removes_what_a_killed_owner_left(tiny_tree, tmp_path):
    cfg = resolve(None, [{"data": {"dataset": "imagefolder", "path": str(tiny_tree)}}])
    run = RunDir.create(tmp_path / "run", cfg)
    run.release()
    stale = tmp_path / "run" / ".checkpoint.pt.999999.tmp"
    stale.write_bytes(b"half")
    RunDir.open(tmp_path / "run")
    assert stale.exists()
    with RunDir.open(tmp_path / "run").acquire():
        assert not stale.exists()


def test_a_failed_start_leaves_nothing_and_the_corrected_command_works(tmp_path, capsys):
    good = make_tree(tmp_path / "good")
    bad = make_tree(tmp_path / "bad")
    (bad / "test" / "class3").rename(bad / "test" / "other")  # train and test classes differ
    run = tmp_path / "run"
    assert main(["train", "--data", str(bad), "--out", str(run), "--set", "run.max_steps=1", *SMALL]) == 2
    captured = capsys.readouterr()
    assert "class folders differ" in captured.err and f"removed {run}" in captured.out
    assert not run.exists()
    assert main(["train", "--data", str(good), "--out", str(run), "--set", "run.max_steps=1", *SMALL]) == 0
    assert (run / "model.safetensors").is_file()


def test_a_failed_start_in_an_existing_empty_folder_keeps_the_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(run), *SMALL]) == 2
    assert run.is_dir() and list(run.iterdir()) == []


def test_an_ablation_cell_being_trained_elsewhere_is_refused(tiny_tree, tmp_path):
    from senet.cli import ablate_cmd
    import argparse

    out = tmp_path / "study"
    cell = out / "sigmoid" / "seed0"
    cell.mkdir(parents=True)
    owner = FolderLock(cell).acquire()  # as another `senet ablate` training this cell would
    parser = argparse.ArgumentParser()
    ablate_cmd.add_arguments(parser)
    args = parser.parse_args(["--study", "gate", "--cells", "sigmoid", "--data", str(tiny_tree), "--out", str(out),
                              *SMALL, "--set", "run.max_steps=1", "--epochs", "1"])
    try:
        with pytest.raises(FolderBusy, match=rf"run directory {cell} is in use by another senet process "
                                             rf"\(pid {os.getpid()}\)"):
            ablate_cmd.run(args)
        assert cell.is_dir() and [p.name for p in cell.iterdir()] == [".senet.lock"]
    finally:
        owner.release()
    assert ablate_cmd.run(args) == 0
    assert (cell / "summary.json").is_file()


def test_create_refuses_a_folder_holding_a_run(tiny_tree, tmp_path):
    cfg = resolve(None, [{"data": {"dataset": "imagefolder", "path": str(tiny_tree)}}])
    with RunDir.create(tmp_path / "run", cfg):
        with pytest.raises(SenetError, match="already holds files; continue it with --resume"):
            RunDir.create(tmp_path / "run", cfg)


def test_what_a_run_folder_holds_is_one_answer(tmp_path):
    """RunDir.state(), which `train --resume`, `ablate` and the GPU kit act on: nothing (or a
    dead owner's lock file) is fresh, files without config.yaml are no run, a run is partial
    until its summary.json is written."""
    from senet.train.rundir import FINISHED, FOREIGN, FRESH, PARTIAL

    cfg = resolve(None, [{"data": {"dataset": "imagefolder"}}])
    assert RunDir(tmp_path / "missing").state() == FRESH
    (tmp_path / "locked").mkdir()
    lock = FolderLock(tmp_path / "locked")
    lock.acquire().release()
    assert lock.path.is_file() and RunDir(tmp_path / "locked").state() == FRESH
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert RunDir(tmp_path / "other").state() == FOREIGN
    with pytest.raises(SenetError, match="is not a senet run directory"):
        RunDir.open(tmp_path / "other")
    run = RunDir.create(tmp_path / "run", cfg)
    run.release()
    assert run.state() == PARTIAL and run.metrics() == []  # no epoch has ended
    run.write_summary({"test_top1_err": 0.25, "test_top5_err": 0.05})
    assert RunDir.open(tmp_path / "run").state() == FINISHED

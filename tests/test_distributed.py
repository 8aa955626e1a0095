"""Distributed training with torchrun on the CPU (gloo, 2 processes): the same weights as one
process with the same global batch, rank-0-only output, a dead worker ends the group, a
restarted group resumes, and a run resumes on a different number of processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from senet.train import RunDir, Trainer, resolve

SMALL = ["--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
         "--set", "data.batch_size=16", "--set", "run.threads=1", "--no-progress"]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(*args: str, nproc: int = 2, restarts: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--max-restarts={restarts}", "--monitor-interval=0.2", "-m", "senet", "train", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (they run in sessions of their own)."""
    for pid in _children(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.kill()


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not exit within {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"torchrun ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            _kill_all(proc)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path).items() if not k.endswith(BUFFERS)}


def _single(tree: Path, out: Path, *sets: str, epochs: int) -> dict[str, torch.Tensor]:
    """The reference: one process, the global batch of 16 in two micro-batches of 8."""
    overrides = [s for s in SMALL if "=" in s] + [s for s in sets] + ["run.accum_steps=2", f"data.path={tree}"]
    cfg = resolve(None, overrides, epochs=epochs)
    Trainer(cfg, RunDir.create(out, cfg), progress=False, log=lambda s: None).fit()
    return _params(out / "model.safetensors")


STREAM = ["data.loader=stream", "data.resize=20", "data.workers=1"]


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_two_processes_train_like_one_with_the_same_global_batch(tiny_tree, tmp_path, loader):
    """2 ranks x 8 images = 1 process with 2 accumulated micro-batches of 8: every parameter is
    equal (measured: bitwise), for CIFAR-style in-memory data and for DataLoader-streamed data.
    BN running statistics differ by design: DDP keeps rank 0's."""
    sets = STREAM if loader == "stream" else []
    flags = [arg for s in sets for arg in ("--set", s)]
    rc, out = _finish(_torchrun("--data", str(tiny_tree), *SMALL, *flags, "--epochs", "2",
                                "--out", str(tmp_path / "ddp")), 240)
    assert rc == 0, out
    assert out.count("test error:") == 1 and "2 processes" in out  # rank 0 alone prints
    assert "Grad strides do not match bucket view strides" not in out  # channels_last and DDP's buckets agree
    ddp = _params(tmp_path / "ddp" / "model.safetensors")
    ref = _single(tiny_tree, tmp_path / "one", *sets, epochs=2)
    assert ddp.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(ddp[key], ref[key], rtol=0, atol=1e-5, msg=key)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # one writer: no duplicated rows
    single_rows = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    train_loss = [r.split(",")[1] for r in rows[1:]]
    assert train_loss == [r.split(",")[1] for r in single_rows[1:]]  # summed over the group


@pytest.mark.slow
def test_a_dead_worker_ends_the_group_and_a_restart_resumes(tiny_tree, tmp_path):
    long = [*SMALL, "--epochs", "60", "--set", "run.checkpoint_every=1"]
    # without restarts: kill one worker, the whole group exits non-zero within the timeout
    proc = _torchrun("--data", str(tiny_tree), *long, "--out", str(tmp_path / "dies"))
    _wait_for(lambda: (tmp_path / "dies" / "checkpoint.pt").exists(), 180, "the first checkpoint", proc)
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    t = time.monotonic()
    rc, out = _finish(proc, 60)
    assert rc != 0 and time.monotonic() - t < 60
    assert not (tmp_path / "dies" / "summary.json").exists()

    # with --max-restarts 1: the restarted group resumes from the last checkpoint and finishes
    short = [*SMALL, "--epochs", "15", "--set", "run.checkpoint_every=1"]
    proc = _torchrun("--data", str(tiny_tree), *short, "--out", str(tmp_path / "lives"), restarts=1)
    _wait_for(lambda: (tmp_path / "lives" / "checkpoint.pt").exists(), 180, "the first checkpoint", proc)
    os.kill(_children(proc.pid)[0], signal.SIGKILL)
    rc, out = _finish(proc, 600)
    assert rc == 0, out
    events = (tmp_path / "lives" / "events.log").read_text()
    assert "resumed at" in events and "finished" in events
    assert json.loads((tmp_path / "lives" / "summary.json").read_text())["steps"] == 60


@pytest.mark.slow
def test_a_run_started_on_two_processes_resumes_on_one(tiny_tree, tmp_path):
    run = tmp_path / "run"
    proc = _torchrun("--data", str(tiny_tree), *SMALL, "--epochs", "15", "--set", "run.checkpoint_every=1",
                     "--out", str(run))
    _wait_for(lambda: (run / "checkpoint.pt").exists() and (run / "metrics.csv").exists(), 180,
              "the end of the first epoch", proc)
    _kill_all(proc)
    proc.communicate()
    assert not (run / "summary.json").exists()
    from senet.cli.main import main

    assert main(["train", "--resume", str(run), "--set", "run.accum_steps=2", "--no-progress"]) == 0
    events = (run / "events.log").read_text()
    assert "rank 0 of 2" in events and "resumed at" in events
    ref = _single(tiny_tree, tmp_path / "one", epochs=15)
    got = _params(run / "model.safetensors")
    for key in ref:  # same global batches, same micro-batches: the same run
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-5, msg=key)


def test_resume_accepts_only_execution_settings(tiny_tree, tmp_path, capsys):
    from senet.cli.main import main

    run = tmp_path / "r"
    assert main(["train", "--data", str(tiny_tree), *SMALL, "--set", "run.max_steps=1", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--set", "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr=0.5" in err and "run.accum_steps" in err


def test_the_global_batch_must_split_over_processes_and_micro_batches(tiny_tree, tmp_path):
    from senet.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible by run.accum_steps"):
        resolve(None, ["data.batch_size=16", "run.accum_steps=3"])

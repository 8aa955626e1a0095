"""A run killed with SIGKILL at a random step (or in the middle of writing a checkpoint) and
resumed ends with weights bitwise identical to an uninterrupted run (CPU); so does one whose
newest checkpoint was damaged afterwards, resumed from the previous one."""

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import make_tree
from tests.fault_helpers import flip_in_zip_member

pytestmark = pytest.mark.slow

# SE-Shake-Shake draws from the global RNG in every forward pass (a and b), so the RNG
# state in the checkpoint matters as much as the weights, the optimizer and the data order.
ARGS = ["--set", "model.name=se_shake_shake26_2x32d", "--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
        "--set", "data.batch_size=16", "--set", "data.cutout=6", "--set", "run.checkpoint_every=3",
        "--set", "run.threads=1", "--epochs", "3", "--no-progress"]
STEPS = 3 * 4  # 64 training images / 16

# Runs the CLI after arranging for a SIGKILL: after optimizer step KILL_STEP, or in the middle
# of writing checkpoint number KILL_SAVE (the temporary file half written, not yet renamed).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from senet.train import trainer
    from senet.train import checkpoint
    from senet.utils.atomic import atomic_write

    kill_step = int(os.environ.get("KILL_STEP", "0"))
    kill_save = int(os.environ.get("KILL_SAVE", "0"))

    def after_step(self):
        if self.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    saves = []

    def save(path, state, **kw):
        saves.append(path)
        if len(saves) == kill_save:
            def half(f):
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            atomic_write(path, half)
        checkpoint.save_checkpoint(path, state, **kw)

    trainer.Trainer._after_step = after_step
    trainer.save_checkpoint = save
    from senet.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def _senet(args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("resume") / "tree")


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    done = _senet(["train", "--data", str(tree), "--out", str(out), *ARGS])
    assert done.returncode == 0, done.stderr
    return load_file(out / "model.safetensors"), (out / "metrics.csv").read_text()


def _assert_same(run: Path, reference):
    weights, metrics = reference
    resumed = load_file(run / "model.safetensors")
    assert resumed.keys() == weights.keys()
    different = [k for k in weights if not (resumed[k] == weights[k]).all()]
    assert not different, f"not bitwise identical: {different[:5]}"
    strip = lambda text: [row.split(",")[:7] for row in text.splitlines()]  # noqa: E731 - not the timings
    assert strip((run / "metrics.csv").read_text()) == strip(metrics)


@pytest.mark.parametrize("seed", [0, 2])  # steps 7 and 1: after and before the first checkpoint
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(seed, tree, reference, tmp_path):
    kill_step = random.Random(seed).randrange(1, STEPS)
    run = tmp_path / "run"
    killed = _senet(["train", "--data", str(tree), "--out", str(run), *ARGS], {"KILL_STEP": str(kill_step)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "model.safetensors").exists()
    resumed = _senet(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    first_checkpoint = 3
    expected = "resuming" if kill_step >= first_checkpoint else "has no checkpoint yet"
    assert expected in resumed.stdout
    _assert_same(run, reference)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tree, reference, tmp_path):
    run = tmp_path / "run"
    killed = _senet(["train", "--data", str(tree), "--out", str(run), *ARGS], {"KILL_SAVE": "3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the kill should have left the half-written temporary file"
    assert (run / "checkpoint.prev.pt").is_file()
    resumed = _senet(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    # checkpoints follow steps 3, 4 (end of epoch 1) and 6: the kill in the third leaves the second
    assert "resuming" in resumed.stdout and "at epoch 2 step 1" in resumed.stdout
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    _assert_same(run, reference)


@pytest.mark.parametrize("damage", ["torn", "flipped bit"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, tree, reference, tmp_path):
    run = tmp_path / "run"
    # checkpoints follow steps 3, 4, 6, 8 and 9: killed after step 10, the newest is step 9's
    killed = _senet(["train", "--data", str(tree), "--out", str(run), *ARGS], {"KILL_STEP": "10"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    newest = run / "checkpoint.pt"
    if damage == "torn":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    else:
        flip_in_zip_member(newest)
    resumed = _senet(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    said = "resuming from the previous checkpoint checkpoint.prev.pt (epoch 3 step 1)"
    assert said in resumed.stderr and str(newest) in resumed.stderr
    assert said in (run / "events.log").read_text()
    assert "resuming" in resumed.stdout and "at epoch 3 step 1" in resumed.stdout
    _assert_same(run, reference)


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tree, tmp_path):
    run = tmp_path / "run"
    killed = _senet(["train", "--data", str(tree), "--out", str(run), *ARGS], {"KILL_STEP": "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        flip_in_zip_member(run / name)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    resumed = _senet(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 2
    err = resumed.stderr.strip().splitlines()
    assert len(err) == 1 and "Refusing to start the run again from scratch" in err[0]
    assert str(run / "checkpoint.pt") in err[0] and str(run / "checkpoint.prev.pt") in err[0]
    kept = lambda files: {k: v for k, v in files.items() if k not in ("events.log", ".senet.lock")}  # noqa: E731
    assert kept({p.name: p.read_bytes() for p in run.iterdir()}) == kept(before)  # nothing trained, nothing removed

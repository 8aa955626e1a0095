"""A run killed with SIGKILL at a random step (or in the middle of writing a checkpoint) and
resumed ends with weights bitwise identical to an uninterrupted run (CPU)."""

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

pytestmark = pytest.mark.slow

# SE-Shake-Shake draws from the global RNG in every forward pass (a and b), so the RNG
# state in the checkpoint matters as much as the weights, the optimizer and the data order.
ARGS = ["--set", "model.name=se_shake_shake26_2x32d", "--set", "data.dataset=imagefolder", "--set", "data.crop=16", "--set", "data.pad=2",
        "--set", "data.batch_size=16", "--set", "data.cutout=6", "--set", "run.checkpoint_every=3",
        "--set", "run.threads=2", "--epochs", "3", "--no-progress"]
STEPS = 3 * 4  # 64 training images / 16

# Runs the CLI after arranging for a SIGKILL: after optimizer step KILL_STEP, or in the middle
# of writing checkpoint number KILL_SAVE (the temporary file half written, not yet renamed).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from senet.train import trainer
    from senet.train import checkpoint

    kill_step = int(os.environ.get("KILL_STEP", "0"))
    kill_save = int(os.environ.get("KILL_SAVE", "0"))

    def after_step(self):
        if self.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    saves = []

    def save(path, state):
        saves.append(path)
        if len(saves) == kill_save:
            def half(f):
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            checkpoint.atomic_write_bytes(path, half)
        checkpoint.save_checkpoint(path, state)

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


@pytest.mark.parametrize("seed", [0, 1, 2])
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
    resumed = _senet(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    # checkpoints follow steps 3, 4 (end of epoch 1) and 6: the kill in the third leaves the second
    assert "resuming" in resumed.stdout and "at epoch 2 step 1" in resumed.stdout
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    _assert_same(run, reference)

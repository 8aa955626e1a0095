"""benchmarks/gpu_session.py, the one-command GPU session kit, on the CPU:
throughput figures, paired runs stopped at the deadline and packed into state parts, and a
second session that unpacks them and resumes the same runs. The deadline is the kit's
``clock``: the tests move it past the deadline as soon as the runs have reached the point being
checked, instead of waiting the budget out (the budget still bounds a run that never gets there)."""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_tree

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.slow
RUNS = ["cifar10-resnet110-seed0", "cifar10-se_resnet110-seed0"]

TINY = ["--device", "cpu", "--pairs", "1", "--reserve", "5", "--set", "data.dataset=imagefolder",
        "--set", "data.crop=16", "--set", "data.pad=2", "--set", "data.batch_size=32",
        "--set", "run.checkpoint_every=1", "--set", "run.threads=1", "--no-compile"]


@pytest.fixture
def kit(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_session

    return gpu_session


def deadline_once(kit, monkeypatch, work: Path, ready: Callable[[Path], bool]) -> None:
    """The session's work folder goes under ``work``; its clock jumps past any deadline once
    ``ready(run folder)`` holds for every paired run."""
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))

    def clock() -> float:
        folders = [w / "runs" / name for w in work.glob("senet-gpu-*") for name in RUNS]
        # not while a checkpoint is being written (through a temporary file beside it): a kill
        # between its two renames would leave only checkpoint.prev.pt, which is not packed
        done = folders and all(ready(f) and not any(f.glob(".checkpoint.pt.*")) for f in folders)
        return time.time() + (1e6 if done else 0.0)

    monkeypatch.setattr(kit, "clock", clock)


def test_a_session_packs_its_runs_and_the_next_resumes_them(kit, tmp_path, capsys, monkeypatch):
    tree = make_tree(tmp_path / "tree", classes=2, train=32, test=8)
    first = tmp_path / "out1"
    deadline_once(kit, monkeypatch, tmp_path / "work1", lambda run: (run / "checkpoint.pt").is_file())
    assert kit.main(["--data", str(tree), "--out", str(first), "--budget", "600", *TINY, "--stream-model", "resnet18",
                     "--throughput-models", "cifar_resnet20", "--throughput-steps", "1", "--throughput-batch", "8",
                     "--stream", "2", "1", "0", "40", "32"]) == 0
    results = json.loads((first / "results.json").read_text())
    assert results["throughput"]["cifar_resnet20"]["images_per_s"] > 0
    assert results["stream"]["images_per_s"] > 0 and results["stream"]["steps"] == 1
    runs = {r["run"]: r for r in results["runs"]}
    assert sorted(runs) == RUNS
    assert all(r["state"] == "stopped at the deadline" for r in runs.values())  # 164 epochs do not fit
    assert "| cifar10-resnet110-seed0 | stopped at the deadline |" in (first / "results.md").read_text()
    parts = sorted(first.glob("state.tar.part*"))
    assert parts and all(p.stat().st_size <= kit.PART_BYTES for p in parts)
    blob = tmp_path / "state.tar"
    blob.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(blob) as tar:
        names = tar.getnames()
    assert "runs/cifar10-resnet110-seed0/checkpoint.pt" in names
    assert not any(n.endswith("checkpoint.prev.pt") for n in names)

    second = tmp_path / "out2"
    deadline_once(kit, monkeypatch, tmp_path / "work2",
                  lambda run: (run / "events.log").is_file() and "resumed" in (run / "events.log").read_text())
    capsys.readouterr()
    assert kit.main(["--data", str(tree), "--out", str(second), "--budget", "600", *TINY, "--resume-from", str(first),
                     "--throughput-models", "--stream", "2", "0", "0", "40", "32"]) == 0
    assert "resuming 2 run(s)" in capsys.readouterr().out
    again = {r["run"]: r for r in json.loads((second / "results.json").read_text())["runs"]}
    for name, r in again.items():
        assert r["epochs"] >= runs[name]["epochs"]
    blob.write_bytes(b"".join(p.read_bytes() for p in sorted(second.glob("state.tar.part*"))))
    with tarfile.open(blob) as tar:
        events = tar.extractfile("runs/cifar10-resnet110-seed0/events.log").read().decode()
    assert "resumed" in events


def test_no_state_to_resume_is_an_error(kit, tmp_path):
    with pytest.raises(SystemExit, match="no state.tar.partNN files"):
        kit.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--resume-from", str(tmp_path), *TINY])

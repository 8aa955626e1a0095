"""Resume checkpoints: written atomically, read without executing code.

A checkpoint holds everything an uninterrupted run would still have in memory: model,
optimizer and grad-scaler states, every RNG state, the position in the data order (the order
itself is a function of the seed and the epoch, see :class:`senet.data.EpochOrder`), the
partial epoch's running sums and the finished epochs' metrics. Writing goes to a temporary
file in the same folder, is fsynced, then renamed over the old checkpoint, so a kill at any
moment leaves either the old or the new checkpoint, both complete.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from senet.errors import SenetError

FORMAT = "senet-checkpoint"
VERSION = 1


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from (torch CPU and CUDA, numpy, Python)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py_version, "state": list(py_state),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on some platforms; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary sibling of ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training state atomically (``state`` holds tensors, numbers, strings, lists, dicts)."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a file that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise SenetError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise SenetError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SenetError(f"{path} is not a senet training checkpoint")
    if state.get("version") != VERSION:
        raise SenetError(f"{path} has checkpoint version {state.get('version')}; this senet reads {VERSION}")
    return state

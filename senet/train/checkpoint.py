"""Resume checkpoints: written atomically, verified when read, the previous one kept.

A checkpoint holds everything an uninterrupted run would still have in memory: model,
optimizer and grad-scaler states, every RNG state, the position in the data order (the order
itself is a function of the seed and the epoch, see :class:`senet.data.EpochOrder`), the
partial epoch's running sums and the finished epochs' metrics, plus a SHA-256 of all of it.
It is written through :func:`senet.utils.atomic.atomic_write` (a kill at any moment leaves
whole files only) and the checkpoint it replaces is kept as the previous one, so that a
newest checkpoint damaged later (a flipped bit, a torn copy) still leaves one to resume from.
Reading checks the zip's CRC-32s and the digest: a damaged file is refused, never loaded.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from senet.errors import SenetError
from senet.utils.atomic import atomic_write
from senet.utils.integrity import bad_zip_member, state_digest


FORMAT = "senet-checkpoint"
VERSION = 1
DIGEST = "sha256"  # payload key of the SHA-256 of everything else


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


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: dict[str, Any], *, previous: Path | None = None) -> None:
    """Write a training state atomically (``state`` holds tensors, numbers, strings, lists,
    dicts) with its digest; an existing checkpoint at ``path`` becomes ``previous`` if given."""
    payload = _to_cpu({"format": FORMAT, "version": VERSION, **state})
    payload[DIGEST] = state_digest(payload)
    atomic_write(path, lambda f: torch.save(payload, f), previous=previous)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint, with ``weights_only=True``: a file that would run code is
    refused, and so is one whose bytes do not match its CRC-32s or its recorded SHA-256
    (checkpoints of older senet versions have none and are read unverified)."""
    path = Path(path)
    if not path.is_file():
        raise SenetError(f"no checkpoint at {path}")
    try:
        damage = bad_zip_member(path)
        if damage:
            raise SenetError(f"checkpoint {path} is damaged: {damage}")
        state = torch.load(path, map_location=map_location, weights_only=True)
    except SenetError:
        raise
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise SenetError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SenetError(f"{path} is not a senet training checkpoint")
    if state.get("version") != VERSION:
        raise SenetError(f"{path} has checkpoint version {state.get('version')}; this senet reads {VERSION}")
    recorded = state.pop(DIGEST, None)
    if recorded is not None and recorded != state_digest(state):
        raise SenetError(f"checkpoint {path} is damaged: its contents do not match the SHA-256 recorded when it "
                         "was written")
    return state


def load_latest(newest: Path, previous: Path,
                map_location: str | torch.device = "cpu") -> tuple[dict[str, Any] | None, Path | None, str | None]:
    """``(state, path it came from, why the newest was not used)`` of the newest checkpoint
    that reads and verifies: ``newest``, else ``previous``. ``(None, None, None)`` when
    neither exists; a :class:`SenetError` naming both when neither is usable."""
    try:
        return load_checkpoint(newest, map_location), newest, None
    except SenetError as e:
        problem = str(e)
    if not previous.is_file():
        if not newest.exists():
            return None, None, None
        raise SenetError(f"{problem}; there is no previous checkpoint {previous.name} to fall back to. "
                         "Refusing to start the run again from scratch: move the damaged file away to do that")
    try:
        return load_checkpoint(previous, map_location), previous, problem
    except SenetError as e:
        raise SenetError(f"{problem}; and {e}. Refusing to start the run again from scratch: move both "
                         "checkpoints away to do that") from None

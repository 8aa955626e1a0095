"""The one device choice of every command and run: ``auto`` (CUDA when present), ``cpu`` or
``cuda``; a process of a ``torchrun`` group takes the GPU of its ``LOCAL_RANK``.

torch is imported on first use, so that the CLI's option parsing stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from senet.errors import SenetError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` as a :class:`torch.device`; ``cuda`` without a CUDA device,
    or a ``local_rank`` past the node's GPUs, is a :class:`SenetError` saying what to do."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SenetError("run.device=cuda but no CUDA device is available; use --device cpu or auto")
        if local_rank >= torch.cuda.device_count():
            raise SenetError(f"LOCAL_RANK {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                             "start at most that many processes per node (torchrun --nproc-per-node)")
        return torch.device("cuda", local_rank)
    return torch.device(name)

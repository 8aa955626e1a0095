"""PyTorch's own distributed engine, as the trainer uses it: processes started by ``torchrun``
(which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous), one process per GPU
(NCCL) or per CPU worker (gloo), gradients all-reduced by DistributedDataParallel.

Nothing here starts or watches processes: when a worker dies, ``torchrun`` stops the rest of
the group and exits non-zero (or restarts the group with ``--max-restarts``; the restarted
workers resume from the run's last checkpoint). Collectives time out after
``run.dist_timeout`` seconds, so a group whose peer vanished cannot hang forever.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from senet.errors import SenetError
from senet.utils.device import resolve_device

if TYPE_CHECKING:
    from senet.train.config import RunConfig


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in its group (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart_count: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT: > 0 after a restart
    max_restarts: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SenetError(f"environment variable {name}={raw!r} is not an integer") from None


def dist_env() -> DistEnv:
    """The group this process was launched into, read from torchrun's environment variables."""
    env = DistEnv(
        rank=_int_env("RANK", 0),
        world_size=_int_env("WORLD_SIZE", 1),
        local_rank=_int_env("LOCAL_RANK", 0),
        restart_count=_int_env("TORCHELASTIC_RESTART_COUNT", 0),
        max_restarts=_int_env("TORCHELASTIC_MAX_RESTARTS", 0),
    )
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise SenetError(f"RANK={env.rank} WORLD_SIZE={env.world_size} is not a valid process group position")
    return env


def init_distributed(env: DistEnv, device: torch.device, *, backend: str = "auto", timeout_s: float = 600.0) -> None:
    """Join the process group (once): NCCL for CUDA devices, gloo for the CPU."""
    if not env.distributed or dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise SenetError("run.dist_backend=nccl needs CUDA devices; use gloo (or auto) on the CPU")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
    if backend == "nccl":
        kwargs["device_id"] = device
    if env.restart_count:
        # A restarted group meets in the same torchrun store as the group that died; without a
        # prefix of its own a worker can read a dead worker's address and fail to connect.
        store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
        kwargs.update(store=dist.PrefixStore(f"senet/restart_{env.restart_count}", store), rank=rank,
                      world_size=world_size)
    dist.init_process_group(**kwargs)


def join(env: DistEnv, run: RunConfig) -> torch.device:
    """This process's device (``run.device``, :func:`senet.utils.device.resolve_device`), its
    process group joined (once) with ``run.dist_backend`` and ``run.dist_timeout``."""
    device = resolve_device(run.device, env.local_rank)
    init_distributed(env, device, backend=run.dist_backend, timeout_s=run.dist_timeout)
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the group, in place (returned for chaining); a no-op alone."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable value made by our own code, never data)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()

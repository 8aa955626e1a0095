"""Deterministic, resumable data order.

The permutation of an epoch depends only on ``(seed, epoch)`` (a fresh generator seeded from
both), never on how many batches were drawn before: resuming at ``(epoch, step)`` yields
exactly the batches an uninterrupted run would have used. With ``world_size > 1`` every
global batch of ``batch_size`` indices is cut into ``world_size`` equal contiguous shards and
rank ``r`` gets shard ``r``, so the ranks together see the same global batches as one process.
"""

from __future__ import annotations

from typing import Iterator

import torch

from senet.utils.seeding import derive_seed


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, epoch)`` (numpy's SeedSequence hashing)."""
    return derive_seed(seed, epoch, 0x5E7)


class EpochOrder:
    """Index batches of an ``n``-image dataset for every epoch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n} batch_size={batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} (the global batch) must be divisible by world_size {world_size}")
        if drop_last and n < batch_size:
            raise ValueError(f"with drop_last a dataset of {n} images gives no batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size

    def __repr__(self) -> str:
        return (
            f"EpochOrder(n={self.n}, batch_size={self.batch_size}, seed={self.seed}, drop_last={self.drop_last}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )

    def steps_per_epoch(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of ``0..n-1`` (int64), a function of ``(seed, epoch)`` only."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=generator)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        """This rank's index tensors for steps ``start_step, start_step + 1, ...`` of ``epoch``.

        The last, short global batch (only without ``drop_last``) is split as evenly as
        possible; a rank may then get fewer indices than the others. A ``start_step`` outside
        ``0..steps_per_epoch()`` is a ``ValueError`` raised here, not at the first batch.
        """
        steps = self.steps_per_epoch()
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} is outside 0..{steps} for this epoch")
        return self._batches(self.permutation(epoch), start_step, steps)

    def _batches(self, perm: torch.Tensor, start_step: int, steps: int) -> Iterator[torch.Tensor]:
        for step in range(start_step, steps):
            batch = perm[step * self.batch_size : (step + 1) * self.batch_size]
            if self.world_size > 1:
                batch = torch.tensor_split(batch, self.world_size)[self.rank]
            yield batch

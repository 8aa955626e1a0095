"""Seeds: the global RNGs of a run, and seeds derived from a tuple of integers.

Every derived seed in senet (an epoch's data order, a step's augmentation, an image's
augmentation, a rank's model draws) is :func:`derive_seed` of the run seed, the position
and a constant naming the use, so that uses never share a stream.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(*words: int, bits: int = 63) -> int:
    """A well-mixed ``bits``-bit seed (63 or 32) of the integers ``words``: numpy's
    SeedSequence hash, stable across numpy versions (so resumed runs draw the same)."""
    state = np.random.SeedSequence([w % 2**64 for w in words]).generate_state(2, dtype=np.uint32)
    if bits == 32:
        return int(state[0])
    if bits == 63:
        return (int(state[0]) << 31) ^ int(state[1])
    raise ValueError(f"bits must be 32 or 63, got {bits}")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

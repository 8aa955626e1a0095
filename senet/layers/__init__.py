"""Building blocks shared by every model family."""

from senet.layers.checkpoint import CheckpointSequential, checkpoint_call, runs_children_in_order
from senet.layers.drop import DropPath, drop_path_rates
from senet.layers.pool import POOL_TYPES, GlobalPool
from senet.layers.residual import ResidualUnit, make_block_se, se_channels
from senet.layers.se import (
    GATES,
    PLACEMENTS,
    SE_KWARGS,
    SQUEEZES,
    SEConfig,
    SqueezeExcite,
    hidden_channels,
    make_divisible,
)

__all__ = [
    "GATES",
    "PLACEMENTS",
    "POOL_TYPES",
    "SE_KWARGS",
    "SQUEEZES",
    "CheckpointSequential",
    "DropPath",
    "GlobalPool",
    "ResidualUnit",
    "SEConfig",
    "SqueezeExcite",
    "checkpoint_call",
    "drop_path_rates",
    "hidden_channels",
    "make_block_se",
    "make_divisible",
    "runs_children_in_order",
    "se_channels",
]

"""Building blocks shared by every model family."""

from senet.layers.residual import make_block_se, residual_forward, se_channels
from senet.layers.se import GATES, PLACEMENTS, SE_KWARGS, SQUEEZES, SEConfig, SqueezeExcite, hidden_channels

__all__ = [
    "GATES",
    "PLACEMENTS",
    "SE_KWARGS",
    "SQUEEZES",
    "SEConfig",
    "SqueezeExcite",
    "hidden_channels",
    "make_block_se",
    "residual_forward",
    "se_channels",
]

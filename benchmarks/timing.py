"""The interleaved timing helpers, for the scripts of this folder (``from timing import compare,
ratio ...``): they live in :mod:`senet.utils.timing`, which ``senet prune`` also uses."""

from senet.utils.timing import *  # noqa: F401,F403
from senet.utils.timing import __all__  # noqa: F401

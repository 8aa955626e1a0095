"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) for PyTorch.

The names below are imported on first use, so that ``import senet`` (and ``senet --help`` /
``senet --version``) does not import torch.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from senet.utils.lazy import lazy_exports
from senet.version import __version__

_EXPORTS = {
    "Complexity": "senet.complexity",
    "complexity": "senet.complexity",
    "SEConfig": "senet.layers",
    "SqueezeExcite": "senet.layers",
    "add_se": "senet.surgery",
    "prune": "senet.pruning",
    **{name: "senet.models" for name in (
        "convert_weights", "create_model", "infer_model", "list_models", "load_weights", "model_info",
        "push_to_hf_hub", "read_metadata", "save_for_hf", "save_weights")},
}

__all__ = [*sorted(_EXPORTS), "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


class _Package(types.ModuleType):
    """``senet.complexity`` is the function, as with eager imports: importing the submodule of
    that name must not put the module in its place."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

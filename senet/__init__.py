"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) for PyTorch.

The names below are imported on first use, so that ``import senet`` (and ``senet --help`` /
``senet --version``) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from senet.version import __version__

_EXPORTS = {
    "Complexity": "senet.complexity",
    "complexity": "senet.complexity",
    "SEConfig": "senet.layers",
    "SqueezeExcite": "senet.layers",
    "add_se": "senet.surgery",
    **{name: "senet.models" for name in (
        "convert_weights", "create_model", "infer_model", "list_models", "load_weights", "model_info",
        "push_to_hf_hub", "read_metadata", "save_for_hf", "save_weights")},
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    try:  # a subpackage not imported yet (senet.models, senet.train ...)
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """``senet.complexity`` is the function, as with eager imports: importing the submodule of
    that name must not put the module in its place."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

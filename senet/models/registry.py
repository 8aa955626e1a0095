"""Model registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model besides how to build it."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    has_se: bool
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tags: tuple[str, ...] = field(default=())
    min_input_size: int = 1  # smallest input side the network accepts


@dataclass
class ModelSpec:
    """How a model instance was made: enough to rebuild it with ``create_model(name, **kwargs)``."""

    name: str
    kwargs: dict[str, Any]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    family: str,
    has_se: bool,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    tags: tuple[str, ...] = (),
    min_input_size: int = 1,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model constructor under its function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, family, has_se, input_size, num_classes, mean, std, tags,
                                   min_input_size)
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name``; an unknown name raises ``ValueError`` listing the closest ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `senet models` or senet.list_models()"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs; ``None`` keeps the model's default (1000 for
            ImageNet models, 10 for CIFAR ones).
        pretrained: a weight file (senet ``.safetensors``, or a timm / Cadene state dict as
            ``.pth`` or ``.safetensors``). The layout the weights were trained with (stride
            position, stem pooling) is read from the file and used unless ``kwargs`` set it.
            If ``num_classes`` differs from the file's classifier, the classifier is left
            freshly initialised and everything else is loaded.
        **kwargs: model options, e.g. the SE options ``reduction``, ``se_bias``, ``squeeze``,
            ``gate``, ``placement``, ``se_stages``, ``se_divisor`` on SE models.
    """
    info = model_info(name)
    if pretrained is not None:
        from senet.weights.load import create_pretrained

        return create_pretrained(name, pretrained, num_classes=num_classes, **kwargs)
    if num_classes is None:
        num_classes = info.num_classes
    model = info.fn(num_classes=num_classes, **kwargs)
    model.senet_spec = ModelSpec(name, {"num_classes": num_classes, **kwargs})
    return model


def _ensure_loaded() -> None:
    import senet.models  # noqa: F401  (registers every family)

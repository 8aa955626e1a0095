"""Model registry: families, models, their pretrained configs and released weights, timm's names.

A family module registers itself once (:func:`register_family`: its class, the SE placements its
units allow, the readers of foreign checkpoints of its keys, the layout keywords its weights
depend on) and each of its models (:func:`register_model`). :func:`senet.create_model` (the one
builder, :mod:`senet.models._builder`) reads everything it needs from here.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import nn

from senet.weights.keymap import Converter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PretrainedCfg:
    """How a model's inputs are prepared and what its outputs mean (timm's ``pretrained_cfg``).

    ``crop_pct``: evaluation resizes the short side to ``input side / crop_pct`` and centre-crops
    ``input_size`` (0.875: 256 -> 224). ``model.pretrained_cfg`` is :meth:`to_dict`, with the
    keys timm's ``resolve_data_config`` reads.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    num_classes: int = 1000
    classes: tuple[str, ...] | None = None
    min_input_size: int = 1  # smallest input side the network accepts
    first_conv: str = "stem.conv1"
    classifier: str = "fc"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["crop_mode"] = "center"
        return out

    def updated(self, entries: Mapping[str, Any]) -> "PretrainedCfg":
        """This config with ``entries`` (e.g. a file's pretrained-config metadata) applied."""
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in entries.items() if k in self.__dataclass_fields__}
        return replace(self, **known)


@dataclass(frozen=True)
class Released:
    """Released weights of a model, as published on the Hugging Face Hub.

    ``hf_hub_id`` / ``filename``: where ``create_model(name, pretrained=True)`` fetches them;
    ``url``: the original release, named in the error when the hub cannot be reached;
    ``cfg``: how those weights want their inputs (overrides of the model's pretrained config);
    ``origin``: who trained them; ``dataset``: what their outputs are (``imagenet-1k``: the 1,000
    ILSVRC-2012 classes, named in the model's config).
    """

    hf_hub_id: str
    filename: str = "model.safetensors"
    url: str | None = None
    cfg: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""
    dataset: str = "imagenet-1k"


@dataclass(frozen=True)
class Family:
    """What the builder and the weight readers need to know of one model family.

    Args:
        name: the family's name (``"resnet"``, ``"vgg"`` ...).
        cls: its model class; its ``__init__`` keywords are the model keywords it accepts.
        placements: the SE placements its units allow.
        converters: readers of foreign checkpoints (timm, Cadene) into the family's keys.
        layout_keys: model keywords that change what a set of weights computes without changing
            their shapes (stride position, stem pooling ...): they come from the weights' source.
        layout_of: the ``layout_keys`` values an existing model runs with.
        upgrade: brings a state dict in the family's keys but an older layout up to date (e.g.
            BN-Inception's former convolution biases, folded into batch norm).
    """

    name: str
    cls: type[nn.Module]
    placements: tuple[str, ...] = ("standard",)
    converters: tuple[Converter, ...] = ()
    layout_keys: tuple[str, ...] = ()
    layout_of: Callable[[nn.Module], dict[str, Any]] | None = None
    upgrade: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model besides how to build it."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    has_se: bool
    cfg: PretrainedCfg = PretrainedCfg()
    released: Released | None = None
    tags: tuple[str, ...] = ()

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.cfg.input_size

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def mean(self) -> tuple[float, ...]:
        return self.cfg.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.cfg.std

    @property
    def min_input_size(self) -> int:
        return self.cfg.min_input_size

    @property
    def spec(self) -> Family:
        return _FAMILIES[self.family]


@dataclass
class ModelSpec:
    """How a model instance was made: enough to rebuild it with ``create_model(name, **kwargs)``."""

    name: str
    kwargs: dict[str, Any]


_FAMILIES: dict[str, Family] = {}
_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {}


def register_family(name: str, cls: type[nn.Module], **options: Any) -> Family:
    """Declare a model family (see :class:`Family` for ``options``)."""
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} is registered twice")
    _FAMILIES[name] = Family(name, cls, **options)
    return _FAMILIES[name]


def register_model(
    *,
    family: str,
    has_se: bool,
    cfg: PretrainedCfg | None = None,
    released: Released | None = None,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model constructor under its function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if family not in _FAMILIES:
            raise ValueError(f"model {name!r}: register family {family!r} first")
        _REGISTRY[name] = ModelInfo(name, fn, family, has_se, cfg or PretrainedCfg(), released, tags)
        return fn

    return wrap


def register_alias(alias: str, name: str, **kwargs: Any) -> None:
    """Accept ``alias`` (e.g. timm's ``seresnet50``) for ``create_model(name, **kwargs)``."""
    if alias in _REGISTRY:
        raise ValueError(f"alias {alias!r} is a registered model name")
    _ALIASES[alias] = (name, dict(kwargs))


def families() -> dict[str, Family]:
    _ensure_loaded()
    return dict(_FAMILIES)


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted; with ``pretrained``
    only those with released weights. timm's names accepted by ``create_model`` are not listed
    (see :func:`list_aliases`)."""
    _ensure_loaded()
    return sorted(n for n, info in _REGISTRY.items()
                  if fnmatch.fnmatchcase(n, pattern) and (info.released is not None or not pretrained))


def list_aliases() -> dict[str, tuple[str, dict[str, Any]]]:
    """timm name -> (senet name, keywords) for every other project's name ``create_model`` accepts."""
    _ensure_loaded()
    return {k: (n, dict(kw)) for k, (n, kw) in _ALIASES.items()}


def resolve_name(name: str) -> tuple[str, dict[str, Any]]:
    """The registered name and keywords that ``name`` (a senet or timm name) stands for."""
    _ensure_loaded()
    if name in _REGISTRY:
        return name, {}
    if name in _ALIASES:
        target, kwargs = _ALIASES[name]
        return target, dict(kwargs)
    model_info(name)  # raises, naming the closest names
    raise AssertionError


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name`` (or of the model a timm name stands for); an unknown name raises
    ``ValueError`` listing the closest ones."""
    _ensure_loaded()
    if name in _ALIASES:
        name = _ALIASES[name][0]
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY) + list(_ALIASES), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `senet models` or senet.list_models()"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def model_names_of(family: str, *, has_se: bool | None = None) -> list[str]:
    """Registered models of ``family`` (with or without SE blocks)."""
    _ensure_loaded()
    return sorted(n for n, i in _REGISTRY.items() if i.family == family and (has_se is None or i.has_se == has_se))


def _ensure_loaded() -> None:
    import senet.models  # noqa: F401  (registers every family)

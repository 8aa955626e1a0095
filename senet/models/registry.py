"""Model registry: families, models, their pretrained configs (:class:`~senet.preprocess.PretrainedCfg`)
and released weights, timm's names and pretrained tags.

A family module registers itself once (:func:`register_family`: its class, the SE placements its
units allow, the readers of foreign checkpoints of its keys, the layout keywords its weights
depend on) and each of its models (:func:`register_model`). :func:`senet.create_model` (the one
builder, :mod:`senet.models._builder`) reads everything it needs from here. Importing
``senet.models`` (which any import of this module does first) registers every family.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from torch import nn

from senet.preprocess import PretrainedCfg
from senet.weights.keymap import Converter


@dataclass(frozen=True)
class Released:
    """Released weights of a model, fetched where timm fetches them.

    ``timm_name``: timm's ``architecture.tag`` for these weights (``legacy_seresnet50.in1k``);
    the tag selects them (``create_model("seresnet50.a1_in1k", pretrained=True)``).
    ``hf_hub_id``: the Hugging Face Hub repo timm records for them (``"timm/"``: timm's
    ``timm/<timm_name>``), with ``filename`` in it; ``None`` where timm records none and
    fetches ``url`` (a release URL, cached in torch.hub's folder; the hash in its file name is
    checked). ``cfg``: how those weights want their inputs (overrides of the model's pretrained
    config); ``origin``: who trained them; ``dataset``: what their outputs are
    (``imagenet-1k``: the 1,000 ILSVRC-2012 classes, named in the model's config).
    """

    timm_name: str
    hf_hub_id: str | None = None
    url: str | None = None
    filename: str = "model.safetensors"
    cfg: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""
    dataset: str = "imagenet-1k"

    def __post_init__(self) -> None:
        if "." not in self.timm_name or not (self.hf_hub_id or self.url):
            raise ValueError(f"released weights {self.timm_name!r} need a tagged name and a hub id or URL")
        if self.hf_hub_id == "timm/":  # timm's shorthand for its own repo of these weights
            object.__setattr__(self, "hf_hub_id", "timm/" + self.timm_name)

    @property
    def tag(self) -> str:
        return self.timm_name.split(".", 1)[1]

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The names of these weights' outputs (``None``: a dataset senet has no names for)."""
        return imagenet_classes() if self.dataset == "imagenet-1k" else None


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 class names, in the order of the released models' outputs (the
    first WordNet lemma of each synset)."""
    text = resources.files("senet.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in text.splitlines() if "\t" in line)


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
        layout_of: the ``layout_keys`` values an existing model of the family (of ``cls``) runs with.
        upgrade: brings a state dict in the family's keys but an older layout up to date (e.g.
            BN-Inception's former convolution biases, folded into batch norm).
        writers: per foreign layout a converter reads (``"timm"``, ``"legacy"``), the inverse:
            a state dict in the family's keys -> that layout's keys (for files timm reads).
    """

    name: str
    cls: type[nn.Module]
    placements: tuple[str, ...] = ("standard",)
    converters: tuple[Converter, ...] = ()
    layout_keys: tuple[str, ...] = ()
    layout_of: Callable[[nn.Module], dict[str, Any]] | None = None
    upgrade: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    writers: Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Alias:
    """Another project's name for a registered model built with ``kwargs`` (timm's ``seresnet50``:
    ``se_resnet50`` in timm's layout); ``weights``: the released weights timm has under that
    name; ``keys``: the foreign layout (a family writer's name) of timm's state dict for it."""

    name: str
    target: str
    kwargs: Mapping[str, Any]
    weights: tuple[Released, ...] = ()
    keys: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model besides how to build it."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    has_se: bool
    cfg: PretrainedCfg = PretrainedCfg()
    weights: tuple[Released, ...] = ()  # the first is what ``pretrained=True`` loads

    @property
    def released(self) -> Released | None:
        """The default released weights (``None``: the model has none)."""
        return self.weights[0] if self.weights else None

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
        """The smallest input side the network accepts."""
        return self.cfg.min_input_size[1] if self.cfg.min_input_size else 1

    @property
    def family_info(self) -> Family:
        """What the registry knows of the model's family (``family`` is its name)."""
        return _FAMILIES[self.family]


@dataclass
class ModelSpec:
    """How a model instance was made: enough to rebuild it with ``create_model(name, **kwargs)``."""

    name: str
    kwargs: dict[str, Any]


_FAMILIES: dict[str, Family] = {}
_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, Alias] = {}


def register_family(name: str, cls: type[nn.Module], **options: Any) -> Family:
    """Declare a model family (see :class:`Family` for ``options``)."""
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} is registered twice")
    _FAMILIES[name] = Family(name, cls, **options)
    return _FAMILIES[name]


def _weights(name: str, released: Released | Sequence[Released] | None) -> tuple[Released, ...]:
    weights = (released,) if isinstance(released, Released) else tuple(released or ())
    tags = [w.tag for w in weights]
    if len(set(tags)) != len(tags):
        raise ValueError(f"{name}: a pretrained tag is registered twice: {tags}")
    return weights


def register_model(
    *,
    family: str,
    has_se: bool,
    cfg: PretrainedCfg | None = None,
    released: Released | Sequence[Released] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model constructor under its function name; ``released``: its
    released weights, the default (``pretrained=True``) first."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if family not in _FAMILIES:
            raise ValueError(f"model {name!r}: register family {family!r} first")
        _REGISTRY[name] = ModelInfo(name, fn, family, has_se, cfg or PretrainedCfg(), _weights(name, released))
        return fn

    return wrap


def register_alias(alias: str, name: str, kwargs: Mapping[str, Any] | None = None, *,
                   released: Released | Sequence[Released] | None = None, keys: str | None = None) -> None:
    """Accept ``alias`` (e.g. timm's ``seresnet50``) for ``create_model(name, **kwargs)``, with
    the released weights timm has under that name (see :class:`Alias`)."""
    if alias in _REGISTRY:
        raise ValueError(f"alias {alias!r} is a registered model name")
    _ALIASES[alias] = Alias(alias, name, dict(kwargs or {}), _weights(alias, released), keys)


def families() -> dict[str, Family]:
    return dict(_FAMILIES)


def split_tag(name: str) -> tuple[str, str | None]:
    """timm's ``architecture.tag`` split: ``("seresnet50", "a1_in1k")``; ``None`` without a tag."""
    arch, dot, tag = str(name).partition(".")
    return arch, (tag if dot else None)


def list_models(
    pattern: str = "*",
    *,
    pretrained: bool = False,
    include_tags: bool | None = None,
    include_aliases: bool = False,
) -> list[str]:
    """Model names matching a shell-style ``pattern``, sorted.

    As timm's ``list_models``: ``pretrained`` keeps the names with released weights and, with
    ``include_tags`` (default: ``pretrained``), lists each of their weights as ``name.tag``
    (``se_resnet50.in1k``; a pattern without a tag matches every tag of the names it matches).
    Unlike timm, timm's names that ``create_model`` accepts for senet's models (``seresnet50``,
    ``legacy_seresnet50`` ...) are listed only with ``include_aliases``: each builds a model
    also listed under its senet name, so a loop over ``list_models()`` builds every network once.
    """
    names = {n: info.weights for n, info in _REGISTRY.items()}
    if include_aliases:
        names.update({n: a.weights for n, a in _ALIASES.items()})
    if pretrained:
        names = {n: w for n, w in names.items() if w}
    if include_tags is None:
        include_tags = pretrained
    if not include_tags:
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
    patterns = [pattern] if split_tag(pattern)[1] is not None else [pattern, pattern + ".*"]
    tagged = [f"{n}.{w.tag}" for n, ws in names.items() for w in ws] + [n for n, ws in names.items() if not ws]
    return sorted(n for n in tagged if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def list_aliases() -> dict[str, tuple[str, dict[str, Any]]]:
    """timm name -> (senet name, keywords) for every other project's name ``create_model`` accepts."""
    return {k: (a.target, dict(a.kwargs)) for k, a in _ALIASES.items()}


def alias_info(name: str) -> Alias | None:
    """The :class:`Alias` ``name`` (untagged) is, or ``None`` for a senet name."""
    return _ALIASES.get(name)


def aliases_of(name: str) -> list[Alias]:
    """timm's names for the registered model ``name``."""
    return [a for a in _ALIASES.values() if a.target == name]


def released_weights(name: str) -> Released | None:
    """The released weights ``name`` selects: its tag's (``seresnet50.a1_in1k``), or for an
    untagged name its default ones (``None``: it has none). An unknown tag is a ``ValueError``
    listing the known ones."""
    arch, tag = split_tag(name)
    alias = alias_info(arch)
    weights = alias.weights if alias is not None else model_info(arch).weights
    if tag is None:
        return weights[0] if weights else None
    for w in weights:
        if w.tag == tag:
            return w
    if not weights:
        raise ValueError(f"{arch} has no released weights, so no pretrained tag {tag!r} "
                         "(released: senet.list_models(pretrained=True, include_aliases=True))")
    raise ValueError(f"unknown pretrained tag {tag!r} for {arch}; known: {', '.join(w.tag for w in weights)}")


def resolve_name(name: str) -> tuple[str, dict[str, Any]]:
    """The registered name and keywords that ``name`` (a senet or timm name, with or without a
    pretrained tag) stands for."""
    model_info(name)  # checks the name and its tag
    alias = _ALIASES.get(split_tag(name)[0])
    return (alias.target, dict(alias.kwargs)) if alias is not None else (split_tag(name)[0], {})


def model_info(name: str) -> ModelInfo:
    """Registry entry of ``name`` (or of the model a timm name stands for; a pretrained tag is
    checked and ignored); an unknown name raises ``ValueError`` listing the closest ones."""
    arch, tag = split_tag(name) if isinstance(name, str) else (name, None)
    if tag is not None:
        released_weights(name)
    if arch in _ALIASES:
        arch = _ALIASES[arch].target
    try:
        return _REGISTRY[arch]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(arch), list(_REGISTRY) + list(_ALIASES), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "see `senet models` or senet.list_models()"
        raise ValueError(f"unknown model {name!r}; {hint}") from None

"""How a model's inputs are prepared and what its outputs mean: one type, :class:`PretrainedCfg`.

The registry declares each model's (and each released weights') config as one; the builder
sets ``model.pretrained_cfg`` to its :meth:`~PretrainedCfg.to_dict` (timm's keys and value
shapes, so timm's ``resolve_data_config`` / ``create_transform`` / ``save_for_hf`` read it);
weight files and exported files record the entries of :data:`RECORDED`
(:meth:`~PretrainedCfg.to_metadata` / :meth:`~PretrainedCfg.metadata_entries`); ``senet
predict``, ``eval`` and ``analyze`` prepare images from it
(:func:`senet.data.transforms.resolve_data_config`). Every value is checked once, here, when
a config is made: an invalid one does not exist.

A leaf (standard library only): :mod:`senet.weights` and :mod:`senet.models` both import it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: ImageNet's per-channel statistics (RGB, 0-1 scale), with which most ImageNet weights were trained.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The Inception preprocessing (``2 x - 1``), of Inception-ResNet-v2 and MobileNet weights.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
#: Resampling filters a config may name (PIL's, as timm's transforms use them).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: The entries a file records of its model's config (a weight file's header, an exported file's).
RECORDED = ("classes", "mean", "std", "input_size", "crop_pct", "interpolation")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _size(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_int(x) and x > 0 for x in v)


def _fraction(v: Any) -> bool:
    return _number(v) and 0 < v <= 1


_SIZE = "[channels, height, width], positive integers"
_FRACTION = "a number in (0, 1]"
#: Each entry's check of its JSON form (lists, not tuples), and what it must be.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of strings"),
    "mean": (lambda v: isinstance(v, list) and bool(v) and all(_number(x) for x in v), "a list of numbers"),
    "std": (lambda v: isinstance(v, list) and bool(v) and all(_number(x) and x > 0 for x in v),
            "a list of positive numbers"),
    "input_size": (_size, _SIZE),
    "crop_pct": (_fraction, _FRACTION),
    "interpolation": (lambda v: v in INTERPOLATIONS, f"one of {', '.join(INTERPOLATIONS)}"),
    "num_classes": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "min_input_size": (_size, _SIZE),
    "test_input_size": (_size, _SIZE),
    "test_crop_pct": (_fraction, _FRACTION),
    "first_conv": (lambda v: isinstance(v, str), "a module name"),
    "classifier": (lambda v: isinstance(v, str), "a module name"),
}
#: Entries that may be absent (``None``).
_OPTIONAL = ("classes", "min_input_size", "test_input_size", "test_crop_pct")


def _plain(value: Any) -> Any:
    """A value in its JSON form (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def check_entries(entries: Mapping[str, Any]) -> dict[str, Any]:
    """``entries`` of a config (any of :class:`PretrainedCfg`'s fields, ``None`` for an absent
    optional one) in their JSON form, checked; a bad one is a one-line ``ValueError`` naming it."""
    out = {}
    for key, value in entries.items():
        if key not in _CHECKS:
            raise ValueError(f"unknown pretrained-config entry {key!r}; known: {', '.join(_CHECKS)}")
        value = _plain(value)
        if not (value is None and key in _OPTIONAL):
            check, expected = _CHECKS[key]
            if not check(value):
                raise ValueError(f"{key!r} must be {expected}, got {repr(value)[:200]}")
        out[key] = value
    if out.get("mean") is not None and out.get("std") is not None and len(out["mean"]) != len(out["std"]):
        raise ValueError("'mean' and 'std' have different lengths")
    return out


def json_value(text: str, key: str) -> Any:
    """The JSON value of a header's string entry ``key``; malformed or hostile text (nesting
    thousands deep: the parser recurses per level) is a one-line ``ValueError`` naming it."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{key!r} is not valid JSON: {str(text)[:80]!r}") from None
    except RecursionError:
        raise ValueError(f"{key!r} is nested too deeply to be a senet header") from None


def per_channel(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """Normalisation statistics (mean or std) for ``channels`` input channels from those of
    another count, the way :func:`~senet.models._pretrained.adapt_input_conv` adapts RGB
    weights: their average for one (grey) channel, repeated in turn for more."""
    values = tuple(values)
    if len(values) == channels or not values:
        return values
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(channels))


@dataclass(frozen=True)
class PretrainedCfg:
    """How a model's inputs are prepared and what its outputs mean (timm's ``pretrained_cfg``).

    ``crop_pct``: evaluation resizes the short side to ``input side / crop_pct`` and centre-crops
    ``input_size`` (0.875: 256 -> 224). ``test_input_size`` / ``test_crop_pct``: what the weights
    evaluate better with (timm's). ``min_input_size``: ``(C, H, W)``, the smallest input the network
    accepts (``None``: any). ``classes``: the names of the outputs, when known. ``first_conv`` /
    ``classifier``: the modules that depend on the input channels / the classes.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    num_classes: int = 1000
    classes: tuple[str, ...] | None = None
    min_input_size: tuple[int, int, int] | None = None
    test_input_size: tuple[int, int, int] | None = None
    test_crop_pct: float | None = None
    first_conv: str = "stem.conv1"
    classifier: str = "fc"

    def __post_init__(self) -> None:
        check_entries(asdict(self))
        for f in fields(self):  # JSON lists become the tuples the type holds
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    # --- the shapes it takes elsewhere -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """``model.pretrained_cfg``: timm's keys and value shapes (the builder adds
        ``architecture``, ``tag`` and the weights' location)."""
        out = asdict(self)
        out.update(crop_mode="center", fixed_input_size=False)
        return out

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> PretrainedCfg:
        """The config of a ``pretrained_cfg`` dict (senet's or timm's; keys of no field are
        ignored, and so are ``None`` values: the default stays)."""
        return cls().updated(cfg)

    def updated(self, entries: Mapping[str, Any]) -> PretrainedCfg:
        """This config with ``entries`` applied (a released weights' config, a file's recorded
        entries, a repo's ``pretrained_cfg`` ...); keys of no field and ``None`` values are ignored."""
        names = {f.name for f in fields(self)}
        known = {k: v for k, v in entries.items() if k in names and v is not None}
        return replace(self, **known) if known else self

    def to_metadata(self) -> dict[str, str]:
        """The :data:`RECORDED` entries that are set, as a file header's JSON strings."""
        return {k: json.dumps(_plain(getattr(self, k))) for k in RECORDED if getattr(self, k) is not None}

    @staticmethod
    def metadata_entries(meta: Mapping[str, str]) -> dict[str, Any]:
        """The :data:`RECORDED` entries a header holds (the inverse of :meth:`to_metadata`), as
        JSON values, checked: apply them with :meth:`updated` (a file may record only some)."""
        return check_entries({k: json_value(meta[k], k) for k in RECORDED if k in meta})

    # --- derived values ----------------------------------------------------------------------

    @property
    def crop(self) -> int:
        """The side of the evaluation crop."""
        return self.input_size[-1]

    @property
    def resize(self) -> int:
        """The short side before the centre crop (256 for a 224 crop at ``crop_pct=0.875``)."""
        return max(self.crop, int(math.floor(self.crop / self.crop_pct)))

    def for_channels(self, channels: int) -> PretrainedCfg:
        """This config for a model of ``channels`` input channels: the sizes' channels, and
        mean and std adapted as the first convolution's weights are (:func:`per_channel`)."""
        size = lambda s: None if s is None else (channels, *s[1:])  # noqa: E731
        return replace(self, input_size=size(self.input_size), min_input_size=size(self.min_input_size),
                       test_input_size=size(self.test_input_size), mean=per_channel(self.mean, channels),
                       std=per_channel(self.std, channels))

"""What a weight file says about itself: senet's safetensors metadata, read and written.

A senet-native file records ``format=senet``, the model name and keywords (enough for
``create_model`` to rebuild the network from the file alone), the senet version, and the
model's pretrained config: how its inputs are prepared (input size, mean, std, ``crop_pct``,
interpolation) and what its outputs mean (class names). Every value is validated on reading,
so a damaged or foreign header is a one-line :class:`~senet.errors.WeightsError`, never a
``TypeError`` deep in a model constructor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from senet.errors import WeightsError
from senet.utils.integrity import DIGEST_KEY

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: Pretrained-config entries a senet file may record, with a check of each value's JSON form.
DATA_KEYS: dict[str, Callable[[Any], bool]] = {
    "classes": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
    "mean": lambda v: isinstance(v, list) and bool(v) and all(_number(x) for x in v),
    "std": lambda v: isinstance(v, list) and bool(v) and all(_number(x) and x > 0 for x in v),
    "input_size": lambda v: isinstance(v, list) and len(v) == 3 and all(_int(x) and x > 0 for x in v),
    "crop_pct": lambda v: _number(v) and 0 < v <= 1,
    "interpolation": lambda v: v in INTERPOLATIONS,
}
_DATA_EXPECTED = {
    "classes": "a list of strings",
    "mean": "a list of numbers",
    "std": "a list of positive numbers",
    "input_size": "[channels, height, width], positive integers",
    "crop_pct": "a number in (0, 1]",
    "interpolation": f"one of {', '.join(INTERPOLATIONS)}",
}
#: The metadata key of a pruned network's layer widths (see :func:`check_widths`).
WIDTHS_KEY = "widths"
#: Bounds of a ``widths`` entry: the most layers it may name and the widest layer it may give.
MAX_WIDTH_ENTRIES = 65536
MAX_WIDTH = 1 << 20
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
#: Metadata keys of a senet-native file; ``save_weights(metadata=...)`` may not use them.
RESERVED_METADATA = ("format", "model", "kwargs", "senet_version", WIDTHS_KEY, DIGEST_KEY, *DATA_KEYS)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class WeightsMetadata:
    """What a weight file says about itself.

    ``format`` is ``"senet"`` or the name of the foreign layout it was read as (``"timm"``,
    ``"legacy"``). For senet files ``model`` and ``kwargs`` rebuild the network
    (``create_model(model, **kwargs)``) and ``data`` holds the pretrained-config entries the
    file records (:data:`DATA_KEYS`); for the others ``model`` is ``None`` and ``kwargs`` is the
    layout implied by the source project. ``widths``: a pruned network's layers whose widths
    differ from ``create_model(model, **kwargs)``'s (:func:`check_widths`), ``None`` otherwise.
    """

    format: str
    model: str | None
    kwargs: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    senet_version: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    widths: dict[str, tuple[int, int]] | None = None

    @property
    def classes(self) -> list[str] | None:
        return self.data.get("classes")

    @property
    def mean(self) -> tuple[float, ...] | None:
        return tuple(self.data["mean"]) if "mean" in self.data else None

    @property
    def std(self) -> tuple[float, ...] | None:
        return tuple(self.data["std"]) if "std" in self.data else None


def _json_field(meta: Mapping[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, TypeError):
        raise WeightsError(f"{source}: metadata {key!r} is not valid JSON: {str(meta[key])[:80]!r}") from None
    except RecursionError:  # hostile nesting ([[[[... thousands deep): json recurses per level
        raise WeightsError(f"{source}: metadata {key!r} is nested too deeply to be a senet header") from None


def check_data(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` (pretrained-config entries as JSON values) checked against :data:`DATA_KEYS`."""
    out = {}
    for key, value in data.items():
        if key not in DATA_KEYS:
            raise WeightsError(f"{source}: unknown pretrained-config entry {key!r}; known: {', '.join(DATA_KEYS)}")
        if not DATA_KEYS[key](value):
            raise WeightsError(f"{source}: metadata {key!r} must be {_DATA_EXPECTED[key]}, got {value!r}")
        out[key] = value
    if "mean" in out and "std" in out and len(out["mean"]) != len(out["std"]):
        raise WeightsError(f"{source}: metadata 'mean' and 'std' have different lengths")
    return out


def check_widths(value: Any, source: str) -> dict[str, tuple[int, int]]:
    """A pruned network's layer widths: a JSON object mapping module paths (``layer1.0.conv1``)
    to ``[in, out]`` channel counts (a batch norm's two are equal), at most
    :data:`MAX_WIDTH_ENTRIES` layers of widths 1 to :data:`MAX_WIDTH`. Only the form is checked
    here; that the layers exist, may be narrowed that way and fit the file's tensors is the
    builder's check (:mod:`senet.models._narrow`)."""
    if not isinstance(value, dict) or not value:
        raise WeightsError(f"{source}: metadata {WIDTHS_KEY!r} must be a non-empty JSON object of layer widths")
    if len(value) > MAX_WIDTH_ENTRIES:
        raise WeightsError(f"{source}: metadata {WIDTHS_KEY!r} names {len(value)} layers; at most "
                           f"{MAX_WIDTH_ENTRIES} are read")
    out = {}
    for path, pair in value.items():
        if len(path) > 512 or not _MODULE_PATH.fullmatch(path):
            raise WeightsError(f"{source}: metadata {WIDTHS_KEY!r} names {path[:80]!r}, which is not a module path")
        if not (isinstance(pair, list) and len(pair) == 2 and all(_int(n) and 1 <= n <= MAX_WIDTH for n in pair)):
            raise WeightsError(f"{source}: metadata {WIDTHS_KEY!r} gives {path} {str(pair)[:80]}; expected "
                               f"[in, out] channel counts, integers from 1 to {MAX_WIDTH}")
        out[path] = (pair[0], pair[1])
    return out


def decode(meta: Mapping[str, str], source: str) -> WeightsMetadata:
    """The :class:`WeightsMetadata` of a senet-native safetensors header."""
    kwargs = _json_field(meta, "kwargs", source) if "kwargs" in meta else {}
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{source}: metadata 'kwargs' must be a JSON object")
    model = meta.get("model")
    if model is not None and not (isinstance(model, str) and model.isidentifier()):
        raise WeightsError(f"{source}: metadata 'model' is not a model name: {model[:80]!r}")
    data = check_data({k: _json_field(meta, k, source) for k in DATA_KEYS if k in meta}, source)
    widths = check_widths(_json_field(meta, WIDTHS_KEY, source), source) if WIDTHS_KEY in meta else None
    return WeightsMetadata(
        format="senet",
        model=model,
        kwargs=kwargs,
        data=data,
        senet_version=meta.get("senet_version"),
        extra={k: v for k, v in meta.items() if k not in RESERVED_METADATA},
        widths=widths,
    )


def encode(
    model: str, kwargs: Mapping[str, Any], data: Mapping[str, Any], version: str,
    extra: Mapping[str, str] | None = None, widths: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, str]:
    """The safetensors header of a senet-native file (the inverse of :func:`decode`)."""
    try:
        kwargs_json = json.dumps(dict(kwargs), sort_keys=True)
    except TypeError as e:
        raise WeightsError(f"model keywords of {model} cannot be stored as JSON: {e}") from None
    meta = {"format": "senet", "model": model, "kwargs": kwargs_json, "senet_version": version}
    if widths:
        plain = {path: [int(n) for n in pair] for path, pair in sorted(widths.items())}
        try:
            check_widths(plain, model)
        except WeightsError as e:
            raise ValueError(str(e)) from None
        meta[WIDTHS_KEY] = json.dumps(plain, separators=(",", ":"))
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items() if v is not None}
    try:
        checked = check_data(plain, model)
    except WeightsError as e:
        raise ValueError(str(e)) from None
    meta.update({k: json.dumps(v) for k, v in checked.items()})
    for key, value in (extra or {}).items():
        if key in RESERVED_METADATA:
            raise ValueError(f"metadata key {key!r} is reserved; reserved: {', '.join(RESERVED_METADATA)}")
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map strings to strings, got {key!r}: {value!r}")
        meta[key] = value
    return meta

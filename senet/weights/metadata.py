"""What a file senet wrote says about itself: the senet header, read and written.

A senet-native weight file (its safetensors metadata) and a model senet exported (ONNX
``metadata_props``, TorchScript's ``senet.json``) carry the same header: ``format=senet``, the
model name and keywords (enough for ``create_model`` to rebuild the network from the file
alone), the senet version, and the entries of the model's pretrained config a file records
(:data:`~senet.preprocess.RECORDED`: how its inputs are prepared and what its outputs mean,
checked by :class:`~senet.preprocess.PretrainedCfg`). Every value is validated on reading, so
a damaged or foreign header is a one-line :class:`~senet.errors.WeightsError`, never a
``TypeError`` deep in a model constructor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from senet.errors import WeightsError
from senet.preprocess import RECORDED, PretrainedCfg, check_entries, json_value
from senet.utils.integrity import DIGEST_KEY

#: Metadata keys of a senet-native file; ``save_weights(metadata=...)`` may not use them.
RESERVED_METADATA = ("format", "model", "kwargs", "senet_version", DIGEST_KEY, *RECORDED)


@dataclass(frozen=True)
class WeightsMetadata:
    """What a weight file (or a model senet exported) says about itself.

    ``format`` is ``"senet"`` or the name of the foreign layout it was read as (``"timm"``,
    ``"legacy"``). For senet files ``model`` and ``kwargs`` rebuild the network
    (``create_model(model, **kwargs)``) and ``data`` holds the pretrained-config entries the
    file records (:data:`~senet.preprocess.RECORDED`, as JSON values; apply them with
    :meth:`PretrainedCfg.updated <senet.preprocess.PretrainedCfg.updated>`); for the others
    ``model`` is ``None`` and ``kwargs`` is the layout implied by the source project.
    """

    format: str
    model: str | None
    kwargs: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    senet_version: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

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
        return json_value(meta[key], key)
    except ValueError as e:
        raise WeightsError(f"{source}: metadata {e}") from None


def check_data(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``data`` (pretrained-config entries as JSON values) checked (:func:`~senet.preprocess.check_entries`)."""
    try:
        return check_entries(data)
    except ValueError as e:
        raise WeightsError(f"{source}: metadata {e}") from None


def decode(meta: Mapping[str, str], source: str) -> WeightsMetadata:
    """The :class:`WeightsMetadata` of a senet-native safetensors header."""
    kwargs = _json_field(meta, "kwargs", source) if "kwargs" in meta else {}
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{source}: metadata 'kwargs' must be a JSON object")
    model = meta.get("model")
    if model is not None and not (isinstance(model, str) and model.isidentifier()):
        raise WeightsError(f"{source}: metadata 'model' is not a model name: {model[:80]!r}")
    try:
        data = PretrainedCfg.metadata_entries(meta)
    except ValueError as e:
        raise WeightsError(f"{source}: metadata {e}") from None
    return WeightsMetadata(
        format="senet",
        model=model,
        kwargs=kwargs,
        data=data,
        senet_version=meta.get("senet_version"),
        extra={k: v for k, v in meta.items() if k not in RESERVED_METADATA},
    )


def encode(
    model: str | None, kwargs: Mapping[str, Any], cfg: PretrainedCfg | None, version: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The senet header of a file (the inverse of :func:`decode`): ``model`` (``None``: a model
    not built by senet, without name or keywords) with ``kwargs``, and what ``cfg`` records."""
    meta = {"format": "senet"}
    if model is not None:
        try:
            kwargs_json = json.dumps(dict(kwargs), sort_keys=True)
        except TypeError as e:
            raise WeightsError(f"model keywords of {model} cannot be stored as JSON: {e}") from None
        meta.update(model=model, kwargs=kwargs_json)
    meta["senet_version"] = version
    meta.update(cfg.to_metadata() if cfg is not None else {})
    for key, value in (extra or {}).items():
        if key in RESERVED_METADATA:
            raise ValueError(f"metadata key {key!r} is reserved; reserved: {', '.join(RESERVED_METADATA)}")
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map strings to strings, got {key!r}: {value!r}")
        meta[key] = value
    return meta

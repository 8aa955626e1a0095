"""Loading the weights people already have, and saving senet's own.

* :func:`create_pretrained` (what ``create_model(name, pretrained=path)`` calls) builds the
  model with the layout the weights were trained with and loads them;
* :func:`load_weights` loads into an existing model;
* :func:`save_weights` / :func:`read_metadata` write and read senet-native ``.safetensors``;
* :func:`infer_model` names the registered model whose shapes a checkpoint has;
* :func:`convert_weights` turns a timm / Cadene checkpoint into a senet-native file.

Checkpoints of the ResNet family are recognised by :mod:`senet.weights.formats`; timm files
of the other families (VGG, MobileNet, Inception-ResNet-v2) are renamed by the ``from_timm``
of their family's module (:func:`family_converters`).
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from senet.errors import WeightsError
from senet.layers.se import SE_KWARGS
from senet.weights import formats, io

#: Metadata keys of a senet-native file; ``save_weights(metadata=...)`` may not use them.
RESERVED_METADATA = ("format", "model", "kwargs", "classes", "mean", "std", "senet_version")
#: Keywords that do not change what a trained model computes in eval mode.
_NEUTRAL_KWARGS = ("num_classes", "drop_rate", "zero_init_last")
_SHOW = 8

PathOrState = str | Path | Mapping[str, torch.Tensor]
#: A family module's ``from_timm``: timm's state dict of that family, renamed to senet's keys.
Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class WeightsMetadata:
    """What a weight file says about itself.

    ``format`` is ``"senet"``, ``"timm"`` or ``"legacy"``. For senet files ``model`` and
    ``kwargs`` rebuild the network (``create_model(model, **kwargs)``); for the others
    ``model`` is ``None`` and ``kwargs`` is the layout implied by the source project.
    """

    format: str
    model: str | None
    kwargs: dict[str, Any]
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    senet_version: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class LoadResult(NamedTuple):
    """Keys of the model the file did not fill, and keys of the file the model does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclass
class _Checkpoint:
    state: dict[str, torch.Tensor]  # senet keys
    origin: dict[str, str]  # senet key -> key in the file
    metadata: WeightsMetadata
    source: str
    family: str = "resnet"  # the model family whose keys a timm / Cadene file was mapped from

    def fits_family(self, family: str) -> bool:
        """Whether these keys can be loaded into a model of ``family`` (senet files: any)."""
        return self.metadata.format == "senet" or family == self.family

    @property
    def layout(self) -> dict[str, Any]:
        return {k: v for k, v in self.metadata.kwargs.items() if k != "num_classes"}

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.metadata.kwargs:
            return int(self.metadata.kwargs["num_classes"])
        fc = self.state.get("fc.weight")
        return int(fc.shape[0]) if fc is not None else 0


def _json_field(meta: Mapping[str, str], key: str, source: str) -> Any:
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise WeightsError(f"{source}: metadata {key!r} is not valid JSON: {meta[key][:80]!r}") from None


def _native_metadata(meta: Mapping[str, str], source: str) -> WeightsMetadata:
    kwargs = _json_field(meta, "kwargs", source) or {}
    classes = _json_field(meta, "classes", source)
    mean, std = _json_field(meta, "mean", source), _json_field(meta, "std", source)
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{source}: metadata 'kwargs' must be a JSON object")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise WeightsError(f"{source}: metadata 'classes' must be a JSON list of strings")
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and not (isinstance(value, list) and all(isinstance(x, (int, float)) for x in value)):
            raise WeightsError(f"{source}: metadata {name!r} must be a JSON list of numbers")
    return WeightsMetadata(
        format="senet",
        model=meta.get("model"),
        kwargs=kwargs,
        classes=classes,
        mean=tuple(mean) if mean is not None else None,
        std=tuple(std) if std is not None else None,
        senet_version=meta.get("senet_version"),
        extra={k: v for k, v in meta.items() if k not in RESERVED_METADATA},
    )


def family_converters() -> dict[str, Converter]:
    """family -> its module's ``from_timm``, for every registered family that has one. The
    ResNet family's timm / Cadene keys are handled by :mod:`senet.weights.formats` itself;
    VGG, MobileNet and Inception-ResNet-v2 bring their own renaming."""
    from senet.models.registry import list_models, model_info

    out: dict[str, Converter] = {}
    for info in map(model_info, list_models()):
        if info.family not in out:
            fn = getattr(importlib.import_module(info.fn.__module__), "from_timm", None)
            if fn is not None:
                out[info.family] = fn
    return out


def _open(weights: PathOrState) -> _Checkpoint:
    """Read ``weights`` and rename its keys to senet's. A file no format of
    :mod:`senet.weights.formats` recognises is offered to :func:`family_converters`; the one
    that renames most of its keys is taken."""
    if isinstance(weights, Mapping):
        source = "state dict"
        raw, meta = io.unwrap_state_dict(weights, source), {}
    else:
        source = str(weights)
        raw, meta = io.read_checkpoint(weights)
    try:
        fmt = formats.detect_format(raw, meta, source)
    except WeightsError as e:
        converters = family_converters()
        if not converters:
            raise
        return _converted(raw, meta, source, converters, e)
    state, origin = formats.to_senet_keys(raw, fmt, source)
    if meta.get("format") == "senet":
        metadata = _native_metadata(meta, source)
    else:
        metadata = WeightsMetadata(format=fmt, model=None, kwargs=formats.weights_layout(fmt, state, source),
                                   extra=dict(meta))
    return _Checkpoint(state, origin, metadata, source)


def _converted(
    raw: dict[str, torch.Tensor], meta: Mapping[str, str], source: str, converters: Mapping[str, Converter],
    unrecognised: WeightsError,
) -> _Checkpoint:
    best: tuple[int, str, dict[str, torch.Tensor]] | None = None
    for family, convert in converters.items():
        state = convert(raw)
        renamed = sum(new != old for new, old in zip(state, raw))
        if len(state) == len(raw) and renamed and (best is None or renamed > best[0]):
            best = (renamed, family, state)
    if best is None:
        raise WeightsError(f"{unrecognised}; nor are they timm keys of the {', '.join(converters)} "
                           f"famil{'y' if len(converters) == 1 else 'ies'}") from None
    _, family, state = best
    metadata = WeightsMetadata(format="timm", model=None, kwargs={}, extra=dict(meta))
    return _Checkpoint(state, dict(zip(state, raw)), metadata, source, family)


def _listing(what: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW]) + (f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")
    return f"{len(items)} {what}{'' if len(items) == 1 else 's'}: {shown}"


def _named(key: str, origin: Mapping[str, str]) -> str:
    src = origin.get(key, key)
    return key if src == key else f"{key} (file: {src})"


def _load_into(model: nn.Module, ckpt: _Checkpoint, *, strict: bool, skip: str | None = None) -> LoadResult:
    """Check names and shapes of ``ckpt`` against ``model`` and copy the tensors in."""
    own = model.state_dict()
    skipped = (lambda k: k.startswith(skip + ".")) if skip else (lambda k: False)
    missing = [k for k in own if k not in ckpt.state and not formats.is_batch_counter(k) and not skipped(k)]
    unexpected = [k for k in ckpt.state if k not in own and not skipped(k)]
    misshaped = [k for k in ckpt.state if k in own and not skipped(k) and ckpt.state[k].shape != own[k].shape]
    if misshaped or (strict and (missing or unexpected)):
        name = getattr(getattr(model, "senet_spec", None), "name", type(model).__name__)
        parts = []
        if missing:
            parts.append(_listing("missing key", missing))
        if unexpected:
            parts.append(_listing("unexpected key", [_named(k, ckpt.origin) for k in unexpected]))
        if misshaped:
            parts.append(_listing("mis-shaped key", [
                f"{_named(k, ckpt.origin)} file {list(ckpt.state[k].shape)} vs model {list(own[k].shape)}"
                for k in misshaped]))
        hint = ""
        if ckpt.metadata.format != "senet":
            try:
                hint = f"; the file holds {formats.describe(ckpt.state, ckpt.source)}"
            except WeightsError:
                pass
        elif ckpt.metadata.model:
            hint = f"; the file was saved from {ckpt.metadata.model}"
        raise WeightsError(f"{ckpt.source}: {ckpt.metadata.format} weights do not fit {name}: "
                           f"{'; '.join(parts)}{hint}")
    model.load_state_dict({k: v for k, v in ckpt.state.items() if k in own and not skipped(k)}, strict=False)
    return LoadResult(missing, unexpected)


def _classifier_name(model: nn.Module) -> str | None:
    """Name of the model's classifier: its last ``nn.Linear``."""
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def _warn_layout(weights: Mapping[str, Any], used: Mapping[str, Any], source: str, what: str, stacklevel: int) -> None:
    diff = [k for k in used if k in weights and k not in _NEUTRAL_KWARGS and not formats.same_value(used[k], weights[k])]
    if diff:
        pairs = ", ".join(f"{k}={used[k]!r} (weights: {weights[k]!r})" for k in diff)
        warnings.warn(f"{source}: {what} {pairs} differ from the layout the weights were trained with; "
                      "its outputs will differ from the source model's", stacklevel=stacklevel)


def _check_family(ckpt: _Checkpoint, name: str) -> None:
    from senet.models.registry import model_info

    family = model_info(name).family
    if not ckpt.fits_family(family):
        raise WeightsError(f"{ckpt.source}: these {ckpt.metadata.format} weights are of the {ckpt.family} family; "
                           f"{name} is a {family} model")


def create_pretrained(name: str, pretrained: PathOrState, *, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build ``name`` with the layout of ``pretrained`` and load it (``create_model(..., pretrained=)``).

    Args:
        name: a registered model name.
        pretrained: a senet ``.safetensors`` file, a timm or Cadene/timm-legacy checkpoint
            (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``), or a state dict.
        num_classes: classifier outputs; ``None`` keeps the file's. A different number loads
            everything but the classifier, which stays freshly initialised (with a warning).
        **kwargs: model keywords; they override the layout read from the weights (with a
            warning where they contradict it).

    Raises:
        WeightsError: unreadable file, or missing, unexpected or mis-shaped keys (all named).
    """
    return _create_from(_open(pretrained), name, num_classes, kwargs)


def _create_from(ckpt: _Checkpoint, name: str, num_classes: int | None, kwargs: dict[str, Any]) -> nn.Module:
    from senet.models.registry import create_model, model_info

    info = model_info(name)
    _check_family(ckpt, name)
    layout = ckpt.layout
    if not info.has_se:  # SE keywords are an error on a model without SE; its keys will be reported
        layout = {k: v for k, v in layout.items() if k not in SE_KWARGS}
    if ckpt.metadata.model and ckpt.metadata.model != name:
        warnings.warn(f"{ckpt.source}: weights saved from {ckpt.metadata.model}, loading into {name}", stacklevel=4)
    _warn_layout(layout, kwargs, ckpt.source, "keywords", stacklevel=5)
    file_classes = ckpt.num_classes
    if num_classes is None:
        num_classes = file_classes
    model = create_model(name, num_classes=num_classes, **{**layout, **kwargs})
    skip = None
    if num_classes != file_classes:
        skip = _classifier_name(model) or "fc"
        warnings.warn(f"{ckpt.source}: the file's classifier has {file_classes} classes, the model {num_classes}; "
                      f"loaded everything except the classifier '{skip}', which is freshly initialised",
                      stacklevel=4)
    _load_into(model, ckpt, strict=True, skip=skip)
    model.senet_weights = ckpt.metadata
    return model


def load_weights(model: nn.Module, path_or_state_dict: PathOrState, *, strict: bool = True) -> LoadResult:
    """Load a senet, timm or Cadene/timm-legacy checkpoint into an existing senet model
    (timm's VGG, MobileNet and Inception-ResNet-v2 keys too, into a model built by
    :func:`senet.create_model`).

    Warns if the model's layout (stride position, stem pooling, branch ReLU) differs from
    the one the weights were trained with: they would load, but compute something else.
    With ``strict=False`` missing and unexpected keys are returned instead of raised;
    mis-shaped keys are always an error.
    """
    ckpt = _open(path_or_state_dict)
    spec = getattr(model, "senet_spec", None)
    if spec is not None:
        _check_family(ckpt, spec.name)
    _warn_layout(ckpt.layout, formats.model_layout(model), ckpt.source, "the model's", stacklevel=3)
    return _load_into(model, ckpt, strict=strict)


def _json_list(value: Sequence[Any] | None, what: str, kind: type | tuple[type, ...]) -> str | None:
    if value is None:
        return None
    items = list(value)
    if not all(isinstance(x, kind) and not isinstance(x, bool) for x in items):
        raise ValueError(f"{what} must be a sequence of {getattr(kind, '__name__', 'numbers')}, got {value!r}")
    return json.dumps(items)


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights as senet-native ``.safetensors`` (atomically).

    The metadata records ``format=senet``, the model name and keywords (from
    ``model.senet_spec``, set by ``create_model``), the senet version and, when given, the
    class names and the input normalisation, so that ``create_model(name, pretrained=path)``
    rebuilds the same network. ``metadata`` adds string entries of your own.
    """
    from senet import __version__
    from senet.models.registry import create_model

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: senet writes .safetensors files; use a name ending in .safetensors")
    spec = getattr(model, "senet_spec", None)
    if spec is None:
        raise WeightsError("the model has no senet_spec: build it with senet.create_model to save it")
    try:
        kwargs_json = json.dumps(spec.kwargs, sort_keys=True)
    except TypeError as e:
        raise WeightsError(f"model keywords of {spec.name} cannot be stored as JSON: {e}") from None
    state = model.state_dict()
    with torch.device("meta"):
        reference = create_model(spec.name, **json.loads(kwargs_json)).state_dict()
    if {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in reference.items()}:
        raise WeightsError(f"the model no longer matches create_model({spec.name!r}, **{spec.kwargs}) "
                           "(modules replaced?); its weights could not be loaded back")
    n_classes = spec.kwargs.get("num_classes")
    if classes is not None and n_classes is not None and len(list(classes)) != n_classes:
        raise ValueError(f"{len(list(classes))} class names given for a model with {n_classes} classes")
    if (mean is None) != (std is None) or (mean is not None and len(list(mean)) != len(list(std))):
        raise ValueError("give mean and std together, with one value per input channel each")
    meta = {"format": "senet", "model": spec.name, "kwargs": kwargs_json, "senet_version": __version__}
    for key, value in (("classes", _json_list(classes, "classes", str)),
                       ("mean", _json_list(mean, "mean", (int, float))),
                       ("std", _json_list(std, "std", (int, float)))):
        if value is not None:
            meta[key] = value
    for key, value in (metadata or {}).items():
        if key in RESERVED_METADATA:
            raise ValueError(f"metadata key {key!r} is reserved; reserved: {', '.join(RESERVED_METADATA)}")
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map strings to strings, got {key!r}: {value!r}")
        meta[key] = value
    return io.write_safetensors(path, state, meta)


def read_metadata(path: str | Path) -> WeightsMetadata:
    """What a weight file says about itself; a senet file's header is read without its tensors."""
    path = Path(path)
    if path.is_file() and io.is_safetensors(path):
        meta = io.read_safetensors_metadata(path)
        if meta.get("format") == "senet":
            return _native_metadata(meta, str(path))
    return _open(path).metadata


def infer_model(weights: PathOrState) -> str:
    """The one registered model whose parameter names and shapes match the checkpoint.

    A senet file names its model in its metadata. Otherwise each registered model (with SE
    blocks if the checkpoint has them; of the ResNet family for timm / Cadene files) is
    built on the ``meta`` device (no memory, no initialisation) with the checkpoint's layout
    and compared key by key. Raises ``WeightsError`` when no model or several match.
    """
    ckpt = weights if isinstance(weights, _Checkpoint) else _open(weights)
    if ckpt.metadata.model:
        return ckpt.metadata.model
    return _match_model(ckpt)


def _match_model(ckpt: _Checkpoint) -> str:
    from senet.models.registry import create_model, list_models, model_info

    want = {k: tuple(v.shape) for k, v in ckpt.state.items() if not formats.is_batch_counter(k)}
    has_se = any(".se." in k for k in want)
    matches = []
    for name in list_models():
        info = model_info(name)
        # timm / Cadene keys map onto one family; SE keys need an SE model
        if info.has_se != has_se or not ckpt.fits_family(info.family):
            continue
        layout = ckpt.layout if info.has_se else {k: v for k, v in ckpt.layout.items() if k not in SE_KWARGS}
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=ckpt.num_classes, **layout)
        except (TypeError, ValueError):
            continue
        have = {k: tuple(v.shape) for k, v in model.state_dict().items() if not formats.is_batch_counter(k)}
        if have == want:
            matches.append(name)
    if len(matches) == 1:
        return matches[0]
    try:
        what = f" ({formats.describe(ckpt.state, ckpt.source)})"
    except WeightsError:
        what = ""
    if not matches:
        raise WeightsError(f"{ckpt.source}: no registered model has the shapes of these {ckpt.metadata.format} "
                           f"weights{what}; pass --model NAME (and its keywords) to see what differs")
    raise WeightsError(f"{ckpt.source}: the weights{what} fit several models ({', '.join(matches)}); "
                       "pass --model NAME")


def convert_weights(
    src: PathOrState,
    dst: str | Path,
    *,
    model: str | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Write ``src`` (timm, Cadene or senet weights) to ``dst`` as senet-native ``.safetensors``.

    ``model`` defaults to :func:`infer_model`; the layout of the source is stored with it,
    so that ``create_model(name, pretrained=dst)`` computes what the source model computed.
    Returns the loaded model.
    """
    ckpt = _open(src)
    name = model or infer_model(ckpt)
    net = _create_from(ckpt, name, None, kwargs)
    meta = ckpt.metadata
    save_weights(net, dst,
                 classes=classes if classes is not None else meta.classes,
                 mean=mean if mean is not None else meta.mean,
                 std=std if std is not None else meta.std,
                 metadata=meta.extra if meta.format == "senet" else None)
    return net

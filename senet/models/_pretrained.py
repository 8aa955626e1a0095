"""Weights for senet models: reading any supported checkpoint into a model, saving senet's own.

* :func:`open_checkpoint` reads a file (or a state dict) and renames its keys to senet's: a
  senet-native file is taken as it is; a foreign one (timm, Cadene) goes through the converters
  its family declared when it registered (:class:`~senet.models.registry.Family`);
* :func:`load_weights` loads into an existing model, :func:`save_weights` writes senet-native
  ``.safetensors`` (model name, keywords and pretrained config in the metadata), and
  :func:`infer_model` names the registered model whose shapes a checkpoint has;
* :func:`convert_weights` turns a timm / Cadene checkpoint into a senet-native file.

The file formats themselves live in :mod:`senet.weights` (which knows nothing of the models).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from senet.errors import WeightsError
from senet.layers.se import SE_KWARGS
from senet.models import registry
from senet.weights import io, metadata
from senet.weights.keymap import Foreign, is_batch_counter
from senet.weights.metadata import WeightsMetadata

#: Keywords that do not change what a trained model computes in eval mode.
NEUTRAL_KWARGS = ("num_classes", "drop_rate", "drop_path_rate", "zero_init_last", "global_pool")
_SHOW = 8

PathOrState = str | Path | Mapping[str, torch.Tensor]


class LoadResult(NamedTuple):
    """Keys of the model the file did not fill, and keys of the file the model does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclass
class Checkpoint:
    """A checkpoint in senet's keys, with what the file says about itself."""

    state: dict[str, torch.Tensor]
    origin: dict[str, str]  # senet key -> key in the file
    metadata: WeightsMetadata
    source: str
    family: str | None = None  # the family whose converter renamed a foreign file's keys
    describe: str = ""

    def fits_family(self, family: str) -> bool:
        """Whether these keys can go into a model of ``family`` (senet-native keys: any)."""
        return self.family is None or family == self.family

    @property
    def layout(self) -> dict[str, Any]:
        return {k: v for k, v in self.metadata.kwargs.items() if k != "num_classes"}

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.metadata.kwargs:
            return int(self.metadata.kwargs["num_classes"])
        fc = self.state.get("fc.weight")
        return int(fc.shape[0]) if fc is not None else 0


def open_checkpoint(weights: PathOrState) -> Checkpoint:
    """Read ``weights`` and rename its keys to senet's (see the module docstring)."""
    if isinstance(weights, Checkpoint):
        return weights
    if isinstance(weights, Mapping):
        source = "state dict"
        raw, meta = io.unwrap_state_dict(weights, source), {}
    else:
        source = str(weights)
        raw, meta = io.read_checkpoint(weights)
    if meta.get("format") == "senet":
        return Checkpoint(raw, {k: k for k in raw}, metadata.decode(meta, source), source)
    for family in registry.families().values():
        for convert in family.converters:
            foreign: Foreign | None = convert(raw, source)
            if foreign is not None:
                meta_ = WeightsMetadata(format=foreign.source, model=None, kwargs=dict(foreign.layout), extra=dict(meta))
                return Checkpoint(foreign.state, foreign.origin, meta_, source, family.name, foreign.describe)
    # senet's own keys without senet metadata (e.g. torch.save(model.state_dict()))
    return Checkpoint(raw, {k: k for k in raw}, WeightsMetadata("state dict", None, {}, extra=dict(meta)), source)


def _listing(what: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW]) + (f" ... and {len(items) - _SHOW} more" if len(items) > _SHOW else "")
    return f"{len(items)} {what}{'' if len(items) == 1 else 's'}: {shown}"


def _named(key: str, origin: Mapping[str, str]) -> str:
    src = origin.get(key, key)
    return key if src == key else f"{key} (file: {src})"


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first convolution's RGB weights for ``in_chans`` input channels (as timm does): summed
    for one channel, repeated and rescaled for more, so the response to a grey image keeps its size."""
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    repeat = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def _load_into(model: nn.Module, ckpt: Checkpoint, *, strict: bool, skip: str | None = None,
               family: registry.Family | None = None, first_conv: str | None = None) -> LoadResult:
    """Check names and shapes of ``ckpt`` against ``model`` and copy the tensors in (after the
    family's ``upgrade`` of older layouts, adapting the first convolution to ``in_chans``)."""
    upgrade = family.upgrade if family is not None else None
    own = model.state_dict()
    state = dict(ckpt.state)
    if upgrade is not None:
        state = upgrade(state)
    key = f"{first_conv}.weight" if first_conv else None
    if key in state and key in own and state[key].shape != own[key].shape and state[key].shape[1] == 3 \
            and state[key].shape[0] == own[key].shape[0]:
        state[key] = adapt_input_conv(state[key], own[key].shape[1])
    if ckpt.family is None and ckpt.metadata.format != "senet" and not set(state) & set(own):
        keys = list(state)
        shown = ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "")
        raise WeightsError(f"{ckpt.source}: unrecognised checkpoint; expected senet keys or a timm / Cadene "
                           f"layout senet reads, found: {shown or 'no keys'}")
    skipped = (lambda k: k.startswith(skip + ".")) if skip else (lambda k: False)
    missing = [k for k in own if k not in state and not is_batch_counter(k) and not skipped(k)]
    unexpected = [k for k in state if k not in own and not skipped(k)]
    misshaped = [k for k in state if k in own and not skipped(k) and state[k].shape != own[k].shape]
    if misshaped or (strict and (missing or unexpected)):
        name = getattr(getattr(model, "senet_spec", None), "name", type(model).__name__)
        parts = []
        if missing:
            parts.append(_listing("missing key", missing))
        if unexpected:
            parts.append(_listing("unexpected key", [_named(k, ckpt.origin) for k in unexpected]))
        if misshaped:
            parts.append(_listing("mis-shaped key", [
                f"{_named(k, ckpt.origin)} file {list(state[k].shape)} vs model {list(own[k].shape)}"
                for k in misshaped]))
        hint = ""
        if ckpt.describe:
            hint = f"; the file holds {ckpt.describe}"
        elif ckpt.metadata.model:
            hint = f"; the file was saved from {ckpt.metadata.model}"
        raise WeightsError(f"{ckpt.source}: {ckpt.metadata.format} weights do not fit {name}: "
                           f"{'; '.join(parts)}{hint}")
    model.load_state_dict({k: v for k, v in state.items() if k in own and not skipped(k)}, strict=False)
    return LoadResult(missing, unexpected)


def _warn_layout(weights: Mapping[str, Any], used: Mapping[str, Any], source: str, what: str, stacklevel: int) -> None:
    diff = [k for k in used if k in weights and k not in NEUTRAL_KWARGS and not _same(used[k], weights[k])]
    if diff:
        pairs = ", ".join(f"{k}={used[k]!r} (weights: {weights[k]!r})" for k in diff)
        warnings.warn(f"{source}: {what} {pairs} differ from the layout the weights were trained with; "
                      "its outputs will differ from the source model's", stacklevel=stacklevel)


def _same(a: Any, b: Any) -> bool:
    """Equality of keyword values as stored in JSON (a tuple equals the list it is saved as)."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b)


def check_family(ckpt: Checkpoint, name: str) -> None:
    family = registry.model_info(name).family
    if not ckpt.fits_family(family):
        raise WeightsError(f"{ckpt.source}: these {ckpt.metadata.format} weights are of the {ckpt.family} family; "
                           f"{name} is a {family} model")


def layout_for(ckpt: Checkpoint, info: registry.ModelInfo) -> dict[str, Any]:
    """The keywords ``info``'s model needs to compute what the checkpoint's source computed."""
    layout = ckpt.layout
    if not info.has_se:  # SE keywords are an error on a model without SE; its keys will be reported
        layout = {k: v for k, v in layout.items() if k not in SE_KWARGS}
    return layout


def load_pretrained(model: nn.Module, ckpt: Checkpoint, info: registry.ModelInfo, file_classes: int) -> None:
    """Load ``ckpt`` into ``model`` (built for it by the builder), leaving a classifier whose
    size differs from the file's freshly initialised."""
    skip = None
    if model.num_classes != file_classes:
        skip = info.cfg.classifier
        warnings.warn(f"{ckpt.source}: the file's classifier has {file_classes} classes, the model "
                      f"{model.num_classes}; loaded everything except the classifier '{skip}', which is freshly "
                      "initialised", stacklevel=4)
    _load_into(model, ckpt, strict=True, skip=skip, family=info.spec, first_conv=info.cfg.first_conv)
    model.senet_weights = ckpt.metadata


def load_weights(model: nn.Module, path_or_state_dict: PathOrState, *, strict: bool = True) -> LoadResult:
    """Load a senet, timm or Cadene/timm-legacy checkpoint into an existing senet model.

    Warns if the model's layout (stride position, stem pooling, branch ReLU) differs from the
    one the weights were trained with: they would load, but compute something else. With
    ``strict=False`` missing and unexpected keys are returned instead of raised; mis-shaped keys
    are always an error.
    """
    ckpt = open_checkpoint(path_or_state_dict)
    spec = getattr(model, "senet_spec", None)
    if spec is not None:
        check_family(ckpt, spec.name)
        family = registry.model_info(spec.name).spec
    else:
        family = registry.families().get(ckpt.family) if ckpt.family else None
    if family is not None and family.layout_of is not None:
        _warn_layout(ckpt.layout, family.layout_of(model), ckpt.source, "the model's", stacklevel=3)
    first_conv = registry.model_info(spec.name).cfg.first_conv if spec is not None else None
    return _load_into(model, ckpt, strict=strict, family=family, first_conv=first_conv)


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    metadata: Mapping[str, str] | None = None,
    allow_nonfinite: bool = False,
) -> Path:
    """Write ``model``'s weights as senet-native ``.safetensors`` (atomically; weights holding NaN
    or inf are refused unless ``allow_nonfinite``).

    The metadata records ``format=senet``, the model name and keywords (from
    ``model.senet_spec``, set by ``create_model``, with the head as it is now, after any
    ``reset_classifier``), the senet version and the pretrained config (input size,
    ``crop_pct``, interpolation, mean, std and, when known, the class names), so that
    ``create_model(pretrained=path)`` rebuilds the same network from the file alone.
    ``classes``, ``mean`` and ``std`` override the model's config; ``metadata`` adds string
    entries of your own.
    """
    from senet import __version__
    from senet.models._builder import create_model

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: senet writes .safetensors files; use a name ending in .safetensors")
    spec = getattr(model, "senet_spec", None)
    if spec is None:
        raise WeightsError("the model has no senet_spec: build it with senet.create_model to save it")
    kwargs = dict(spec.kwargs)
    if hasattr(model, "num_classes"):
        kwargs["num_classes"] = model.num_classes
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if pool is not None and pool != kwargs.get("global_pool", "avg"):
        kwargs["global_pool"] = pool
    header = metadata_for(model, kwargs, classes, mean, std, __version__, metadata)
    state = model.state_dict()
    with torch.device("meta"):
        reference = create_model(spec.name, **kwargs).state_dict()
    if {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in reference.items()}:
        raise WeightsError(f"the model no longer matches create_model({spec.name!r}, **{kwargs}) "
                           "(modules replaced?); its weights could not be loaded back")
    return io.write_safetensors(path, state, header, allow_nonfinite=allow_nonfinite)


def metadata_for(model: nn.Module, kwargs: Mapping[str, Any], classes: Sequence[str] | None,
                 mean: Sequence[float] | None, std: Sequence[float] | None, version: str,
                 extra: Mapping[str, str] | None) -> dict[str, str]:
    """The safetensors header :func:`save_weights` writes for ``model``."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    data = {k: cfg.get(k) for k in metadata.DATA_KEYS}
    if classes is not None:
        classes = list(classes)
        if not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be a sequence of str, got {classes!r}")
        data["classes"] = classes
    elif data.get("classes") is not None and len(data["classes"]) != kwargs.get("num_classes"):
        data["classes"] = None  # the head was replaced: its outputs are no longer those classes
    n_classes = kwargs.get("num_classes")
    if data.get("classes") is not None and n_classes is not None and len(data["classes"]) != n_classes:
        raise ValueError(f"{len(data['classes'])} class names given for a model with {n_classes} classes")
    if (mean is None) != (std is None) or (mean is not None and len(list(mean)) != len(list(std))):
        raise ValueError("give mean and std together, with one value per input channel each")
    if mean is not None:
        data["mean"], data["std"] = list(mean), list(std)
    return metadata.encode(model.senet_spec.name, kwargs, data, version, extra)


def read_metadata(path: str | Path) -> WeightsMetadata:
    """What a weight file says about itself; a senet file's header is read without its tensors."""
    path = Path(path)
    if path.is_file() and io.is_safetensors(path):
        meta = io.read_safetensors_metadata(path)
        if meta.get("format") == "senet":
            return metadata.decode(meta, str(path))
    return open_checkpoint(path).metadata


def infer_model(weights: PathOrState) -> str:
    """The one registered model whose parameter names and shapes match the checkpoint.

    A senet file names its model in its metadata. Otherwise each registered model (with SE
    blocks if the checkpoint has them; of the family whose converter read a foreign file) is
    built on the ``meta`` device (no memory, no initialisation) with the checkpoint's layout
    and compared key by key. Raises ``WeightsError`` when no model or several match.
    """
    from senet.models._builder import create_model

    ckpt = open_checkpoint(weights)
    if ckpt.metadata.model:
        registry.model_info(ckpt.metadata.model)
        return ckpt.metadata.model
    want = {k: tuple(v.shape) for k, v in ckpt.state.items() if not is_batch_counter(k)}
    has_se = any(".se." in k for k in want)
    matches = []
    for name in registry.list_models():
        info = registry.model_info(name)
        if info.has_se != has_se or not ckpt.fits_family(info.family):
            continue
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=ckpt.num_classes, **layout_for(ckpt, info))
        except (TypeError, ValueError):
            continue
        have = {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_batch_counter(k)}
        if have == want:
            matches.append(name)
    if len(matches) == 1:
        return matches[0]
    what = f" ({ckpt.describe})" if ckpt.describe else ""
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
    allow_nonfinite: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Write ``src`` (timm, Cadene or senet weights) to ``dst`` as senet-native ``.safetensors``.

    ``model`` defaults to :func:`infer_model`; the layout of the source is stored with it,
    so that ``create_model(pretrained=dst)`` computes what the source model computed.
    Returns the loaded model.
    """
    from senet.models._builder import create_model

    ckpt = open_checkpoint(src)
    net = create_model(model or infer_model(ckpt), pretrained=ckpt, **kwargs)
    meta = ckpt.metadata
    save_weights(net, dst, classes=classes if classes is not None else meta.classes,
                 mean=mean if mean is not None else meta.mean, std=std if std is not None else meta.std,
                 metadata=meta.extra if meta.format == "senet" else None, allow_nonfinite=allow_nonfinite)
    return net

"""Checkpoints and their tensors: reading any supported checkpoint, fitting it to a model and
loading it in; the header of senet's own files.

One loader path serves :func:`~senet.models.load_weights`, ``create_model(pretrained=... /
checkpoint_path=...)``, :func:`~senet.models.infer_model` and :func:`~senet.models.convert_weights`:

* :func:`open_checkpoint` reads a file (or a state dict) as it is. A senet-native file
  (``format=senet``) is only ever read that way; another one may also be in another project's
  keys (timm, Cadene): its :attr:`Checkpoint.foreign` readings are what the converters each
  family declared when it registered (:class:`~senet.models.registry.Family`) make of it;
* :func:`choose_reading` picks, for a model, the first reading whose keys and shapes fit it,
  **as it is first**: a state dict that already fits (``torch.save(model.state_dict())``) is
  never re-interpreted; the converters are only the guess for files that do not fit;
* :func:`_load_into` checks a reading's names and shapes against a model and copies the tensors in.

What model and keywords a file stands for is the builder's to decide
(:mod:`senet.models._builder`, which uses this module and never the reverse); writing files
is :mod:`senet.models._save`'s. The file formats themselves live in :mod:`senet.weights`
(which knows nothing of the models).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from numbers import Integral
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from senet.errors import WeightsError
from senet.models import registry
from senet.preprocess import PretrainedCfg
from senet.weights import io, metadata
from senet.weights.keymap import Foreign, is_batch_counter
from senet.weights.metadata import WeightsMetadata

#: Keywords that do not change what a trained model computes in eval mode.
NEUTRAL_KWARGS = ("num_classes", "drop_rate", "drop_path_rate", "zero_init_last", "global_pool")
_SHOW = 8

PathOrState = str | Path | Mapping[str, torch.Tensor]
Shapes = Mapping[str, Sequence[int]]


class LoadResult(NamedTuple):
    """Keys of the model the file did not fill, and keys of the file the model does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclass
class Checkpoint:
    """One reading of a checkpoint in senet's keys, with what the file says about itself.

    :func:`open_checkpoint` returns the file's tensors as they are (``family`` ``None``);
    :attr:`foreign` holds the readings of the same tensors as another project's layout.
    """

    state: dict[str, torch.Tensor]
    origin: dict[str, str]  # senet key -> key in the file
    metadata: WeightsMetadata
    source: str
    family: str | None = None  # the family whose converter renamed a foreign file's keys
    describe: str = ""

    @cached_property
    def foreign(self) -> tuple[Checkpoint, ...]:
        """The readings of these tensors by every family converter that recognises their keys
        (computed on first use; none for a senet-native file or a reading that is foreign itself)."""
        if self.family is not None or self.metadata.format == "senet":
            return ()
        out = []
        for family in registry.families().values():
            for convert in family.converters:
                found: Foreign | None = convert(self.state, self.source)
                if found is not None:
                    meta = WeightsMetadata(format=found.source, model=None, kwargs=dict(found.layout),
                                           extra=dict(self.metadata.extra))
                    out.append(Checkpoint(found.state, found.origin, meta, self.source, family.name, found.describe))
        return tuple(out)

    def readings(self, family: str | None = None) -> list[Checkpoint]:
        """The ways these tensors may go into a model of ``family`` (``None``: of any family), in
        the order they are tried: as they are, then the family's converters' readings."""
        return [self, *(r for r in self.foreign if family is None or r.family == family)]

    @property
    def layout(self) -> dict[str, Any]:
        return {k: v for k, v in self.metadata.kwargs.items() if k != "num_classes"}


def open_checkpoint(weights: PathOrState) -> Checkpoint:
    """Read ``weights`` (a path or a state dict) as it is (see the module docstring)."""
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
    return Checkpoint(raw, {k: k for k in raw}, WeightsMetadata("state dict", None, {}, extra=dict(meta)), source)


def classes_of(ckpt: Checkpoint, classifier: str) -> int:
    """The number of classes of the file's model: the rows of its classifier ``classifier.weight``
    (0 without one). A ``num_classes`` in its metadata must say the same: a header that
    contradicts the file's own tensors is refused before anything is built from it."""
    weight = ckpt.state.get(f"{classifier}.weight")
    rows = int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else 0
    if "num_classes" not in ckpt.metadata.kwargs:
        return rows
    claimed = ckpt.metadata.kwargs["num_classes"]
    if isinstance(claimed, bool) or not isinstance(claimed, Integral) or claimed != rows:
        held = f"its classifier '{classifier}.weight' has {rows} rows" if weight is not None else \
            f"it holds no classifier '{classifier}.weight'"
        raise WeightsError(f"{ckpt.source}: its metadata says num_classes={claimed!r}, but {held}")
    return rows


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


def _adaptable(file: Sequence[int], model: Sequence[int]) -> bool:
    """Whether a first convolution of shape ``file`` (RGB) adapts to ``model``'s input channels."""
    return len(file) == len(model) == 4 and file[1] == 3 and file[0] == model[0] and tuple(file[2:]) == tuple(model[2:])


@dataclass(frozen=True)
class Fit:
    """How a reading's keys and shapes compare with a model's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)
    matched: int = 0  # keys present in both, with the model's shape

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)


def _upgraded(ckpt: Checkpoint, family: registry.Family | None) -> dict[str, torch.Tensor]:
    """The reading's tensors after ``family``'s upgrade of older layouts of its own keys."""
    state = dict(ckpt.state)
    return family.upgrade(state) if family is not None and family.upgrade is not None else state


def compare(state: Shapes | Mapping[str, torch.Tensor], own: Shapes | Mapping[str, torch.Tensor], *,
            skip: str | None = None, first_conv: str | None = None) -> Fit:
    """Compare a reading's keys and shapes with a model's (``skip``: a module left out, the
    classifier being replaced; ``first_conv``: a module whose RGB weights adapt to other input
    channels). BatchNorm's batch counters may be absent from the file."""
    shape = lambda v: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)  # noqa: E731
    skipped = (lambda k: k.startswith(skip + ".")) if skip else (lambda k: False)  # noqa: E731
    conv = f"{first_conv}.weight" if first_conv else None
    missing = [k for k in own if k not in state and not is_batch_counter(k) and not skipped(k)]
    unexpected = [k for k in state if k not in own and not skipped(k)]
    misshaped, matched = [], 0
    for k in state:
        if k in own and not skipped(k):
            a, b = shape(state[k]), shape(own[k])
            if a == b or (k == conv and _adaptable(a, b)):
                matched += 1
            else:
                misshaped.append(k)
    return Fit(missing, unexpected, misshaped, matched)


def choose_reading(ckpt: Checkpoint, family: registry.Family | None,
                   shapes_of: Callable[[Checkpoint], Shapes | None], *, first_conv: str | None = None) -> Checkpoint:
    """The reading of ``ckpt`` a model of ``family`` loads: the first whose keys and shapes fit
    the model exactly, trying the tensors as they are first (``shapes_of(reading)``: the
    model's shapes when built for that reading, ``None`` if it cannot be). When none fits,
    the one with the most matching keys, to load partially (``strict=False``) or to report."""
    best: tuple[Checkpoint, int] | None = None
    for reading in ckpt.readings(family.name if family is not None else None):
        own = shapes_of(reading)
        if own is None:
            continue
        upgrade = family if family is not None else registry.families().get(reading.family or "")
        fit = compare(_upgraded(reading, upgrade), own, first_conv=first_conv)
        if fit.exact:
            return reading
        if best is None or fit.matched > best[1]:
            best = (reading, fit.matched)
    return best[0] if best is not None else ckpt


def other_family(ckpt: Checkpoint, fit: Fit, name: str, family: str) -> WeightsError | None:
    """The error for tensors that, as they are, hardly fit a model of ``family`` (fewer than half
    of them in its names and shapes) while another family's converter reads them: another
    project's weights of another family."""
    others = [r for r in ckpt.foreign if r.family != family]
    if ckpt.family is not None or not others or 2 * fit.matched >= len(ckpt.state):
        return None
    r = others[0]
    return WeightsError(f"{ckpt.source}: these {r.metadata.format} weights are of the {r.family} family; "
                        f"{name} is a {family} model" + (f" (the file holds {r.describe})" if r.describe else ""))


def _load_into(model: nn.Module, ckpt: Checkpoint, *, strict: bool, skip: str | None = None,
               family: registry.Family | None = None, first_conv: str | None = None) -> LoadResult:
    """Check names and shapes of the reading ``ckpt`` against ``model`` and copy the tensors in
    (after the family's ``upgrade`` of older layouts, adapting the first convolution to ``in_chans``)."""
    own = model.state_dict()
    state = _upgraded(ckpt, family if family is not None else registry.families().get(ckpt.family or ""))
    fit = compare(state, own, skip=skip, first_conv=first_conv)
    name = getattr(getattr(model, "senet_spec", None), "name", type(model).__name__)
    other = other_family(ckpt, fit, name, family.name) if family is not None else None
    if other is not None:
        raise other
    if ckpt.family is None and ckpt.metadata.format != "senet" and not set(state) & set(own):
        keys = list(state)
        shown = ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "")
        raise WeightsError(f"{ckpt.source}: unrecognised checkpoint; expected senet keys or a timm / Cadene "
                           f"layout senet reads, found: {shown or 'no keys'}")
    if fit.misshaped or (strict and (fit.missing or fit.unexpected)):
        parts = []
        if fit.missing:
            parts.append(_listing("missing key", fit.missing))
        if fit.unexpected:
            parts.append(_listing("unexpected key", [_named(k, ckpt.origin) for k in fit.unexpected]))
        if fit.misshaped:
            parts.append(_listing("mis-shaped key", [
                f"{_named(k, ckpt.origin)} file {list(state[k].shape)} vs model {list(own[k].shape)}"
                for k in fit.misshaped]))
        hint = ""
        if ckpt.describe:
            hint = f"; the file holds {ckpt.describe}"
        elif ckpt.metadata.model:
            hint = f"; the file was saved from {ckpt.metadata.model}"
        elif family is not None and any(r.family != family.name for r in ckpt.foreign):
            r = next(r for r in ckpt.foreign if r.family != family.name)
            hint = f"; its keys also read as {r.metadata.format} weights of the {r.family} family ({r.describe})"
        raise WeightsError(f"{ckpt.source}: {ckpt.metadata.format} weights do not fit {name}: "
                           f"{'; '.join(parts)}{hint}")
    key = f"{first_conv}.weight" if first_conv else None
    if key in state and key in own and state[key].shape != own[key].shape:
        state[key] = adapt_input_conv(state[key], own[key].shape[1])
    skipped = (lambda k: k.startswith(skip + ".")) if skip else (lambda k: False)  # noqa: E731
    model.load_state_dict({k: v for k, v in state.items() if k in own and not skipped(k)}, strict=False)
    return LoadResult(fit.missing, fit.unexpected)


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


def load_pretrained(model: nn.Module, ckpt: Checkpoint, info: registry.ModelInfo, file_classes: int) -> None:
    """Load the reading ``ckpt`` into ``model`` (built for it by the builder), leaving a
    classifier whose size differs from the file's freshly initialised."""
    skip = None
    if model.num_classes != file_classes:
        skip = info.cfg.classifier
        warnings.warn(f"{ckpt.source}: the file's classifier has {file_classes} classes, the model "
                      f"{model.num_classes}; loaded everything except the classifier '{skip}', which is freshly "
                      "initialised", stacklevel=4)
    _load_into(model, ckpt, strict=True, skip=skip, family=info.family_info, first_conv=info.cfg.first_conv)
    model.senet_weights = ckpt.metadata


class ClassNamesError(ValueError):
    """Class names that do not fit the model (as many names as it has outputs)."""


def saved_keywords(model: nn.Module) -> dict[str, Any]:
    """The keywords that rebuild ``model`` (built by ``create_model``) as it is now: its
    ``senet_spec`` with the head and pooling after any ``reset_classifier``."""
    kwargs = dict(model.senet_spec.kwargs)
    if hasattr(model, "num_classes"):
        kwargs["num_classes"] = model.num_classes
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if pool is not None and pool != kwargs.get("global_pool", "avg"):
        kwargs["global_pool"] = pool
    return kwargs


def file_header(model: nn.Module, *, classes: Sequence[str] | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The senet header of ``model`` (:mod:`senet.weights.metadata`): what :func:`save_weights`
    writes into a weight file and :func:`senet.export.export_model` into an exported one. Its
    pretrained config is ``model.pretrained_cfg`` with ``classes``, ``mean`` and ``std`` (one
    value per input channel) in place of its own; class names of a replaced head are dropped."""
    from senet.version import __version__

    spec = getattr(model, "senet_spec", None)
    kwargs = saved_keywords(model) if spec is not None else {}
    own = getattr(model, "pretrained_cfg", None)
    cfg = PretrainedCfg.from_dict(own) if own else None
    outputs = kwargs.get("num_classes", getattr(model, "num_classes", None))
    if classes is not None:
        classes = tuple(classes)
        if not all(isinstance(c, str) for c in classes):
            raise ClassNamesError(f"classes must be a sequence of str, got {list(classes)!r}")
        if outputs is not None and len(classes) != outputs:
            raise ClassNamesError(f"{len(classes)} class names given for a model with {outputs} classes")
    elif cfg is not None and cfg.classes is not None and len(cfg.classes) != outputs:
        cfg = replace(cfg, classes=None)  # the head was replaced: its outputs are no longer those classes
    channels = getattr(model, "in_chans", None)
    if (mean is None) != (std is None) or (mean is not None and len(list(mean)) != len(list(std))):
        raise ValueError("give mean and std together, with one value per input channel each")
    if mean is not None and channels is not None and len(list(mean)) != channels:
        raise ValueError(f"give one mean and std value per input channel: the model takes {channels}, "
                         f"got {len(list(mean))}")
    given = {"classes": classes, "mean": mean, "std": std}
    if any(v is not None for v in given.values()):
        cfg = (cfg or PretrainedCfg()).updated({k: tuple(v) for k, v in given.items() if v is not None})
    return metadata.encode(spec.name if spec is not None else None, kwargs, cfg, __version__, extra)


def read_metadata(path: str | Path) -> WeightsMetadata:
    """What a file says about itself: a weight file (a senet file's header is read without its
    tensors, another's is its layout) or a model senet exported (ONNX, TorchScript)."""
    path = Path(path)
    if path.is_file():
        header = io.read_safetensors_metadata(path) if io.is_safetensors(path) else io.read_exported_header(path)
        if header is not None and header.get("format") == "senet":
            return metadata.decode(header, str(path))
    return open_checkpoint(path).metadata

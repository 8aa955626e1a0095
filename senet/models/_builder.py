"""The one builder of every registered model: :func:`create_model` (timm's ``build_model_with_cfg``).

It resolves the name (senet's or timm's), checks every keyword against what the model's family
takes and the size of what it would build (:mod:`senet.models._keywords`, ``$SENET_MAX_MODEL_BYTES``),
builds the network, applies pretrained weights (a file, a state dict or the released ones),
sets ``pretrained_cfg`` and, with ``features_only``, returns the stage outputs instead of logits.

What to build from a weight file lives here too: the model a file names or fits
(:func:`infer_model`), the keywords it implies (:func:`file_keywords`) and the shapes a model
would have (:func:`model_shapes`), for ``create_model`` and :func:`load_weights`. The tensors
themselves are read and loaded by :mod:`senet.models._pretrained`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.errors import WeightsError
from senet.layers.se import SE_KWARGS
from senet.models import registry
from senet.models._features import FeatureNet
from senet.models._keywords import (EmptyLayer, SizeGuard, TooLarge, check_keywords, model_keywords,
                                    numeric_keywords, se_config)
from senet.models._narrow import WidthsError, narrow
from senet.models._pretrained import (
    Checkpoint,
    LoadResult,
    PathOrState,
    _load_into,
    _upgraded,
    _warn_layout,
    choose_reading,
    classes_of,
    compare,
    load_pretrained,
    open_checkpoint,
    other_family,
)
from senet.preprocess import PretrainedCfg
from senet.utils.limits import MODEL_ENV, human_bytes, max_model_bytes
from senet.weights.metadata import WIDTHS_KEY

Pretrained = bool | str | Path | Mapping[str, Any] | Checkpoint | None


def build(info: registry.ModelInfo, num_classes: int | None, kwargs: Mapping[str, Any],
          widths: Mapping[str, tuple[int, int]] | None = None) -> nn.Module:
    """``info``'s network with ``num_classes`` outputs (``None``: its default) and ``kwargs``,
    randomly initialised, with ``senet_spec`` set; ``widths``: a pruned network's narrower
    layers (:func:`~senet.models._narrow.narrow`, a :class:`~senet.models._narrow.WidthsError`
    if they do not fit). Every keyword is checked first
    (:func:`check_keywords`), and the construction stops before it allocates more than
    :func:`~senet.utils.limits.max_model_bytes` (a keyword that asks for more, such as
    ``num_classes=10**12`` or a weight file's header claiming it, is named with the size it
    would need) or a layer without channels."""
    kwargs = dict(kwargs)
    unknown = sorted(set(kwargs) - set(model_keywords(info)) - set(SE_KWARGS) - {"se"})
    if unknown:
        raise ValueError(f"{info.name} takes no keyword {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(model_keywords(info))}")
    if num_classes is None:
        num_classes = info.cfg.num_classes
    check_keywords(info, {"num_classes": num_classes, **kwargs})
    se_kwargs = {k: v for k, v in kwargs.items() if k in SE_KWARGS}
    se = se_config(info, kwargs)
    limit = max_model_bytes()
    try:
        with SizeGuard(limit):
            model = info.fn(num_classes=num_classes, se=se, **kwargs)
    except TypeError as e:  # e.g. a keyword the model function sets itself
        raise ValueError(f"{info.name}: {e}") from None
    except (TooLarge, EmptyLayer) as e:
        numeric = numeric_keywords(info.family_info.cls, info.has_se)
        given = {**({"num_classes": num_classes} if num_classes != info.cfg.num_classes else {}), **kwargs, **se_kwargs}
        named = ", ".join(f"{k}={v!r}" for k, v in given.items() if k in numeric and v is not None)
        what = f"{info.name} with {named}" if named else info.name
        if isinstance(e, EmptyLayer):
            raise ValueError(f"{what} would have a layer without channels (a tensor of shape {list(e.shape)}); "
                             "use larger values") from None
        raise ValueError(f"{what} would need at least {human_bytes(e.total)} for its weights (a tensor of shape "
                         f"{list(e.shape)} alone: {human_bytes(e.nbytes)}); create_model builds models of at most "
                         f"{human_bytes(limit)} (${MODEL_ENV} raises the limit)") from None
    if widths:
        narrow(model, widths)
    model.senet_spec = registry.ModelSpec(info.name, {"num_classes": num_classes, **kwargs, **se_kwargs},
                                          dict(widths) if widths else None)
    model._model_args = model.senet_spec.kwargs  # what timm's save_for_hf records to rebuild the model
    return model


def create_model(
    name: str | None = None,
    *,
    pretrained: Pretrained = False,
    checkpoint_path: str | Path | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, or timm's name for the same network
            (``seresnet50``, ``legacy_seresnet50``, ``seresnext50_32x4d`` ...: the layout timm
            builds), either with a pretrained tag selecting released weights as timm's
            (``seresnet50.a1_in1k``; untagged: the default ones); or a Hugging Face repo laid
            out as timm's ``save_for_hf`` writes it: ``hf-hub:ORG/NAME[@REVISION]`` or
            ``local-dir:FOLDER`` (its ``config.json`` names the architecture, keywords and
            preprocessing; ``pretrained=True`` loads its weights). May be omitted when
            ``pretrained`` is a file, which then names the model.
        pretrained: ``False`` / ``None``: random initialisation; ``True``: the released weights
            of the model (of its tag), fetched where timm fetches them (cached); a path (senet
            ``.safetensors``, or a timm / Cadene state dict as ``.pth`` / ``.safetensors``) or a
            state dict. The layout the weights were trained with (stride position, stem pooling)
            is read from the file and used unless ``kwargs`` set it (with a warning where they
            contradict it). If ``num_classes`` differs from the file's classifier, the
            classifier is left freshly initialised and everything else is loaded.
        checkpoint_path: a checkpoint loaded, strictly, after the model is built (e.g. your own
            fine-tuned weights, head included).
        features_only: return a :class:`~senet.models.FeatureNet`: the stage outputs
            ``out_indices`` (positions in the model's ``feature_info``, an int: the last that
            many, as in timm; default: all) as a list.
        num_classes: classifier outputs; ``None`` keeps the model's default (1000 for ImageNet
            models, 10 for CIFAR ones) or the file's.
        cache_dir: where downloaded weights are kept instead of the Hugging Face cache and
            torch.hub's folder (timm's ``cache_dir``).
        **kwargs: model options: ``drop_rate``, ``drop_path_rate``, ``global_pool``,
            ``in_chans`` and each family's own, and on SE models the SE options ``reduction``,
            ``se_bias``, ``squeeze``, ``gate``, ``placement``, ``se_stages``, ``se_divisor``.
            An unknown keyword is a ``ValueError`` listing the model's.

    Raises:
        ValueError: unknown model, pretrained tag or keyword, bad option values.
        WeightsError: an unreadable weight file, one that does not fit the model (keys named),
            or released weights that cannot be fetched (:class:`~senet.errors.WeightsUnavailable`:
            the message says which file to download and where to put it).
    """
    from senet.models import _repo

    ckpt: Checkpoint | None = None
    cfg_entries: dict[str, Any] = {}  # the pretrained config of a tag's weights or of a repo
    released: registry.Released | None = None
    repo = _repo.open_source(name, pretrained, cache_dir) if name is not None else None
    yours = bool(kwargs) or num_classes is not None  # keywords of the caller, not of a repo's config
    if repo is not None:
        args = dict(repo.model_args)
        repo_classes = args.pop("num_classes", None)
        num_classes = repo_classes if num_classes is None else num_classes
        name, kwargs, cfg_entries = repo.architecture, {**args, **kwargs}, dict(repo.cfg)
        ckpt = open_checkpoint(repo.weights) if repo.weights is not None else None
    elif pretrained is True:
        if name is None:
            raise ValueError("pretrained=True needs a model name")
        from senet.models._hub import fetch

        released = registry.released_weights(name)
        if released is None:
            raise WeightsError(f"{name} has no released weights; train it (senet train) or pass pretrained=PATH to "
                               "a weight file (released: senet.list_models(pretrained=True, include_aliases=True))")
        ckpt = open_checkpoint(fetch(f"{registry.split_tag(name)[0]}.{released.tag}", released, cache_dir))
    elif pretrained is not None and pretrained is not False:
        ckpt = open_checkpoint(pretrained)
    if name is None:
        if ckpt is None:
            raise ValueError("create_model needs a model name, or pretrained=FILE to read it from")
        name = infer_model(ckpt)
    canonical, alias_kwargs = registry.resolve_name(name)
    arch, tag = registry.split_tag(name)
    if released is None and tag is not None:  # a tag without weights still selects their config, as in timm
        released = registry.released_weights(name)
    if released is not None:
        cfg_entries = dict(released.cfg)
        if pretrained is True and released.classes is not None:
            cfg_entries["classes"] = released.classes
    info = registry.model_info(canonical)
    if repo is not None:  # a repo's keywords are a file's: checked as such, the error naming it
        try:
            check_keywords(info, repo.model_args)
        except ValueError as e:
            raise not_built(str(repo.config), "its model_args", info.name, e) from None
    kwargs = {**alias_kwargs, **kwargs}
    if ckpt is None:
        try:
            model = build(info, num_classes, kwargs)
        except ValueError as e:
            if repo is None or yours:
                raise
            raise not_built(str(repo.config), "its model_args", info.name, e) from None
        cfg = info.cfg.updated(cfg_entries)
    else:
        model = _build_for(ckpt, info, num_classes, kwargs)
        cfg = info.cfg.updated(cfg_entries).updated(model.senet_weights.data)
    model.pretrained_cfg = _pretrained_cfg(model, cfg, arch, released)
    if checkpoint_path is not None:
        load_weights(model, checkpoint_path)
    if features_only:
        features = FeatureNet(model, out_indices)
        features.pretrained_cfg = model.pretrained_cfg
        return features
    return model


def _pretrained_cfg(model: nn.Module, cfg: PretrainedCfg, architecture: str,
                    released: registry.Released | None) -> dict[str, Any]:
    """``model.pretrained_cfg``: ``cfg`` fitted to the model's head and input channels, with
    timm's ``architecture`` (the name it was built under), ``tag`` and weight locations."""
    classes = cfg.classes if cfg.classes is not None and len(cfg.classes) == model.num_classes else None
    # mean and std follow the input channels as the first convolution's weights do (timm's
    # transforms normalise with them: a 1-channel model needs one value each)
    out = replace(cfg.for_channels(model.in_chans), num_classes=model.num_classes, classes=classes).to_dict()
    out.update(architecture=architecture, tag=released.tag if released is not None else None)
    if released is not None:
        out.update(hf_hub_id=released.hf_hub_id, url=released.url)
    return out


def pruned_widths(ckpt: Checkpoint, info: registry.ModelInfo, num_classes: int | None,
                  file_classes: int) -> dict[str, tuple[int, int]] | None:
    """The narrower layers of a pruned network's file, the classifier's outputs those asked for
    (a new head over the pruned features, as for any file)."""
    widths = ckpt.metadata.widths
    head = info.cfg.classifier
    if widths and num_classes is not None and num_classes != file_classes and head in widths:
        widths = {**widths, head: (widths[head][0], num_classes)} if num_classes else \
            {k: v for k, v in widths.items() if k != head}
    return widths


def _build_for(ckpt: Checkpoint, info: registry.ModelInfo, num_classes: int | None,
               kwargs: dict[str, Any]) -> nn.Module:
    """``info``'s model built for the reading of ``ckpt`` that fits it (as it is first, see
    :func:`~senet.models._pretrained.choose_reading`), with that reading's layout and its weights."""
    check_keywords(info, kwargs if num_classes is None else {"num_classes": num_classes, **kwargs})
    if len(ckpt.readings(info.family)) > 1 or ckpt.foreign:
        # another reading is possible: compare the shapes of the model each would build (meta device)
        def shapes_of(reading: Checkpoint) -> dict[str, tuple[int, ...]] | None:
            try:
                layout, classes = file_keywords(reading, info)
            except WeightsError:
                return None
            return model_shapes(info.name, {"num_classes": classes, **layout, **kwargs})

        ckpt = choose_reading(ckpt, info.family_info, shapes_of, first_conv=info.cfg.first_conv)
        own = shapes_of(ckpt) if ckpt.family is None else None
        if own is not None:  # another family's weights: said before building a model they cannot go into
            other = other_family(ckpt, compare(ckpt.state, own, first_conv=info.cfg.first_conv), info.name, info.family)
            if other is not None:
                raise other
    layout, file_classes = file_keywords(ckpt, info)
    if ckpt.metadata.model and ckpt.metadata.model != info.name:
        warnings.warn(f"{ckpt.source}: weights saved from {ckpt.metadata.model}, loading into {info.name}",
                      stacklevel=4)
    _warn_layout(layout, kwargs, ckpt.source, "keywords", stacklevel=5)
    widths = pruned_widths(ckpt, info, num_classes, file_classes)
    try:
        model = build(info, num_classes if num_classes is not None else file_classes, {**layout, **kwargs}, widths)
    except WidthsError as e:
        raise not_built(ckpt.source, f"its {WIDTHS_KEY} metadata", info.name, e) from None
    except ValueError as e:
        if not kwargs:  # nothing but the file chose these keywords
            raise not_built(ckpt.source, "its metadata", info.name, e) from None
        raise
    load_pretrained(model, ckpt, info, file_classes)
    return model


def not_built(source: str, what: str, name: str, error: Exception) -> WeightsError:
    """The error for keywords a file gave (``what``: its metadata, a repo's model_args) that do
    not build model ``name``, naming the file."""
    return WeightsError(f"{source}: {what} does not build {name}: {str(error).removeprefix(name + ': ')}")


def file_keywords(ckpt: Checkpoint, info: registry.ModelInfo) -> tuple[dict[str, Any], int]:
    """The keywords ``info``'s model needs to compute what the reading's source computed (a senet
    header's, or the layout a converter implies), and the file's number of classes.

    They are checked as ``create_model`` checks its own (every integer in its range, the
    classifier and input channels those of the file's tensors) before anything is built: a
    header that does not fit is a ``WeightsError`` naming the file."""
    layout = ckpt.layout
    if not info.has_se:  # SE keywords are an error on a model without SE; its keys will be reported
        layout = {k: v for k, v in layout.items() if k not in SE_KWARGS}
    unknown = sorted(set(layout) - set(model_keywords(info)))
    if unknown:
        raise WeightsError(f"{ckpt.source}: its metadata holds model keyword(s) {', '.join(map(repr, unknown))} "
                           f"that {info.name} does not take in this senet version (it takes: "
                           f"{', '.join(model_keywords(info))})")
    classes = classes_of(ckpt, info.cfg.classifier)
    try:
        check_keywords(info, {"num_classes": classes, **layout})
    except ValueError as e:
        raise not_built(ckpt.source, "its metadata", info.name, e) from None
    conv = ckpt.state.get(f"{info.cfg.first_conv}.weight")
    if "in_chans" in layout and conv is not None and conv.ndim == 4 and conv.shape[1] != layout["in_chans"]:
        raise WeightsError(f"{ckpt.source}: its metadata says in_chans={layout['in_chans']!r}, but its first "
                           f"convolution '{info.cfg.first_conv}.weight' takes {conv.shape[1]} channels")
    return layout, classes


_SHAPES: dict[tuple[str, str, str], dict[str, tuple[int, ...]] | None] = {}


def model_shapes(name: str, kwargs: Mapping[str, Any],
                 widths: Mapping[str, tuple[int, int]] | None = None) -> dict[str, tuple[int, ...]] | None:
    """The state-dict shapes of ``create_model(name, **kwargs)`` (narrowed to a pruned
    network's ``widths``), built on the ``meta`` device (no memory, no initialisation) and
    remembered; ``None`` if those keywords do not build it."""
    key = (name, repr(sorted(kwargs.items())), repr(sorted((widths or {}).items())))
    if key not in _SHAPES:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "initializing zero-element tensors is a no-op"
                if widths:
                    rest = dict(kwargs)
                    model = build(registry.model_info(name), rest.pop("num_classes", None), rest, widths)
                else:
                    model = create_model(name, **kwargs)
        except (TypeError, ValueError):
            shapes = None
        else:
            shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if len(_SHAPES) >= 256:
            _SHAPES.clear()
        _SHAPES[key] = shapes
    return _SHAPES[key]


def load_weights(model: nn.Module, path_or_state_dict: PathOrState, *, strict: bool = True) -> LoadResult:
    """Load a senet, timm or Cadene/timm-legacy checkpoint into an existing senet model.

    Tensors whose names and shapes fit the model load as they are; only a file that does not
    fit is read as a timm / Cadene layout of the model's family. Warns if the model's layout
    (stride position, stem pooling, branch ReLU) differs from the one the weights were trained
    with: they would load, but compute something else. With ``strict=False`` missing and
    unexpected keys are returned instead of raised; mis-shaped keys are always an error.
    """
    ckpt = open_checkpoint(path_or_state_dict)
    spec = getattr(model, "senet_spec", None)
    info = registry.model_info(spec.name) if spec is not None else None
    family = info.family_info if info is not None else None
    first_conv = info.cfg.first_conv if info is not None else None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ckpt = choose_reading(ckpt, family, lambda _: own, first_conv=first_conv)
    if info is not None and ckpt.metadata.format == "senet":
        file_keywords(ckpt, info)  # a header that contradicts its own tensors is refused here too
    if family is None and ckpt.family is not None:
        family = registry.families()[ckpt.family]
    if family is not None and family.layout_of is not None and isinstance(model, family.cls):
        _warn_layout(ckpt.layout, family.layout_of(model), ckpt.source, "the model's", stacklevel=3)
    return _load_into(model, ckpt, strict=strict, family=family, first_conv=first_conv)


def _fits_exactly(reading: Checkpoint, info: registry.ModelInfo) -> bool:
    """Whether ``info``'s model, built with the reading's keywords, has exactly its keys and shapes."""
    state = _upgraded(reading, info.family_info)
    # cheap necessary conditions first: the model's first convolution, SE blocks if it has them
    if f"{info.cfg.first_conv}.weight" not in state or info.has_se != any(".se." in k for k in state):
        return False
    try:
        layout, classes = file_keywords(reading, info)
    except WeightsError:
        return False
    have = model_shapes(info.name, {"num_classes": classes, **layout})
    return have is not None and compare(state, have).exact


def infer_model(weights: PathOrState) -> str:
    """The one registered model whose parameter names and shapes match the checkpoint.

    A senet file names its model in its metadata. Otherwise each registered model is built on
    the ``meta`` device (no memory, no initialisation) and compared key by key with the file's
    tensors as they are, and only if no model has them, with the readings of its family's
    converters (with the layout each implies). Raises ``WeightsError`` when no model or
    several match.
    """
    ckpt = open_checkpoint(weights)
    if ckpt.metadata.model:
        registry.model_info(ckpt.metadata.model)
        return ckpt.metadata.model
    infos = {name: registry.model_info(name) for name in registry.list_models()}
    matches = [name for name, info in infos.items() if _fits_exactly(ckpt, info)]
    if not matches:  # only then guess a foreign layout
        matches = [name for name, info in infos.items()
                   if any(_fits_exactly(reading, info) for reading in ckpt.readings(info.family)[1:])]
    if len(matches) == 1:
        return matches[0]
    described = [r.describe for r in ckpt.foreign if r.describe]
    what = f" ({described[0]})" if described else ""
    if not matches:
        raise WeightsError(f"{ckpt.source}: no registered model has the shapes of these {ckpt.metadata.format} "
                           f"weights{what}; pass --model NAME (and its keywords) to see what differs")
    raise WeightsError(f"{ckpt.source}: the weights{what} fit several models ({', '.join(matches)}); "
                       "pass --model NAME")

"""The one builder of every registered model: :func:`create_model` (timm's ``build_model_with_cfg``).

It resolves the name (senet's or timm's), turns the SE keywords into the model's
:class:`~senet.layers.SEConfig` (the only place that does), checks every keyword against what
the model's family takes, builds the network, applies pretrained weights (a file, a state dict
or the released ones), sets ``pretrained_cfg`` and, with ``features_only``, returns the stage
outputs instead of logits.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from senet.errors import WeightsError
from senet.layers.se import SE_KWARGS, SEConfig
from senet.models import registry
from senet.models._features import FeatureNet
from senet.models._pretrained import (
    Checkpoint,
    check_family,
    infer_model,
    layout_for,
    load_pretrained,
    load_weights,
    open_checkpoint,
)
from senet.models._pretrained import _warn_layout

Pretrained = bool | str | Path | Mapping[str, Any] | Checkpoint | None


def model_keywords(info: registry.ModelInfo) -> list[str]:
    """The keywords ``create_model(info.name, ...)`` accepts besides the builder's own."""
    params = inspect.signature(info.spec.cls.__init__).parameters
    own = [p for p, v in params.items() if p not in ("self", "se") and v.kind is v.KEYWORD_ONLY]
    return sorted(own + (list(SE_KWARGS) if info.has_se else []))


def _se_config(info: registry.ModelInfo, kwargs: dict[str, Any]) -> SEConfig | None:
    """Pop the SE keywords from ``kwargs``: the model's :class:`SEConfig`, or ``None`` without SE."""
    se_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in SE_KWARGS}
    if "se" in kwargs:
        raise ValueError("pass SE settings as keywords (reduction=, placement=, ...), not se=")
    if not info.has_se:
        if se_kwargs:
            raise ValueError(f"SE options {sorted(se_kwargs)} given to {info.name}, a model without SE blocks; "
                             "use its se_ variant")
        return None
    se = SEConfig.from_kwargs(se_kwargs)
    allowed = info.spec.placements
    if se.placement not in allowed:
        raise ValueError(f"placement {se.placement!r} is not available in the {info.family} family; "
                         f"allowed: {', '.join(map(repr, allowed))}")
    return se


def build(info: registry.ModelInfo, num_classes: int | None, kwargs: Mapping[str, Any]) -> nn.Module:
    """``info``'s network with ``num_classes`` outputs (``None``: its default) and ``kwargs``,
    randomly initialised, with ``senet_spec`` set."""
    kwargs = dict(kwargs)
    unknown = sorted(set(kwargs) - set(model_keywords(info)) - set(SE_KWARGS) - {"se"})
    if unknown:
        raise ValueError(f"{info.name} takes no keyword {', '.join(map(repr, unknown))}; "
                         f"it takes: {', '.join(model_keywords(info))}")
    se_kwargs = {k: v for k, v in kwargs.items() if k in SE_KWARGS}
    se = _se_config(info, kwargs)
    if num_classes is None:
        num_classes = info.cfg.num_classes
    try:
        model = info.fn(num_classes=num_classes, se=se, **kwargs)
    except TypeError as e:  # e.g. a keyword the model function sets itself
        raise ValueError(f"{info.name}: {e}") from None
    model.senet_spec = registry.ModelSpec(info.name, {"num_classes": num_classes, **kwargs, **se_kwargs})
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
        if pretrained is True and released.dataset == "imagenet-1k":
            from senet.data.transforms import imagenet_classes

            cfg_entries["classes"] = imagenet_classes()
    info = registry.model_info(canonical)
    kwargs = {**alias_kwargs, **kwargs}
    if ckpt is None:
        model = build(info, num_classes, kwargs)
        cfg = info.cfg.updated(cfg_entries)
    else:
        model = _build_for(ckpt, info, num_classes, kwargs)
        cfg = info.cfg.updated(cfg_entries).updated(ckpt.metadata.data)
    model.pretrained_cfg = _pretrained_cfg(model, cfg, arch, released)
    if checkpoint_path is not None:
        load_weights(model, checkpoint_path)
    if features_only:
        features = FeatureNet(model, out_indices)
        features.pretrained_cfg = model.pretrained_cfg
        return features
    return model


def _pretrained_cfg(model: nn.Module, cfg: registry.PretrainedCfg, architecture: str,
                    released: registry.Released | None) -> dict[str, Any]:
    """``model.pretrained_cfg``: ``cfg`` fitted to the model's head and input channels, with
    timm's ``architecture`` (the name it was built under), ``tag`` and weight locations."""
    classes = cfg.classes if cfg.classes is not None and len(cfg.classes) == model.num_classes else None
    channels = lambda size: None if size is None else (model.in_chans, *size[1:])  # noqa: E731
    out = replace(cfg, num_classes=model.num_classes, classes=classes, input_size=channels(cfg.input_size),
                  min_input_size=channels(cfg.min_input_size), test_input_size=channels(cfg.test_input_size)).to_dict()
    out.update(architecture=architecture, tag=released.tag if released is not None else None)
    if released is not None:
        out.update(hf_hub_id=released.hf_hub_id, url=released.url)
    return out


def _build_for(ckpt: Checkpoint, info: registry.ModelInfo, num_classes: int | None,
               kwargs: dict[str, Any]) -> nn.Module:
    """``info``'s model with the layout of ``ckpt``, its weights loaded."""
    check_family(ckpt, info.name)
    layout = layout_for(ckpt, info)
    unknown = sorted(set(layout) - set(model_keywords(info)))
    if unknown:
        raise WeightsError(f"{ckpt.source}: its metadata holds model keyword(s) {', '.join(map(repr, unknown))} "
                           f"that {info.name} does not take in this senet version (it takes: "
                           f"{', '.join(model_keywords(info))})")
    if ckpt.metadata.model and ckpt.metadata.model != info.name:
        warnings.warn(f"{ckpt.source}: weights saved from {ckpt.metadata.model}, loading into {info.name}",
                      stacklevel=4)
    _warn_layout(layout, kwargs, ckpt.source, "keywords", stacklevel=5)
    file_classes = ckpt.num_classes
    try:
        model = build(info, num_classes if num_classes is not None else file_classes, {**layout, **kwargs})
    except ValueError as e:
        if not kwargs:  # nothing but the file chose these keywords
            raise WeightsError(f"{ckpt.source}: its metadata does not build {info.name}: {e}") from None
        raise
    load_pretrained(model, ckpt, info, file_classes)
    return model

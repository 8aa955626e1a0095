"""Writing weights: senet's own ``.safetensors`` (:func:`save_weights`, :func:`convert_weights`)
and Hugging Face repo folders as timm writes them (:func:`save_for_hf`, :func:`push_to_hf_hub`).

:func:`save_for_hf` writes a folder both senet and timm read: where the model is one timm
builds (a timm name such as ``seresnet50`` or ``legacy_seresnet50``, in the layout timm builds
it with), the architecture is that name and the tensors carry timm's keys; any other model
is written under its senet name with senet's keys (a folder only senet reads).
:mod:`senet.models._repo` reads such folders.

Every writer checks what it writes against the model the builder would make of it, so this
module sits above :mod:`senet.models._builder`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.errors import WeightsError
from senet.models import registry
from senet.models._builder import create_model, infer_model, model_shapes
from senet.models._pretrained import (NEUTRAL_KWARGS, PathOrState, file_header, open_checkpoint, read_metadata,
                                      saved_keywords)
from senet.models._repo import CONFIG, WEIGHT_FILES
from senet.weights import io


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
    ``classes``, ``mean`` and ``std`` (one value per input channel) override the model's
    config; ``metadata`` adds string entries of your own.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: senet writes .safetensors files; use a name ending in .safetensors")
    spec = getattr(model, "senet_spec", None)
    if spec is None:
        raise WeightsError("the model has no senet_spec: build it with senet.create_model to save it")
    header = file_header(model, classes=classes, mean=mean, std=std, extra=metadata)
    state = model.state_dict()
    kwargs = saved_keywords(model)
    if {k: tuple(v.shape) for k, v in state.items()} != model_shapes(spec.name, kwargs):
        raise WeightsError(f"the model no longer matches create_model({spec.name!r}, **{kwargs}) "
                           "(modules replaced?); its weights could not be loaded back")
    return io.write_safetensors(path, state, header, allow_nonfinite=allow_nonfinite)


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
    ckpt = open_checkpoint(src)
    net = create_model(model or infer_model(ckpt), pretrained=ckpt, **kwargs)
    meta = net.senet_weights  # the reading the model loaded
    # the file's own mean and std are in the model's pretrained config already, one per input channel
    save_weights(net, dst, classes=classes if classes is not None else meta.classes, mean=mean, std=std,
                 metadata=meta.extra if meta.format == "senet" else None, allow_nonfinite=allow_nonfinite)
    return net


def save_for_hf(model: nn.Module, save_directory: str | Path, *, model_config: Mapping[str, Any] | None = None,
                safe_serialization: bool | str = True) -> Path:
    """Write ``model`` as a Hugging Face repo folder: ``config.json`` and ``model.safetensors``
    (timm's ``save_for_hf``). Where timm builds the same network (see the module docstring) the
    folder is timm's: ``timm.create_model("hf-hub:...")`` / ``("local-dir:...")`` loads it.
    ``model_config`` adds entries to ``config.json`` (e.g. ``label_names``). senet always
    writes ``model.safetensors``; ``safe_serialization=False`` or ``"both"`` add timm's older
    ``pytorch_model.bin``. Upload the folder with ``huggingface_hub`` (or :func:`push_to_hf_hub`).
    Returns the folder.
    """
    from senet.utils.atomic import atomic_path, write_text

    spec = getattr(model, "senet_spec", None)
    if spec is None:
        raise WeightsError("the model has no senet_spec: build it with senet.create_model to save it")
    folder = Path(save_directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from senet.errors import fs_error

        raise fs_error(e, folder, "create") from None
    weights = folder / WEIGHT_FILES[0]
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    alias = timm_name_of(model)
    if alias is not None:
        state = model.state_dict()
        timm_state = registry.model_info(spec.name).family_info.writers[alias.keys](state)
        key_of = {id(v): k for k, v in timm_state.items()}
        for key in ("first_conv", "classifier"):  # named in timm's keys too
            if cfg.get(key) and f"{cfg[key]}.weight" in state:
                cfg[key] = key_of[id(state[f"{cfg[key]}.weight"])].removesuffix(".weight")
        io.write_safetensors(weights, timm_state, {"format": "pt"})
        architecture = alias.name
        model_args = {"num_classes": model.num_classes, "in_chans": model.in_chans,
                      "global_pool": model.global_pool.pool_type}
    else:
        save_weights(model, weights)
        architecture, model_args = spec.name, read_metadata(weights).kwargs
        timm_state = None
    if safe_serialization is False or safe_serialization == "both":
        with atomic_path(folder / WEIGHT_FILES[1]) as tmp:
            torch.save(timm_state if timm_state is not None else model.state_dict(), tmp)
    config = _config(model, cfg, architecture, model_args)
    config.update(model_config or {})
    write_text(folder / CONFIG, json.dumps(config, indent=2))
    return folder


def _config(model: nn.Module, cfg: Mapping[str, Any], architecture: str,
            model_args: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` in timm's layout."""
    keep = ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode", "fixed_input_size",
            "min_input_size", "test_input_size", "test_crop_pct", "first_conv", "classifier", "tag")
    pretrained = {k: cfg[k] for k in keep if cfg.get(k) is not None}
    pretrained["num_classes"] = model.num_classes
    config: dict[str, Any] = {"architecture": architecture, "num_classes": model.num_classes,
                              "num_features": model.num_features, "global_pool": model.global_pool.pool_type}
    if cfg.get("classes") is not None:
        config["label_names"] = list(cfg["classes"])
    config["model_args"] = dict(model_args)
    config["pretrained_cfg"] = pretrained
    return config


def timm_name_of(model: nn.Module) -> registry.Alias | None:
    """timm's name for ``model``'s network, if timm builds it and senet can write timm's keys: an
    alias of its model whose keywords (layout included) are the model's, up to the ones that do
    not change what it computes (classes, input channels, pooling, dropout)."""

    spec = model.senet_spec
    family = registry.model_info(spec.name).family_info

    def effective(m: nn.Module) -> dict[str, Any]:
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in m.senet_spec.kwargs.items()
                  if k not in NEUTRAL_KWARGS and k != "in_chans"}
        return {**kwargs, **(family.layout_of(m) if family.layout_of is not None else {})}

    own = effective(model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for alias in registry.aliases_of(spec.name):
        if alias.keys not in family.writers:
            continue
        with torch.device("meta"):
            ref = create_model(alias.name, num_classes=model.num_classes, in_chans=model.in_chans)
        if effective(ref) == own and {k: v.shape for k, v in ref.state_dict().items()} == shapes:
            return alias
    return None


def push_to_hf_hub(model: nn.Module, repo_id: str, *, commit_message: str = "Add model", token: str | None = None,
                   revision: str | None = None, private: bool = False, create_pr: bool = False,
                   model_config: Mapping[str, Any] | None = None) -> Any:
    """:func:`save_for_hf` into a temporary folder, then upload it to the Hub repo ``repo_id``
    (created if needed), as timm's ``push_to_hf_hub``. Returns huggingface_hub's commit info."""
    import tempfile

    from senet.models._hub import _huggingface_hub
    from senet.version import __version__

    hf = _huggingface_hub()
    api = hf.HfApi(token=token, library_name="senet", library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, model_config=model_config)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message)

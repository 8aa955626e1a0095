"""Hugging Face repo layout, as timm writes it (``save_for_hf``) and reads it (``hf-hub:`` and
``local-dir:`` model names): ``config.json`` (architecture, keywords, preprocessing) and
``model.safetensors`` (or timm's older ``pytorch_model.bin``).

:func:`save_for_hf` writes a folder both senet and timm read: where the model is one timm
builds (a timm name such as ``seresnet50`` or ``legacy_seresnet50``, in the layout timm builds
it with), the architecture is that name and the tensors carry timm's keys; any other model
is written under its senet name with senet's keys (a folder only senet reads).
:func:`open_source` reads such a folder, or one timm wrote, for ``create_model``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.errors import WeightsError, WeightsUnavailable
from senet.models import registry
from senet.preprocess import RECORDED
from senet.weights import io, metadata

SOURCES = ("hf-hub", "local-dir")
CONFIG = "config.json"
#: weight files of a repo, in timm's order of preference
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
MAX_CONFIG_BYTES = 64 << 20  # ImageNet-21k label names are ~1 MB; anything near this is not a config
#: what senet takes of a repo's pretrained_cfg (class names come from its label_names)
_CFG_KEYS = (*(k for k in RECORDED if k != "classes"), "test_input_size", "test_crop_pct")


@dataclass(frozen=True)
class Repo:
    """What a repo says: the model to build, its keywords and preprocessing, its weight file."""

    architecture: str
    model_args: dict[str, Any]
    cfg: dict[str, Any]  # pretrained-config entries (senet's keys)
    weights: Path | None
    config: Path | None = None  # the config.json it was read from, for messages


def parse_source(name: str) -> tuple[str, str] | None:
    """``("hf-hub", "org/name")`` for ``hf-hub:org/name`` (``local-dir:`` likewise); ``None``
    for a model name. An unknown prefix or an empty id is a ``ValueError``."""
    source, sep, ident = str(name).partition(":")
    if not sep:
        return None
    source = {"hf_hub": "hf-hub"}.get(source.lower(), source.lower())
    if source not in SOURCES:
        raise ValueError(f"unknown model source {source!r} in {name!r}; known: {', '.join(SOURCES)}")
    if not ident:
        raise ValueError(f"{name!r} names no repo or folder after '{source}:'")
    return source, ident


def open_source(name: str, pretrained: Any, cache_dir: str | Path | None = None) -> Repo | None:
    """The :class:`Repo` an ``hf-hub:`` / ``local-dir:`` name stands for (its weight file only
    with ``pretrained=True``); ``None`` for a plain model name."""
    parsed = parse_source(name)
    if parsed is None:
        return None
    if pretrained not in (True, False, None):
        raise ValueError(f"{name}: a repo brings its own weights; pass pretrained=True or False, not a file")
    source, ident = parsed
    if source == "local-dir":
        folder = Path(ident)
        config = folder / CONFIG
        if not config.is_file():
            raise WeightsError(f"{name}: no {config}" if folder.is_dir() else f"{name}: no such folder")
        weights = _local_weights(folder) if pretrained is True else None
    else:
        repo_id, _, revision = ident.partition("@")
        config = _hub_repo_file(name, repo_id, revision or None, (CONFIG,), cache_dir)
        weights = None
        if pretrained is True:
            weights = _hub_repo_file(name, repo_id, revision or None, WEIGHT_FILES, cache_dir)
    architecture, model_args, cfg = read_config(config)
    return Repo(architecture, model_args, cfg, weights, config)


def _local_weights(folder: Path) -> Path:
    for file in WEIGHT_FILES:
        if (folder / file).is_file():
            return folder / file
    raise WeightsError(f"{folder}: no weight file ({', '.join(WEIGHT_FILES)})")


def _hub_repo_file(name: str, repo_id: str, revision: str | None, files: tuple[str, ...],
                   cache_dir: str | Path | None) -> Path:
    """The first of ``files`` the repo has, through the cache (see :func:`senet.models._hub.hub_file`)."""
    from senet.models._hub import hub_file, is_missing_entry, reason

    for file in files:
        try:
            return hub_file(repo_id, file, revision=revision, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 (offline, missing repo, proxy ...)
            if is_missing_entry(e) and file != files[-1]:
                continue
            raise WeightsUnavailable(name, reason(e), f"download {CONFIG} and {' or '.join(WEIGHT_FILES[:2])} of "
                                     f"https://huggingface.co/{repo_id} where there is internet into a folder "
                                     "and name it", "local-dir:FOLDER", fetching=file) from None
    raise AssertionError("unreachable")


def read_config(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Architecture, model keywords and pretrained-config entries of a repo's ``config.json``
    (timm's layout, or its older single-dict one); anything malformed is a one-line
    :class:`WeightsError` naming the file."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise WeightsError(f"{path}: {path.stat().st_size} bytes is too large for a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not a JSON model config ({e})") from None
    except RecursionError:  # hostile nesting: the parser recurses per level
        raise WeightsError(f"{path}: not a JSON model config (nested too deeply)") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: not a JSON model config (an object is expected)")
    if "pretrained_cfg" in config:
        pretrained, model_args = config["pretrained_cfg"], config.get("model_args", {})
    else:  # timm's older layout: everything in one object
        pretrained, model_args = config, {}
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not isinstance(pretrained, dict) or not isinstance(model_args, dict):
        raise WeightsError(f"{path}: a model config needs 'architecture' (a model name), and 'pretrained_cfg' and "
                           "'model_args' as objects")
    model_args = dict(model_args)
    if "num_classes" in config:
        model_args.setdefault("num_classes", config["num_classes"])
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in pretrained.items() if k in _CFG_KEYS and v is not None}
    labels = config.get("label_names", pretrained.get("label_names", pretrained.get("classes", config.get("labels"))))
    if isinstance(labels, dict):  # timm allows {index: name}
        labels = [labels.get(str(i), labels.get(i)) for i in range(len(labels))]
    if labels is not None:
        cfg["classes"] = labels
    return architecture, model_args, metadata.check_data(cfg, str(path))


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
    from senet.models._pretrained import read_metadata, save_weights
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
        timm_state = registry.model_info(spec.name).spec.writers[alias.keys](state)
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
    from senet.models._builder import create_model
    from senet.models._pretrained import NEUTRAL_KWARGS

    spec = model.senet_spec
    family = registry.model_info(spec.name).spec

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
    from senet import __version__

    hf = _huggingface_hub()
    api = hf.HfApi(token=token, library_name="senet", library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, model_config=model_config)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message)

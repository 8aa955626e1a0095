"""Hugging Face repo layout, as timm writes it and reads it (``hf-hub:`` and ``local-dir:``
model names): ``config.json`` (architecture, keywords, preprocessing) and ``model.safetensors``
(or timm's older ``pytorch_model.bin``).

:func:`open_source` reads such a folder, or one timm wrote, for ``create_model``;
:func:`senet.models._save.save_for_hf` writes one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senet.errors import WeightsError, WeightsUnavailable
from senet.preprocess import RECORDED
from senet.weights import metadata

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

    error: Exception | None = None
    for file in files:  # a file the repo lacks: the next; any other failure: this one is unavailable
        try:
            return hub_file(repo_id, file, revision=revision, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 (offline, missing repo, proxy ...)
            error = e
            if not is_missing_entry(e):
                break
    raise WeightsUnavailable(name, reason(error), f"download {CONFIG} and {' or '.join(WEIGHT_FILES[:2])} of "
                             f"https://huggingface.co/{repo_id} where there is internet into a folder "
                             "and name it", "local-dir:FOLDER", fetching=file) from None


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

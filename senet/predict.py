"""Classifying images with a model: the evaluation transform of its pretrained config, batches,
top-k class names with probabilities (``senet predict``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from senet.data.decode import decode_image
from senet.data.imagefolder import is_image_name
from senet.data.transforms import check_eval_sizes, eval_crops, normalize
from senet.errors import DataError
from senet.lowprec import Agreement, AgreementMeter, at_precision
from senet.preprocess import PretrainedCfg


@dataclass(frozen=True)
class Prediction:
    """The ``k`` most probable classes of one image."""

    path: str
    classes: list[str]
    indices: list[int]
    probabilities: list[float]


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The images to classify: each file as given, each folder's images (recursively, by name)."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p.name))
            if not files:
                raise DataError(f"{item}: no image files in this folder")
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    return found


def _decoded(paths: Sequence[Path], skip_corrupt: bool, on_skip: Callable[[Path, str], None]) -> Iterator[tuple[Path, object]]:
    for path in paths:
        try:
            yield path, decode_image(path)
        except Exception as e:  # noqa: BLE001 (PIL raises many types for a bad file)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", reason)  # PIL names its buffer
            if not skip_corrupt:
                raise DataError(f"{path}: not a readable image ({reason}); pass --skip-corrupt to skip it") from None
            on_skip(path, reason)


def predict(
    model: nn.Module,
    paths: Sequence[Path],
    cfg: PretrainedCfg,
    *,
    topk: int = 5,
    batch_size: int = 32,
    ten_crop: bool = False,
    skip_corrupt: bool = False,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    on_skip: Callable[[Path, str], None] = lambda path, reason: None,
    on_agreement: Callable[[Agreement], None] = lambda agreement: None,
    progress: Callable[[int], None] = lambda n: None,
) -> Iterator[Prediction]:
    """Top-``topk`` predictions of ``model`` for each image of ``paths``, in order (10-crop
    averages the crops' probabilities). An unreadable file is a ``DataError``, or with
    ``skip_corrupt`` reported to ``on_skip`` and left out.

    ``precision="bf16"`` runs the model under bf16 autocast (refused on a device without bf16
    units, :func:`senet.lowprec.check_precision`); the first batch is also run in fp32 and
    ``on_agreement`` gets how far the two agree there (``senet eval --precision`` measures a
    whole split)."""
    if topk < 1 or batch_size < 1:
        raise ValueError("topk and batch_size must be >= 1")
    low = at_precision(model, precision, device) if precision != "fp32" else None
    model.eval()
    check_eval_sizes(model, cfg, batch_size=batch_size, images=len(paths), ten_crop=ten_crop)
    model.to(device)
    names = cfg.classes
    batch: list[tuple[Path, torch.Tensor]] = []
    checked = False

    def run(items: list[tuple[Path, torch.Tensor]]) -> Iterator[Prediction]:
        nonlocal checked
        x = normalize(torch.cat([v for _, v in items]).to(device), cfg)
        with torch.inference_mode():
            probs = (low(x) if low is not None else model(x)).float().softmax(1)
            probs = probs.view(len(items), -1, probs.shape[-1]).mean(1)
            if low is not None and not checked:  # a spot check against fp32
                checked = True
                ref = model(x).float().softmax(1)
                meter = AgreementMeter()
                meter.update(ref.view(len(items), -1, ref.shape[-1]).mean(1).log(), probs.log())
                on_agreement(meter.result())
        k = min(topk, probs.shape[-1])
        top = probs.topk(k, dim=1)
        for (path, _), p, i in zip(items, top.values.tolist(), top.indices.tolist(), strict=True):
            labels = [names[j] if names is not None and j < len(names) else f"class {j}" for j in i]
            yield Prediction(str(path), labels, i, p)
        progress(len(items))

    for path, image in _decoded(paths, skip_corrupt, on_skip):
        batch.append((path, eval_crops(image, cfg, ten_crop=ten_crop)))
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)

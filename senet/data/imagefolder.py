"""ImageFolder trees ``root/{train,test|val}/<class>/<image>``, decoded into uint8 arrays.

Odd images are handled on purpose (:func:`decode_image`): grayscale (``1``, ``L``, 16-bit
``I;16`` / ``I``), palette (``P``, with or without transparency), ``LA`` / ``RGBA`` / ``PA`` and
CMYK / YCbCr images all become RGB explicitly; transparency is composited onto black.
A file that cannot be decoded (corrupt, truncated, unsupported) is a :class:`DataError` naming
it, or, with ``skip_corrupt``, is left out and listed. Non-image files and hidden files
(``.DS_Store``, ``Thumbs.db``, ``README``) are ignored; an empty class folder is an error;
every image must have the dataset's size; train and test must have the same classes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from senet.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}
_PARALLEL_MIN = 4000  # fewer files than this decode in-process
_CHUNK = 1000


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_tree(folder: Path) -> bool:
    """True when ``folder`` holds split folders (``train``, ``test`` or ``val``)."""
    return folder.is_dir() and any((folder / name).is_dir() for name in ("train", "test", "val"))


def find_tree_root(folder: Path) -> Path:
    """``folder`` itself, or its single top folder (``cifar10-jpeg/train/...``) if the split
    folders are one level down."""
    if is_tree(folder):
        return folder
    subdirs = _visible_dirs(folder) if folder.is_dir() else []
    if len(subdirs) == 1 and is_tree(subdirs[0]):
        return subdirs[0]
    seen = ", ".join(p.name for p in sorted(folder.iterdir())[:10]) if folder.is_dir() else "nothing"
    raise DataError(
        f"{folder} is not an ImageFolder tree: expected {folder}/train/<class>/<image> and "
        f"{folder}/test/<class>/<image> (or val/), possibly under one top folder; found: {seen or 'nothing'}"
    )


def split_folder(root: Path, split: str) -> Path:
    """The folder of ``split`` (``test`` falls back to ``val`` and ``val`` to ``test``)."""
    if split not in SPLIT_FOLDERS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_FOLDERS)}")
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    have = ", ".join(p.name for p in _visible_dirs(root)) or "none"
    raise DataError(f"{root} has no {' or '.join(SPLIT_FOLDERS[split])} folder (folders: {have})")


def list_classes(folder: Path) -> list[str]:
    classes = [p.name for p in _visible_dirs(folder)]
    if not classes:
        raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    return classes


def is_image_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Image files (sorted within each class) and their labels; an empty class is an error."""
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if is_image_file(p))
        if not found:
            raise DataError(f"class folder {folder / name} holds no images (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels


def check_class_agreement(root: Path, split_dir: Path, classes: list[str]) -> None:
    """Train and test (or val) must name the same classes, or labels would not match."""
    for other in ("train", "test", "val"):
        other_dir = root / other
        if other_dir.is_dir() and other_dir != split_dir:
            other_classes = [p.name for p in _visible_dirs(other_dir)]
            if other_classes != classes:
                only_here = sorted(set(classes) - set(other_classes))
                only_there = sorted(set(other_classes) - set(classes))
                raise DataError(
                    f"class folders differ between {split_dir} and {other_dir}: only in {split_dir.name}: "
                    f"{only_here or 'none'}; only in {other}: {only_there or 'none'}"
                )


def _composite_on_black(img: Image.Image) -> np.ndarray:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def decode_image(path: str | Path) -> np.ndarray:
    """Decode one image file to ``uint8 [H, W, 3]`` RGB, converting every mode explicitly."""
    with Image.open(path) as img:
        img.load()  # decode now: truncated or corrupt data raises here
        mode = img.mode
        if mode == "RGB" and "transparency" not in img.info:
            arr = np.asarray(img)
        elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            arr = _composite_on_black(img)
        elif mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            arr = np.asarray(img.convert("RGB"))
        elif mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale: keep the top 8 bits
            gray = np.asarray(img).astype(np.int64) >> 8
            arr = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        else:
            raise ValueError(f"unsupported image mode {mode!r}")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"decoded to an array of shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _decode_chunk(paths: list[str]) -> list[np.ndarray | str]:
    """Worker: decoded arrays, or a one-line error for files that cannot be decoded."""
    out: list[np.ndarray | str] = []
    for path in paths:
        try:
            out.append(decode_image(path))
        except Exception as exc:  # noqa: BLE001 - every decoder failure is reported per file
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def decode_files(paths: list[Path], workers: int | None = None) -> list[np.ndarray | str]:
    """Decode many files, in a process pool when there are many (PIL decoding of small images
    is dominated by Python overhead, so threads do not help)."""
    names = [str(p) for p in paths]
    workers = _workers() if workers is None else workers
    if workers < 2 or len(names) < _PARALLEL_MIN:
        return _decode_chunk(names)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    chunks = [names[i : i + _CHUNK] for i in range(0, len(names), _CHUNK)]
    with ProcessPoolExecutor(min(workers, 8), mp_context=multiprocessing.get_context(method)) as pool:
        return [item for chunk in pool.map(_decode_chunk, chunks) for item in chunk]


def decode_split(
    root: Path,
    split: str,
    *,
    skip_corrupt: bool = False,
    display: Callable[[Path], str] = str,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode one split of the tree at ``root``.

    Returns images ``uint8 [N, 3, H, W]``, labels ``int64 [N]``, the class names and the files
    skipped as corrupt. ``display`` turns a file path into the name used in messages (for an
    archive: the entry name inside it).
    """
    folder = split_folder(root, split)
    classes = list_classes(folder)
    check_class_agreement(root, folder, classes)
    files, labels = list_images(folder, classes)
    log.info("decoding %d images of %s", len(files), display(folder))
    results = decode_files(files)
    skipped, keep = [], []
    for i, (path, result) in enumerate(zip(files, results)):
        if isinstance(result, str):
            if not skip_corrupt:
                raise DataError(
                    f"cannot decode image {display(path)}: {result} (pass skip_corrupt=True / --skip-corrupt to skip such files)"
                )
            skipped.append(display(path))
        else:
            keep.append(i)
    if not keep:
        raise DataError(f"no image of {display(folder)} could be decoded")
    sizes = Counter(results[i].shape[:2] for i in keep)
    (h, w), _ = sizes.most_common(1)[0]
    odd = [i for i in keep if results[i].shape[:2] != (h, w)]
    if odd:
        names = ", ".join(f"{display(files[i])} ({results[i].shape[1]}x{results[i].shape[0]})" for i in odd[:5])
        raise DataError(
            f"{len(odd)} image(s) of {display(folder)} are not {w}x{h} like the rest of the dataset: {names}"
            + (" ..." if len(odd) > 5 else "")
        )
    images = np.empty((len(keep), 3, h, w), dtype=np.uint8)
    for j, i in enumerate(keep):
        images[j] = results[i].transpose(2, 0, 1)
    label_arr = np.asarray(labels, dtype=np.int64)[keep]
    if skipped:
        log.warning("skipped %d corrupt image(s) of %s", len(skipped), display(folder))
    present = set(label_arr.tolist())
    empty = [c for k, c in enumerate(classes) if k not in present]
    if empty:
        raise DataError(f"class folder(s) {empty} of {display(folder)} hold no decodable image")
    return images, label_arr, classes, skipped

"""Decoding image files to ``uint8 [H, W, 3]`` RGB arrays, in a process pool when there are many.

Odd images are converted on purpose (:func:`decode_image`):

* grayscale ``1`` / ``L`` / ``P`` (palette) / ``CMYK`` / ``YCbCr`` / ``LAB`` / ``HSV`` / ``RGBX``:
  ``PIL.Image.convert("RGB")`` (PIL's own conversion, e.g. CMYK ``R = 255 - min(255, C + K)``);
* anything with transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa`` / ``La``, and
  ``P`` / ``L`` / ``RGB`` images with a ``transparency`` entry): composited onto black,
  ``rgb = round(rgb * alpha / 255)`` from PIL's RGBA conversion;
* 16-bit / 32-bit integer grayscale (``I;16``, ``I``): the top 8 of 16 bits (``v >> 8``),
  clipped to 0..255, repeated to 3 channels.

A file PIL cannot identify, a truncated file (also a PNG cut off before its ``IEND`` chunk,
which PIL would load silently) or a corrupt one is reported per file, never silently padded
(``ImageFile.LOAD_TRUNCATED_IMAGES`` is switched off while decoding).
"""

from __future__ import annotations

import io
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from senet.utils.limits import ENV as WORK_ENV
from senet.utils.limits import human_bytes, max_work_bytes

#: A file to decode: its path, or its bytes (read from an archive).
Payload = Union[Path, bytes]

PARALLEL_MIN = 4000  # fewer files than this decode in-process
_CHUNK = 500
_CONVERT = ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def _composite_on_black(img: Image.Image) -> np.ndarray:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def decode_image(source: Payload) -> np.ndarray:
    """Decode one image (a path or its bytes) to ``uint8 [H, W, 3]`` RGB, converting every
    mode explicitly (see the module docstring). Raises ``OSError`` / ``ValueError`` (or
    whatever PIL raises) for a file that cannot be decoded."""
    if not isinstance(source, bytes):
        size, limit = os.stat(source).st_size, max_work_bytes()
        if size > limit:  # not read into memory: no image file is that large (PIL refuses > 179 Mpixels)
            raise ValueError(f"{size:,} bytes, more than the {human_bytes(limit)} senet reads for one image "
                             f"(${WORK_ENV} raises the limit)")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # decode now: truncated or corrupt data raises here
        if img.format == "PNG" and data.rfind(b"IEND") < 0:
            raise OSError("truncated PNG file (no IEND chunk)")
        mode = img.mode
        if mode == "RGB" and "transparency" not in img.info:
            arr = np.asarray(img)
        elif mode in _ALPHA or "transparency" in img.info:
            arr = _composite_on_black(img)
        elif mode in _CONVERT:
            arr = np.asarray(img.convert("RGB"))
        elif mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale: keep the top 8 bits
            gray = np.asarray(img).astype(np.int64) >> 8
            arr = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        else:
            raise ValueError(f"unsupported image mode {mode!r}")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"decoded to an array of shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _decode_chunk(items: list[Payload]) -> list[np.ndarray | str]:
    """Decoded arrays, or a one-line error for each file that cannot be decoded."""
    out: list[np.ndarray | str] = []
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        for item in items:
            try:
                out.append(decode_image(item))
            except Exception as exc:  # noqa: BLE001 - every decoder failure is reported per file
                out.append(f"{type(exc).__name__}: {exc}")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return out


def _decode_packed(items: list[Payload]) -> np.ndarray | list[np.ndarray | str]:
    """Pool worker: :func:`_decode_chunk`, stacked into one array when every image decoded to
    the same shape (one array pickles back to the parent far faster than hundreds)."""
    out = _decode_chunk(items)
    shapes = {r.shape if isinstance(r, np.ndarray) else None for r in out}
    return np.stack(out) if len(shapes) == 1 and None not in shapes else out  # type: ignore[arg-type]


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def decode_files(
    items: list[Payload], workers: int | None = None, progress: bool | None = None, desc: str = "decoding"
) -> list[np.ndarray | str]:
    """Decode many files in order: an array per file, or an error string for a bad one.

    Uses a process pool (up to 8 workers) when there are at least :data:`PARALLEL_MIN` files
    (PIL decoding of small images is dominated by Python overhead, so threads do not help).
    ``progress``: a tqdm bar; ``None`` shows it only on a terminal.
    """
    workers = _workers() if workers is None else workers
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    out: list[np.ndarray | str] = []
    disable = None if progress is None else not progress
    with tqdm(total=len(items), desc=desc, unit="img", disable=disable, leave=False) as bar:
        if workers < 2 or len(items) < PARALLEL_MIN:
            for chunk in chunks:
                out.extend(_decode_chunk(chunk))
                bar.update(len(chunk))
            return out
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(min(workers, 8), mp_context=multiprocessing.get_context(method)) as pool:
            for result in pool.map(_decode_packed, chunks):
                out.extend(list(result))
                bar.update(len(result))
    return out

"""Digests that prove a file holds what senet wrote, and the CRC check of foreign zip files.

:func:`state_digest` is a SHA-256 over a nested structure of tensors, numbers, strings,
lists and dicts, in their order: each tensor's dtype, shape and raw bytes, each other value
tagged with its type. senet records it in every file it writes (a safetensors file's
metadata under :data:`DIGEST_KEY`, a checkpoint's payload) and checks it on every read, so a
flipped bit anywhere in the tensors (or the values) is found, not loaded.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

#: Metadata key of the digest in the safetensors files senet writes.
DIGEST_KEY = "senet_sha256"


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor, without a copy when it is contiguous."""
    flat = t.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(tensor_bytes(t))
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, (bytes, str)):
        data = obj if isinstance(obj, bytes) else obj.encode("utf-8", "surrogatepass")
        h.update(f"{type(obj).__name__[0]}{len(data)}:".encode())
        h.update(data)
    elif obj is None or isinstance(obj, (bool, int, float)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot digest a {type(obj).__name__}")


def state_digest(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` (tensors, numbers, strings, None, lists, tuples, dicts)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """:func:`state_digest` of the tensors in key order (a safetensors file's order is its own)."""
    return state_digest({k: tensors[k] for k in sorted(tensors)})


def bad_zip_member(path: str | os.PathLike[str]) -> str | None:
    """``None`` if ``path`` is not a zip file or every member matches its CRC-32; else a
    description of the first damage found. Members are streamed, never held whole."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        return f"damaged zip structure ({e})"
    return f"member {bad!r} does not match its CRC-32" if bad is not None else None

"""The cache folder and the decoded-tensor cache.

A decoded split is stored as one safetensors file (``images`` uint8 ``[N, 3, H, W]``,
``labels`` int64 ``[N]``; class names and skipped files in its JSON metadata), so loading it
never executes code and takes a fraction of a second. Its name carries a fingerprint of the
source (real path, size and mtime of the archive, or of every file of the tree's split
folder), so a changed source is decoded again. Files are written atomically
(:mod:`senet.utils.atomic`) with a SHA-256 of their tensors in the metadata; an unreadable,
inconsistent or damaged cache file is ignored (with a warning) and rewritten. A cache folder
that cannot be written (disk full, read-only) is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from senet.errors import FileSystemError, fs_error
from senet.utils.atomic import atomic_path
from senet.utils.integrity import DIGEST_KEY, tensors_digest

log = logging.getLogger(__name__)

#: Bumped when the decoding changes, so old caches are not reused.
FORMAT_VERSION = "1"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "senet"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$SENET_CACHE``, else ``~/.cache/senet``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SENET_CACHE")
    return Path(env).expanduser() if env else default_cache_dir()


def fingerprint(path: Path) -> str:
    """Hex digest of the real path, size and mtime of a file, or of every file under a folder."""
    path = Path(os.path.realpath(path))
    # names as the file system's bytes (os.fsencode): a name that is not UTF-8 is hashed too
    digest = hashlib.sha256(f"senet-data-v{FORMAT_VERSION}\0".encode() + os.fsencode(path))
    if path.is_file():
        st = path.stat()
        digest.update(f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    else:
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                digest.update(b"\0" + os.fsencode(os.path.relpath(full, path))
                              + f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


@dataclass
class CacheEntry:
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str]


def tensor_cache_path(root: Path, name: str, split: str, key: str) -> Path:
    return root / "tensors" / f"{name}-{split}-{key}.safetensors"


_HINT = "; set SENET_CACHE to a folder with room that you can write"


def save(path: Path, entry: CacheEntry) -> None:
    """Write ``entry`` to ``path`` atomically; a cache that cannot be written is a
    :class:`FileSystemError` naming it."""
    tensors = {"images": entry.images.contiguous(), "labels": entry.labels.contiguous()}
    metadata = {
        "format": FORMAT_VERSION,
        "classes": json.dumps(entry.classes),
        "skipped": json.dumps(entry.skipped),
        DIGEST_KEY: tensors_digest(tensors),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileSystemError(f"{fs_error(e, path.parent, 'create the data cache folder')}{_HINT}") from None
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except FileSystemError as e:
        raise FileSystemError(f"{e} (the decoded-data cache){_HINT}") from None
    log.info("cached %d decoded images in %s", len(entry.labels), path)


def load(path: Path) -> CacheEntry | None:
    """The entry stored at ``path``; ``None`` when there is none or it is unreadable (then
    the caller decodes again and overwrites it)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_VERSION:
                return None
            images = f.get_tensor("images")
            labels = f.get_tensor("labels")
        classes = json.loads(meta["classes"])
        skipped = json.loads(meta["skipped"])
    except (SafetensorError, OSError, KeyError, ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable data cache %s (%s); decoding again", path, exc)
        return None
    if DIGEST_KEY not in meta:  # written before caches recorded a digest
        return None
    if meta[DIGEST_KEY] != tensors_digest({"images": images, "labels": labels}):
        log.warning("ignoring damaged data cache %s (its tensors do not match their SHA-256); decoding again", path)
        return None
    if (
        images.dtype != torch.uint8
        or images.dim() != 4
        or images.shape[1] != 3
        or labels.dtype != torch.int64
        or labels.shape != (images.shape[0],)
    ):
        log.warning("ignoring data cache %s with unexpected tensors; decoding again", path)
        return None
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        log.warning("ignoring data cache %s with labels outside 0..%d; decoding again", path, len(classes) - 1)
        return None
    return CacheEntry(images=images, labels=labels, classes=list(classes), skipped=list(skipped))

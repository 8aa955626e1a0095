"""Builders for the data tests: small ImageFolder trees, tar archives (also malicious ones)
and fake CIFAR python archives with the official layout."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(label: int, index: int, size: int = 8) -> np.ndarray:
    """A distinct, deterministic ``uint8 [size, size, 3]`` image for (label, index)."""
    rng = np.random.default_rng(1000 * label + index)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def make_tree(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "emu"),
    per_class: dict[str, int] | None = None,
    size: int = 8,
    top: str | None = None,
) -> Path:
    """``root[/top]/{train,test}/<class>/<i>.png`` with :func:`pixels` images (lossless PNG).
    Returns the folder holding the split folders."""
    base = root / top if top else root
    per_class = per_class or {"train": 3, "test": 2}
    for split, n in per_class.items():
        for label, name in enumerate(classes):
            folder = base / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(pixels(label, i + (100 if split != "train" else 0), size)).save(folder / f"{i:03d}.png")
    return base


def expected_split(classes: tuple[str, ...], n: int, split: str, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[N, 3, H, W]`` and labels :func:`make_tree` wrote for ``split``."""
    offset = 100 if split != "train" else 0
    images = [pixels(label, i + offset, size).transpose(2, 0, 1) for label in range(len(classes)) for i in range(n)]
    labels = [label for label in range(len(classes)) for _ in range(n)]
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def tar_folder(folder: Path, out: Path, arcname: str | None = None) -> Path:
    """``folder`` as a ``.tar`` or ``.tar.gz`` (by ``out``'s name), under ``arcname``."""
    mode = "w:gz" if out.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(out, mode) as tar:
        tar.add(folder, arcname=arcname if arcname is not None else folder.name)
    return out


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar: tarfile.TarFile, name: str, target: str, *, hard: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


class Marker:
    """Unpickling this object creates ``path`` (``open(path, "w")``): proof of code execution."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (open, (self.path, "w"))


def cifar_batch(data: np.ndarray, labels: list[int], label_key: str = "labels", **extra: object) -> bytes:
    """A batch pickled like the official files (protocol 2, bytes keys)."""
    batch = {
        b"batch_label": b"fake batch",
        label_key.encode(): labels,
        b"data": data,
        b"filenames": [b"x.png"] * len(labels),
    }
    batch.update({k.encode(): v for k, v in extra.items()})
    return pickle.dumps(batch, protocol=2)


def cifar_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(
    out_dir: Path, *, n: int = 4, bad_label: bool = False, payload: bytes | None = None
) -> dict[str, bytes]:
    """The files of a tiny ``cifar-10-batches-py`` (5 train batches of ``n``, a test batch of
    ``n``, ``batches.meta``); returns name -> bytes and writes ``cifar-10-python.tar.gz`` into
    ``out_dir``. ``payload`` replaces ``data_batch_1`` (e.g. a malicious pickle)."""
    files: dict[str, bytes] = {}
    for b in range(1, 6):
        labels = [(b + i) % 10 for i in range(n)]
        if bad_label and b == 3:
            labels[1] = 10
        files[f"data_batch_{b}"] = cifar_batch(cifar_images(n, b), labels)
    files["test_batch"] = cifar_batch(cifar_images(n, 99), [i % 10 for i in range(n)])
    names = [
        n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    ]
    files["batches.meta"] = pickle.dumps(
        {b"label_names": names, b"num_cases_per_batch": n, b"num_vis": 3072}, protocol=2
    )
    files["readme.html"] = b"<html>fake</html>"
    if payload is not None:
        files["data_batch_1"] = payload
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            add_file(tar, f"cifar-10-batches-py/{name}", data)
    return files

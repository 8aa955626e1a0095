"""CIFAR-10 / CIFAR-100 in their official python format (Krizhevsky, 2009).

The official files are pickles, so nothing is unpickled before its md5 matches the official
value: the whole archive's md5 for ``cifar-*-python.tar.gz``, each batch file's md5 for an
extracted ``cifar-10-batches-py`` / ``cifar-100-python`` folder. Even then the unpickler only
resolves the few numpy globals a CIFAR batch needs. Labels outside the class range are a
:class:`DataError` (raised while loading, i.e. before any training starts).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from senet.errors import DataError
from senet.utils.download import download_file


@dataclass(frozen=True)
class CifarSpec:
    """Names and official md5 sums of one CIFAR dataset (values as published with it)."""

    name: str
    archive: str
    folder: str
    url: str
    archive_md5: str
    train: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str]
    meta_key: str
    label_key: str
    num_classes: int

    def files(self, split: str) -> tuple[tuple[str, str], ...]:
        if split not in ("train", "test"):
            raise DataError(f"the CIFAR python format has the splits 'train' and 'test', not {split!r}")
        return self.train if split == "train" else self.test


#: The official CIFAR python archives. Tests replace entries to use tiny fakes.
SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        train=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        meta_key="label_names",
        label_key="labels",
        num_classes=10,
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta=("meta", "7973b15100ade9c7d40fb424638fde48"),
        meta_key="fine_label_names",
        label_key="fine_labels",
        num_classes=100,
    ),
}


def read_verified(path: Path, expected: str) -> bytes:
    """The bytes of ``path``, after checking that their md5 is ``expected`` (the same bytes are
    then parsed, so the file cannot change between the check and the use)."""
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}")
    data = path.read_bytes()
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise DataError(
            f"{path} has md5 {actual}, not the official {expected}: the file is corrupt, truncated "
            "or not the official one; it was not unpickled. Delete it and download it again."
        )
    return data


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # bytes pickled with protocol 2 by Python 3
}


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals a CIFAR batch pickle refers to."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module == "_codecs":
            return codecs.encode
        if module.startswith("numpy.") and module.endswith("multiarray"):
            try:
                from numpy._core import multiarray  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core import multiarray
            return getattr(multiarray, name)
        return getattr(np, name)


def unpickle(data: bytes, where: str) -> dict:
    """Unpickle one (md5-verified) CIFAR batch; keys are returned as ``str``."""
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"cannot read CIFAR batch {where}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {where} is not a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _batch_arrays(batch: dict, spec: CifarSpec, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[spec.label_key], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"CIFAR batch {where} has no {exc} entry") from exc
    except (TypeError, ValueError) as exc:
        raise DataError(f"CIFAR batch {where}: labels are not integers ({exc})") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"CIFAR batch {where}: expected uint8 data of shape [N, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"CIFAR batch {where}: {labels.size} labels for {data.shape[0]} images")
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
    if bad.size:
        raise DataError(
            f"CIFAR batch {where}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside the class range "
            f"0..{spec.num_classes - 1} ({bad.size} bad labels)"
        )
    return data, labels


def _class_names(meta: dict, spec: CifarSpec, where: str) -> list[str]:
    names = meta.get(spec.meta_key)
    if not isinstance(names, list) or len(names) != spec.num_classes:
        raise DataError(f"CIFAR meta file {where}: expected {spec.num_classes} names under {spec.meta_key!r}")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _read_archive_members(archive: Path, spec: CifarSpec, wanted: set[str]) -> dict[str, bytes]:
    """Member bytes (by base name) of the official archive, read after its md5 matched."""
    blob = read_verified(archive, spec.archive_md5)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r|gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isreg() and len(parts) == 2 and parts[0] == spec.folder and parts[1] in wanted:
                    f = tar.extractfile(member)
                    assert f is not None
                    found[parts[1]] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from exc
    missing = wanted - found.keys()
    if missing:
        raise DataError(f"archive {archive} lacks {spec.folder}/{sorted(missing)[0]}")
    return found


def load_cifar(path: Path, spec: CifarSpec, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images ``uint8 [N, 3, 32, 32]``, labels ``int64 [N]`` and class names of one split.

    ``path`` is the official archive or the extracted folder. The md5 is checked first
    (whole archive, or every file read from the folder), then the batches are unpickled.
    """
    files = spec.files(split)
    names = [name for name, _ in files] + [spec.meta[0]]
    if path.is_dir():
        blobs = {name: read_verified(path / name, md5) for name, md5 in (*files, spec.meta)}
        where = {name: str(path / name) for name in names}
    else:
        blobs = _read_archive_members(path, spec, set(names))
        where = {name: f"{path}:{spec.folder}/{name}" for name in names}
    classes = _class_names(unpickle(blobs[spec.meta[0]], where[spec.meta[0]]), spec, where[spec.meta[0]])
    datas, labels = [], []
    for name, _ in files:
        data, lab = _batch_arrays(unpickle(blobs.pop(name), where[name]), spec, where[name])
        datas.append(data)
        labels.append(lab)
    images = np.concatenate(datas).reshape(-1, 3, 32, 32)
    return images, np.concatenate(labels), classes


def download(spec: CifarSpec, dest_dir: Path, timeout: float = 30.0) -> Path:
    """Download the official archive into ``dest_dir`` (atomically, md5 checked before the
    final rename).

    Raises :class:`DataError` when offline or when the download does not match the md5, and
    :class:`~senet.errors.FileSystemError` when ``dest_dir`` cannot be written.
    """
    return download_file(spec.url, dest_dir / spec.archive, hash_name="md5", expected=spec.archive_md5,
                         timeout=timeout, error=DataError)

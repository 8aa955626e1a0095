"""CIFAR-10 / CIFAR-100 in the official python format: md5 before unpickling, the restricted
unpickler, labels outside the class range, CIFAR-100 fine labels, and the download."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from senet.data import cifar_python, load_split
from senet.errors import DataError
from tests.data_helpers import Marker, add_file, cifar_batch, cifar_images, write_cifar10


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _trust(
    monkeypatch: pytest.MonkeyPatch, key: str, archive: Path, files: dict[str, bytes], **changes: object
) -> None:
    """Make the fake archive (and its files) carry the official md5 sums."""
    spec = cifar_python.SPECS[key]
    md5 = {name: _md5(data) for name, data in files.items()}
    new = dataclasses.replace(
        spec,
        archive_md5=_md5(archive.read_bytes()) if archive.is_file() else spec.archive_md5,
        train=tuple((name, md5[name]) for name, _ in spec.train),
        test=tuple((name, md5[name]) for name, _ in spec.test),
        meta=(spec.meta[0], md5[spec.meta[0]]),
        **changes,
    )
    monkeypatch.setitem(cifar_python.SPECS, key, new)


@pytest.fixture
def no_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty machine: no $SENET_DATA, an empty current folder and home; returns the cache."""
    monkeypatch.delenv("SENET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "cache"


def test_fake_cifar10_archive_loads_with_the_official_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_cifar10(tmp_path / "data", n=4)
    _trust(monkeypatch, "cifar10", tmp_path / "data" / "cifar-10-python.tar.gz", files)
    train = load_split("cifar10", "train", data=tmp_path / "data", cache_dir=tmp_path / "cache")
    test = load_split("cifar10", "test", data=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert train.classes[:3] == ["airplane", "automobile", "bird"] and len(train.classes) == 10
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    # rows are [R plane | G plane | B plane] of 32x32, batches in order 1..5
    rows = np.concatenate([cifar_images(4, b) for b in range(1, 6)])
    np.testing.assert_array_equal(train.images[5, 1].numpy(), rows[5, 1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(train.images.numpy().reshape(20, -1), rows)
    assert train.labels.tolist() == [(b + i) % 10 for b in range(1, 6) for i in range(4)]
    np.testing.assert_array_equal(test.images.numpy().reshape(4, -1), cifar_images(4, 99))
    with pytest.raises(DataError, match="not 'val'"):
        load_split("cifar10", "val", data=tmp_path / "data", cache_dir=tmp_path / "cache")


def test_extracted_folder_is_checked_file_by_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_cifar10(tmp_path / "data", n=2)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    with tarfile.open(tmp_path / "data" / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "data", filter="data")
    (tmp_path / "data" / "cifar-10-python.tar.gz").unlink()
    _trust(monkeypatch, "cifar10", tmp_path / "none", files)
    ds = load_split("cifar10", "test", data=folder, cache_dir=tmp_path / "cache")
    assert len(ds) == 2
    (folder / "data_batch_2").write_bytes(cifar_batch(cifar_images(2, 7), [0, 1]))  # not the official file
    with pytest.raises(DataError, match="data_batch_2 has md5 .* not the official") as info:
        load_split("cifar10", "train", data=folder, cache_dir=tmp_path / "cache")
    assert "not unpickled" in str(info.value)


def test_md5_mismatch_is_refused_before_anything_is_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "code-was-executed"
    write_cifar10(tmp_path / "data", payload=pickle.dumps({b"data": Marker(marker)}, protocol=2))
    unpickled = []
    monkeypatch.setattr(cifar_python, "unpickle", lambda *a: unpickled.append(a))
    for where in (tmp_path / "data", tmp_path / "data" / "cifar-10-python.tar.gz"):
        with pytest.raises(DataError, match="md5 .* not the official c58f30108f718f92721af3b95e74349a") as info:
            load_split("cifar10", "train", data=where, cache_dir=tmp_path / "cache")
        assert "not unpickled" in str(info.value)
    assert not marker.exists() and unpickled == []


def test_restricted_unpickler_refuses_code_even_with_a_matching_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "code-was-executed"
    files = write_cifar10(tmp_path / "data", payload=pickle.dumps({b"data": Marker(marker)}, protocol=2))
    _trust(monkeypatch, "cifar10", tmp_path / "data" / "cifar-10-python.tar.gz", files)
    with pytest.raises(DataError, match=r"global (io|builtins)\.open is not allowed"):
        load_split("cifar10", "train", data=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert not marker.exists()
    with pytest.raises(DataError, match="os.system is not allowed"):
        cifar_python.unpickle(b"cos\nsystem\n(S'touch /tmp/x'\ntR.", "test")


def test_label_outside_the_class_range_is_an_error_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_cifar10(tmp_path / "data", n=3, bad_label=True)
    _trust(monkeypatch, "cifar10", tmp_path / "data" / "cifar-10-python.tar.gz", files)
    with pytest.raises(DataError, match=r"data_batch_3: label 10 at index 1 is outside the class range 0\.\.9"):
        load_split("cifar10", "train", data=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(load_split("cifar10", "test", data=tmp_path / "data", cache_dir=tmp_path / "cache")) == 3


def test_batch_with_wrong_shapes_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = cifar_batch(np.zeros((2, 100), dtype=np.uint8), [0, 1])
    files = write_cifar10(tmp_path / "data", payload=short)
    _trust(monkeypatch, "cifar10", tmp_path / "data" / "cifar-10-python.tar.gz", files)
    with pytest.raises(DataError, match=r"expected uint8 data of shape \[N, 3072\]"):
        load_split("cifar10", "train", data=tmp_path / "data", cache_dir=tmp_path / "cache")


def _write_cifar100(out_dir: Path) -> dict[str, bytes]:
    fine = [f"fine{i:02d}".encode() for i in range(100)]
    coarse = [f"coarse{i:02d}".encode() for i in range(20)]
    files = {
        "train": cifar_batch(
            cifar_images(6, 1), [99, 0, 57, 3, 12, 64], "fine_labels", coarse_labels=[19, 0, 1, 2, 3, 4]
        ),
        "test": cifar_batch(cifar_images(2, 2), [5, 98], "fine_labels", coarse_labels=[7, 8]),
        "meta": pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": coarse}, protocol=2),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out_dir / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            add_file(tar, f"cifar-100-python/{name}", data)
    return files


def test_cifar100_uses_the_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _write_cifar100(tmp_path / "data")
    _trust(monkeypatch, "cifar100", tmp_path / "data" / "cifar-100-python.tar.gz", files)
    ds = load_split("cifar100", "train", data=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert ds.labels.tolist() == [99, 0, 57, 3, 12, 64]
    assert len(ds.classes) == 100 and ds.classes[57] == "fine57"
    assert load_split("cifar-100", "test", data=tmp_path / "data", cache_dir=tmp_path / "cache").labels.tolist() == [
        5,
        98,
    ]
    with pytest.raises(DataError, match="holds cifar100, not cifar10"):  # the wrong CIFAR given directly
        load_split("cifar10", "test", data=tmp_path / "data" / "cifar-100-python.tar.gz", cache_dir=tmp_path / "cache")


# --- download -------------------------------------------------------------------------------


def test_download_over_http_then_load(
    served: tuple[str, Path], no_places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, www = served
    files = write_cifar10(www, n=2)
    _trust(monkeypatch, "cifar10", www / "cifar-10-python.tar.gz", files, url=f"{url}/cifar-10-python.tar.gz")
    ds = load_split("cifar10", "test", cache_dir=no_places)
    assert len(ds) == 2 and len(ds.classes) == 10
    saved = no_places / "cifar-10-python.tar.gz"
    assert saved.read_bytes() == (www / "cifar-10-python.tar.gz").read_bytes()
    assert sorted(p.name for p in no_places.iterdir()) == ["cifar-10-python.tar.gz", "tensors"]
    (www / "cifar-10-python.tar.gz").unlink()  # the next load finds the downloaded copy
    assert len(load_split("cifar10", "train", cache_dir=no_places)) == 10


def test_download_from_a_file_url(tmp_path: Path, no_places: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_cifar10(tmp_path / "mirror", n=2)
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    _trust(monkeypatch, "cifar10", archive, files, url=archive.as_uri())
    assert cifar_python.download(cifar_python.SPECS["cifar10"], no_places) == no_places / "cifar-10-python.tar.gz"
    assert len(load_split("cifar10", "train", cache_dir=no_places)) == 10


def test_download_with_the_wrong_md5_is_discarded(
    served: tuple[str, Path], no_places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, www = served
    files = write_cifar10(www, n=2)
    _trust(monkeypatch, "cifar10", www / "cifar-10-python.tar.gz", files, url=f"{url}/cifar-10-python.tar.gz")
    (www / "cifar-10-python.tar.gz").write_bytes(b"tampered" * 100)  # served bytes differ
    with pytest.raises(DataError, match="has md5 .* not the official .*discarded") as info:
        load_split("cifar10", "train", cache_dir=no_places)
    assert "Places tried" in str(info.value)
    assert list(no_places.iterdir()) == []  # neither the archive nor a partial file is kept


def test_offline_error_lists_the_places_and_where_to_put_the_archive(
    served: tuple[str, Path], no_places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = served  # serves nothing: 404, like an unreachable mirror
    spec = cifar_python.SPECS["cifar10"]
    monkeypatch.setitem(cifar_python.SPECS, "cifar10", dataclasses.replace(spec, url=f"{url}/cifar-10-python.tar.gz"))
    with pytest.raises(DataError) as info:
        load_split("cifar10", "train", cache_dir=no_places)
    msg = str(info.value)
    for place in (
        "data argument (--data): not set",
        "$SENET_DATA: not set",
        "./data",
        "../shared/data",
        "~/.cache/senet",
    ):
        assert place in msg
    assert f"download of {url}/cifar-10-python.tar.gz failed" in msg
    assert "Put one of cifar-10-python.tar.gz, cifar-10-batches-py/" in msg and "SENET_DATA" in msg
    with pytest.raises(DataError, match="download: not allowed") as info:
        load_split("cifar10", "train", cache_dir=no_places, download=False)
    assert f"The official archive is {url}/cifar-10-python.tar.gz" in str(info.value)
    closed = dataclasses.replace(spec, url="http://127.0.0.1:9/cifar-10-python.tar.gz")  # discard port: refused
    monkeypatch.setitem(cifar_python.SPECS, "cifar10", closed)
    with pytest.raises(DataError, match=r"download of http://127.0.0.1:9/\S+ failed"):
        load_split("cifar10", "train", cache_dir=no_places)

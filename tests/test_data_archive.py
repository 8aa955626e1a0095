"""``.tar`` / ``.tar.gz`` archives of ImageFolder trees: read like the tree itself, unsafe
entries refused with nothing written outside, truncated archives refused, atomic extraction."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from senet.data import archive, load_split
from senet.data.archive import extract_archive, read_archive
from senet.errors import DataError
from tests.data_helpers import add_file, add_link, expected_split, make_tree, pixels, png_bytes, tar_folder

CLASSES = ("cat", "dog", "emu")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src" / "pets", classes=CLASSES)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
@pytest.mark.parametrize("arcname", ["pets", "."])
def test_archive_loads_like_the_tree(tree: Path, tmp_path: Path, suffix: str, arcname: str) -> None:
    """With the split folders at the top or under one folder, both splits, same arrays."""
    path = tar_folder(tree, tmp_path / f"pets{suffix}", arcname)
    for split, n in (("train", 3), ("test", 2)):
        ds = load_split(str(path), split, cache_dir=tmp_path / "cache")
        images, labels = expected_split(CLASSES, n, split)
        assert ds.classes == list(CLASSES) and ds.source == str(path)
        np.testing.assert_array_equal(ds.images.numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert not (tmp_path / "cache" / "extracted").exists()  # decoded from memory, no file per image


def test_extract_archive_writes_the_tree(tree: Path, tmp_path: Path) -> None:
    path = tar_folder(tree, tmp_path / "pets.tar.gz")
    dest = extract_archive(path, tmp_path / "cache" / "extracted" / "pets")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png"))
    assert files == sorted(p.relative_to(tree.parent).as_posix() for p in tree.rglob("*.png"))
    assert (dest / "pets/train/dog/001.png").read_bytes() == (tree / "train/dog/001.png").read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["pets"]  # no temporary folder left


def test_a_corrupt_image_in_an_archive_is_named_by_its_entry(tmp_path: Path) -> None:
    path = tmp_path / "pets.tar"
    with tarfile.open(path, "w") as tar:
        for split in ("train", "test"):
            for c in ("a", "b"):
                add_file(tar, f"pets/{split}/{c}/0.png", png_bytes(pixels(0, 0)))
        add_file(tar, "pets/train/b/1.png", png_bytes(pixels(0, 1))[:50])
    with pytest.raises(DataError, match="cannot decode image") as info:
        load_split(str(path), "train", cache_dir=tmp_path / "cache")
    assert f"{path}:pets/train/b/1.png" in str(info.value)
    ds = load_split(str(path), "train", cache_dir=tmp_path / "cache", skip_corrupt=True)
    assert ds.skipped == [f"{path}:pets/train/b/1.png"] and len(ds) == 2


def test_internal_links_are_followed(tmp_path: Path) -> None:
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        for split in ("train", "test"):
            add_file(tar, f"{split}/a/0.png", png_bytes(pixels(0, 0)))
            add_file(tar, f"{split}/b/0.png", png_bytes(pixels(1, 0)))
        add_link(tar, "train/b/hard.png", "train/a/0.png", hard=True)
        add_link(tar, "train/b/soft.png", "../a/0.png")
    files, _ = read_archive(path)
    assert files["train/b/hard.png"] == files["train/b/soft.png"] == files["train/a/0.png"]
    ds = load_split(str(path), "train", cache_dir=tmp_path / "cache")
    assert ds.labels.tolist() == [0, 1, 1, 1]
    dest = extract_archive(path, tmp_path / "x")
    assert (dest / "train/b/soft.png").read_bytes() == (dest / "train/a/0.png").read_bytes()


# --- unsafe entries -------------------------------------------------------------------------


def _unsafe_archive(path: Path, outside: Path, case: str) -> Path:
    """A valid tree plus one unsafe entry (``case``) aimed at ``outside``."""
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for split in ("train", "test"):
            add_file(tar, f"t/{split}/a/0.png", png_bytes(pixels(0, 0)))
        if case == "dotdot":
            add_file(tar, "t/train/a/../../../outside/evil.png", b"evil")
        elif case == "absolute":
            add_file(tar, str(outside / "evil.png"), b"evil")
        elif case == "symlink":
            add_link(tar, "t/train/a/evil.png", "../../../../outside/evil.png")
        elif case == "absolute symlink":
            add_link(tar, "t/train/a/evil.png", str(outside / "evil.png"))
        elif case == "symlink then write through it":
            add_link(tar, "t/escape", str(outside))
            add_file(tar, "t/escape/evil.png", b"evil")
        elif case == "hardlink":
            add_link(tar, "t/train/a/evil.png", "../outside/evil.png", hard=True)
        elif case == "absolute hardlink":
            add_link(tar, "t/train/a/evil.png", str(outside / "evil.png"), hard=True)
        elif case == "device":
            info = tarfile.TarInfo("t/train/a/dev")
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
        elif case == "fifo":
            info = tarfile.TarInfo("t/train/a/fifo")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return path


UNSAFE = [
    "dotdot",
    "absolute",
    "symlink",
    "absolute symlink",
    "symlink then write through it",
    "hardlink",
    "absolute hardlink",
    "device",
    "fifo",
]


@pytest.mark.parametrize("case", UNSAFE)
def test_unsafe_entries_are_refused_and_nothing_is_written_outside(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.png").write_bytes(b"precious")  # must not be overwritten or linked to
    path = _unsafe_archive(tmp_path / "bad.tar.gz", outside, case)
    target = tmp_path / "cache" / "extracted" / "bad"
    for attempt in (
        lambda: read_archive(path),
        lambda: extract_archive(path, target),
        lambda: load_split(str(path), "train", cache_dir=tmp_path / "cache"),
    ):
        with pytest.raises(DataError, match="unsafe archive entry"):
            attempt()
    assert sorted(p.name for p in outside.iterdir()) == ["evil.png"]
    assert (outside / "evil.png").read_bytes() == b"precious"
    assert not target.exists() and list(target.parent.iterdir()) == []  # no (half) extraction left
    assert not (tmp_path / "cache" / "tensors").exists()


# --- truncated or corrupt archives ----------------------------------------------------------


def _tar_bytes(tree: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(tree, arcname="pets")
    return buf.getvalue()


def _member_boundaries(data: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.offset for m in tar.getmembers()]


def _truncations(tree: Path) -> dict[str, tuple[str, bytes]]:
    data = _tar_bytes(tree)
    starts = _member_boundaries(data)
    gz = gzip.compress(data)
    return {
        "tar cut at an entry boundary": (".tar", data[: starts[len(starts) // 2]]),
        "tar cut inside a header": (".tar", data[: starts[len(starts) // 2] + 100]),
        "tar cut inside file data": (".tar", data[: starts[-1] + 512 + 10]),
        "tar with a garbage header": (".tar", data[: starts[5]] + b"\x07" * 512 + data[starts[5] + 512 :]),
        "tar.gz cut in half": (".tar.gz", gz[: len(gz) // 2]),
        "tar.gz cut after 90%": (".tar.gz", gz[: len(gz) * 9 // 10]),
        "tar.gz of a tar cut at an entry boundary": (".tar.gz", gzip.compress(data[: starts[-2]])),
        "tar.gz with corrupt deflate data": (".tar.gz", gz[:200] + bytes(255 - b for b in gz[200:300]) + gz[300:]),
        "empty file": (".tar.gz", b""),
    }


@pytest.mark.parametrize(
    "case",
    [
        "tar cut at an entry boundary",
        "tar cut inside a header",
        "tar cut inside file data",
        "tar with a garbage header",
        "tar.gz cut in half",
        "tar.gz cut after 90%",
        "tar.gz of a tar cut at an entry boundary",
        "tar.gz with corrupt deflate data",
        "empty file",
    ],
)
def test_truncated_or_corrupt_archive_is_a_clear_error(tree: Path, tmp_path: Path, case: str) -> None:
    suffix, data = _truncations(tree)[case]
    path = tmp_path / f"pets{suffix}"
    path.write_bytes(data)
    pattern = "truncated|corrupt|cannot read archive"
    with pytest.raises(DataError, match=pattern) as info:
        read_archive(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match=pattern):
        load_split(str(path), "train", cache_dir=tmp_path / "cache")
    target = tmp_path / "cache" / "extracted" / "pets"
    with pytest.raises(DataError, match=pattern):
        extract_archive(path, target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_not_an_archive_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a .tar"):
        load_split(str(tmp_path / "notes.txt"), "train", cache_dir=tmp_path / "cache")
    (tmp_path / "fake.tar.gz").write_bytes(b"this is not gzip data" * 40)
    with pytest.raises(DataError, match="cannot read archive|corrupt"):
        load_split(str(tmp_path / "fake.tar.gz"), "train", cache_dir=tmp_path / "cache")


# --- atomic extraction ------------------------------------------------------------------------


def test_interrupted_extraction_leaves_no_folder_that_is_used_later(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tar_folder(tree, tmp_path / "pets.tar.gz")
    dest = tmp_path / "cache" / "extracted" / "pets"
    real_extract = tarfile.TarFile.extract
    calls = []

    def dying_extract(self: tarfile.TarFile, member: tarfile.TarInfo, *args: object, **kw: object) -> None:
        calls.append(member.name)
        if len(calls) == 6:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-way
        real_extract(self, member, *args, **kw)

    monkeypatch.setattr(tarfile.TarFile, "extract", dying_extract)
    with pytest.raises(KeyboardInterrupt):
        extract_archive(path, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "extract", real_extract)
    assert extract_archive(path, dest) == dest
    assert len(list(dest.rglob("*.png"))) == 15


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_killed_extraction_is_cleaned_up_and_redone(tree: Path, tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves its temporary folder; it is never taken for the
    result, and the next extraction removes it."""
    path = tar_folder(tree, tmp_path / "pets.tar.gz")
    dest = tmp_path / "cache" / "pets"
    stale = dest.parent / f".pets.tmp-{_dead_pid()}-abcd1234"
    (stale / "pets" / "train").mkdir(parents=True)  # half-extracted
    live = dest.parent / f".pets.tmp-{os.getpid()}-00000000"  # a concurrent extraction in progress
    live.mkdir()
    extract_archive(path, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(["pets", live.name])
    assert len(list(dest.rglob("*.png"))) == 15


def test_a_finished_extraction_is_reused(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tar_folder(tree, tmp_path / "pets.tar.gz")
    dest = extract_archive(path, tmp_path / "pets")

    def fail(*args: object, **kw: object) -> None:
        raise AssertionError("the archive was read again")

    monkeypatch.setattr(archive, "iter_members", fail)
    assert extract_archive(path, dest) == dest

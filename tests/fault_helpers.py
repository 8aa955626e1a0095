"""Faults for the failure tests: flipped bits inside a tensor's bytes, a small tmpfs that fills
up, a read-only mount. Mounting needs root; the tests that need it are skipped otherwise."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def flip_bit(path: Path, offset: int, bit: int = 4) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def flip_in_safetensors(path: Path, key: str | None = None) -> str:
    """Flip one bit in the middle of a tensor's bytes (the largest, or ``key``); returns its name."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    key = key or max(header, key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])
    start, end = header[key]["data_offsets"]
    flip_bit(path, 8 + size + (start + end) // 2)
    return key


def flip_in_zip_member(path: Path) -> str:
    """Flip one bit in the middle of the largest tensor storage of a torch zip file; returns its name."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    flip_bit(path, info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
    return info.filename


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where that is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("mounting a tmpfs needs root (and mount permission)")
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(source: Path, path: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``path`` (a bind mount: root ignores permission bits)."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("--bind", str(source), str(path)):
        pytest.skip("a read-only bind mount needs root (and mount permission)")
    try:
        if not _mount("-o", "remount,bind,ro", str(path)):
            pytest.skip("cannot remount the bind mount read-only here")
        yield path
    finally:
        _umount(path)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system of ``disk`` until writing fails, then free ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        block = b"\0" * (1 << 16)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler

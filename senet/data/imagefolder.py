"""ImageFolder trees ``root/{train,test|val}/<class>/<image>``, decoded into uint8 arrays.

A tree is read either from disk (:class:`DiskTree`) or from the files of an archive held in
memory (:class:`MemoryTree`, see :func:`senet.data.archive.read_archive`); the split folders
may also sit one level down (``cifar10-jpeg/train/...``). Rules, the same for both:

* classes are the visible sub-folders of the split folder, sorted; train and test (or val)
  must name the same classes, or labels would not match;
* an empty class folder is an error; files without an image extension and hidden files or
  folders (``.DS_Store``, ``Thumbs.db``, ``README``) are ignored (their number is logged);
* images are converted to RGB explicitly (:mod:`senet.data.decode`); a file that cannot be
  decoded is a :class:`DataError` naming it, or, with ``skip_corrupt``, is left out and listed;
* every image must have the size of the rest of the split.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from senet.data.decode import Payload, decode_files
from senet.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


class DiskTree:
    """A folder on disk; paths are ``/``-separated and relative to ``base`` (``""`` is it)."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)

    def subdirs(self, rel: str) -> list[str]:
        folder = self.base / rel
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def names(self, rel: str) -> list[str]:
        folder = self.base / rel
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def files_under(self, rel: str) -> list[str]:
        out = []
        top = self.base / rel
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            sub = os.path.relpath(dirpath, top).replace(os.sep, "/")
            out.extend(_join(rel, name if sub == "." else f"{sub}/{name}") for name in filenames)
        return sorted(out)

    def payload(self, rel: str) -> Payload:
        return self.base / rel

    def display(self, rel: str) -> str:
        return str(self.base / rel) if rel else str(self.base)


class MemoryTree:
    """The files of an archive held in memory (normalised name -> bytes) and its folders."""

    def __init__(self, files: dict[str, bytes], dirs: set[str], label: str) -> None:
        self.files, self.label = files, label
        self._children: dict[str, set[str]] = defaultdict(set)
        for d in dirs:
            self._children[posixpath.dirname(d)].add(posixpath.basename(d))
        self._entries: dict[str, set[str]] = defaultdict(set)
        for name in files:
            self._entries[posixpath.dirname(name)].add(posixpath.basename(name))

    def subdirs(self, rel: str) -> list[str]:
        return sorted(d for d in self._children.get(rel, ()) if not d.startswith("."))

    def names(self, rel: str) -> list[str]:
        return sorted(self._children.get(rel, set()) | self._entries.get(rel, set()))

    def files_under(self, rel: str) -> list[str]:
        prefix = rel + "/"
        below = [n for n in self.files if n.startswith(prefix)]
        return sorted(n for n in below if not any(p.startswith(".") for p in n[len(prefix) :].split("/")[:-1]))

    def payload(self, rel: str) -> Payload:
        return self.files[rel]

    def display(self, rel: str) -> str:
        return f"{self.label}:{rel}" if rel else self.label


Tree = DiskTree | MemoryTree


def _is_tree(tree: Tree, rel: str) -> bool:
    return any(name in tree.subdirs(rel) for name in ("train", "test", "val"))


def tree_root(tree: Tree) -> str:
    """The folder holding the split folders: the tree's top, or its single top folder."""
    if _is_tree(tree, ""):
        return ""
    subdirs = tree.subdirs("")
    if len(subdirs) == 1 and _is_tree(tree, subdirs[0]):
        return subdirs[0]
    top = tree.display("")
    seen = ", ".join(tree.names("")[:10]) or "nothing"
    raise DataError(
        f"{top} is not an ImageFolder tree: expected {top}/train/<class>/<image> and "
        f"{top}/test/<class>/<image> (or val/), possibly under one top folder; found: {seen}"
    )


def find_tree_root(folder: Path) -> Path:
    """``folder`` itself, or its single top folder if the split folders are one level down."""
    return folder / tree_root(DiskTree(folder))


def split_dir(tree: Tree, root: str, split: str) -> str:
    """The folder of ``split`` under ``root`` (``test`` falls back to ``val`` and back)."""
    if split not in SPLIT_FOLDERS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_FOLDERS)}")
    present = tree.subdirs(root)
    for name in SPLIT_FOLDERS[split]:
        if name in present:
            return _join(root, name)
    raise DataError(
        f"{tree.display(root)} has no {' or '.join(SPLIT_FOLDERS[split])} folder "
        f"(folders: {', '.join(present) or 'none'})"
    )


def split_folder(root: Path, split: str) -> Path:
    """The folder of ``split`` in the tree rooted at ``root`` on disk."""
    return root / split_dir(DiskTree(root), "", split)


def check_class_agreement(tree: Tree, root: str, folder: str, classes: list[str]) -> None:
    """Train and test (or val) must name the same classes, or labels would not match."""
    for other in ("train", "test", "val"):
        other_dir = _join(root, other)
        if other in tree.subdirs(root) and other_dir != folder:
            other_classes = tree.subdirs(other_dir)
            if other_classes != classes:
                only_here = sorted(set(classes) - set(other_classes))
                only_there = sorted(set(other_classes) - set(classes))
                raise DataError(
                    f"class folders differ between {tree.display(folder)} and {tree.display(other_dir)}: "
                    f"only in {posixpath.basename(folder)}: {only_here or 'none'}; "
                    f"only in {other}: {only_there or 'none'}"
                )


def is_image_name(name: str) -> bool:
    base = posixpath.basename(name)
    return not base.startswith(".") and posixpath.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def list_images(tree: Tree, folder: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Image files (sorted within each class) and their labels; an empty class is an error."""
    files: list[str] = []
    labels: list[int] = []
    ignored: list[str] = []
    for label, name in enumerate(classes):
        everything = tree.files_under(_join(folder, name))
        found = [f for f in everything if is_image_name(f)]
        ignored.extend(f for f in everything if not is_image_name(f))
        if not found:
            raise DataError(
                f"class folder {tree.display(_join(folder, name))} holds no images "
                f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        files.extend(found)
        labels.extend([label] * len(found))
    if ignored:
        log.info(
            "ignored %d non-image file(s) in %s, e.g. %s", len(ignored), tree.display(folder), tree.display(ignored[0])
        )
    return files, labels


def decode_split(
    tree: Tree, split: str, *, skip_corrupt: bool = False, progress: bool | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode one split of ``tree``.

    Returns images ``uint8 [N, 3, H, W]``, labels ``int64 [N]``, the class names and the files
    skipped as corrupt (with ``skip_corrupt``; otherwise the first one is a :class:`DataError`).
    """
    root = tree_root(tree)
    folder = split_dir(tree, root, split)
    classes = tree.subdirs(folder)
    if not classes:
        raise DataError(
            f"{tree.display(folder)} has no class folders (expected {tree.display(folder)}/<class>/<image>)"
        )
    check_class_agreement(tree, root, folder, classes)
    files, labels = list_images(tree, folder, classes)
    log.info("decoding %d images of %s", len(files), tree.display(folder))
    results = decode_files([tree.payload(f) for f in files], progress=progress, desc=f"decoding {split}")
    skipped, keep = [], []
    for i, (name, result) in enumerate(zip(files, results)):
        if isinstance(result, str):
            if not skip_corrupt:
                raise DataError(
                    f"cannot decode image {tree.display(name)}: {result} "
                    "(pass skip_corrupt=True / --skip-corrupt to skip such files)"
                )
            skipped.append(tree.display(name))
        else:
            keep.append(i)
    if not keep:
        raise DataError(f"no image of {tree.display(folder)} could be decoded")
    sizes = Counter(results[i].shape[:2] for i in keep)  # type: ignore[union-attr]
    (h, w), _ = sizes.most_common(1)[0]
    odd = [i for i in keep if results[i].shape[:2] != (h, w)]  # type: ignore[union-attr]
    if odd:
        names = ", ".join(f"{tree.display(files[i])} ({results[i].shape[1]}x{results[i].shape[0]})" for i in odd[:5])  # type: ignore[union-attr]
        raise DataError(
            f"{len(odd)} image(s) of {tree.display(folder)} are not {w}x{h} like the rest of the split: {names}"
            + (" ..." if len(odd) > 5 else "")
        )
    images = np.empty((len(keep), 3, h, w), dtype=np.uint8)
    for j, i in enumerate(keep):
        images[j] = results[i].transpose(2, 0, 1)  # type: ignore[union-attr]
    label_arr = np.asarray(labels, dtype=np.int64)[keep]
    if skipped:
        log.warning("skipped %d corrupt image(s) of %s", len(skipped), tree.display(folder))
    present = set(label_arr.tolist())
    empty = [c for k, c in enumerate(classes) if k not in present]
    if empty:
        raise DataError(f"class folder(s) {empty} of {tree.display(folder)} hold no decodable image")
    return images, label_arr, classes, skipped

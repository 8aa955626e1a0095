"""ImageNet-style streaming input: images decoded and augmented per sample in DataLoader workers.

Unlike the CIFAR path (:mod:`senet.data.dataset`, which decodes a split once into memory),
ImageNet-size trees are read file by file: :class:`StreamingImageFolder` lists an
ImageFolder split (``root/{train,val}/<class>/<image>``, the ImageNet layout) and turns one
image into a ``uint8 [3, crop, crop]`` tensor with the paper's recipe (spec section 6; paper
Section 5.1, see :mod:`senet.data.stream_transforms`): random-size crop and flip for
training, short side to 256 and centre crop 224 for evaluation. Mean/std normalisation
(:data:`~senet.preprocess.IMAGENET_MEAN`, :data:`~senet.preprocess.IMAGENET_STD`) is left to the
trainer, on the batch's device.

Determinism: a training sample is addressed by ``(index, aug_seed)``; the seed is
:func:`sample_seed` of ``(seed, epoch, position)``, ``position`` being the index's place in
the epoch's permutation (:class:`senet.data.order.EpochOrder`). A sample's augmentation thus
depends on nothing else: not on the number of workers (no worker ever repeats another's
draws), ranks, or on where a run was resumed. :class:`EpochBatchSampler` yields those keys
for one rank; :func:`train_loader` and :func:`eval_loader` build the DataLoaders.

A ``root`` that is a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive is extracted once
(safely and atomically) into ``<cache>/extracted/`` (``$SENET_CACHE``, else ``~/.cache/senet``)
and read from there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset, Sampler

from senet.data import cache, stream_transforms
from senet.data.archive import ARCHIVE_SUFFIXES, archive_stem, extract_archive
from senet.data.decode import decode_image
from senet.data.imagefolder import DiskTree, check_class_agreement, find_tree_root, list_images, split_dir
from senet.data.order import EpochOrder
from senet.errors import DataError
from senet.utils.seeding import derive_seed

log = logging.getLogger(__name__)

_LAYOUT = "{r}/train/<class>/<image> and {r}/val/<class>/<image> (or test/)"


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The 63-bit seed of the augmentation of the image at ``position`` (``0..n-1``) of the
    epoch's permutation: numpy's SeedSequence hash of the three numbers (stable across numpy
    versions, so a resumed run sees the same augmentations)."""
    return derive_seed(seed, epoch, position, 0xA06)


# ---------------------------------------------------------------------------------------------
# where the tree is: a folder, or an archive extracted into the cache


def _resolve_root(root: Path) -> Path:
    """The folder holding the split folders; an archive is extracted into the cache first."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"{root} does not exist: expected an ImageFolder tree {_LAYOUT.format(r=root)}, "
            "or a .tar / .tar.gz archive of one"
        )
    if root.is_file():
        name = root.name.lower()
        if not name.endswith(ARCHIVE_SUFFIXES):
            raise DataError(
                f"{root} is a file but not a .tar / .tar.gz / .tgz archive; expected a folder "
                f"{_LAYOUT.format(r=root)} or an archive of one"
            )
        stem = archive_stem(root)
        dest = cache.cache_root() / "extracted" / f"{stem}-{cache.fingerprint(root)}"
        root = extract_archive(root, dest)
    return find_tree_root(root)


# ---------------------------------------------------------------------------------------------
# the dataset


class StreamingImageFolder(Dataset):
    """One split of an ImageFolder tree, decoded and transformed one image at a time.

    ``root``: the folder holding ``train/`` and ``val/`` (or ``test/``) class folders, a
    folder one level above it, or an archive of either. ``split``: ``"train"``, ``"val"`` or
    ``"test"`` (``val`` falls back to ``test/`` and back). Classes are the sorted class
    folders (train and val must agree). ``train=True``: random-size crop to ``crop`` with
    ``scale`` / ``ratio`` and, with ``flip``, a horizontal flip (spec section 6);
    ``train=False``: short side to ``resize``, centre crop ``crop``.

    Items are addressed by ``(index, aug_seed)`` (see :class:`EpochBatchSampler`) and are
    ``(uint8 [3, crop, crop], label)``. A file that cannot be decoded is a
    :class:`DataError` naming it; with ``skip_corrupt`` a warning names it and the next
    decodable image of the dataset (in file order, wrapping round) is returned instead.

    The file names are held in one numpy byte-string array rather than a Python list, so
    DataLoader workers forked from the main process do not copy them page by page through
    reference counting (a known memory blow-up with 1.28M ImageNet files).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        train: bool,
        crop: int = 224,
        resize: int = 256,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        skip_corrupt: bool = False,
    ) -> None:
        if crop < 1 or (not train and resize < crop):
            raise ValueError(f"need crop >= 1 (and crop <= resize for evaluation), got crop={crop} resize={resize}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        tree_root = _resolve_root(Path(root))
        tree = DiskTree(tree_root)
        try:
            folder = split_dir(tree, "", split)
        except DataError as exc:
            raise DataError(f"{exc}; expected the layout {_LAYOUT.format(r=tree_root)}") from None
        classes = tree.subdirs(folder)
        if not classes:
            where = tree.display(folder)
            raise DataError(f"{where} has no class folders (expected {where}/<class>/<image>)")
        check_class_agreement(tree, "", folder, classes)
        files, labels = list_images(tree, folder, classes)
        prefix = len(folder) + 1
        self._folder = tree_root / folder
        self._names = np.array([os.fsencode(f[prefix:]) for f in files], dtype=np.bytes_)
        self.classes: list[str] = classes
        self.labels: torch.Tensor = torch.tensor(labels, dtype=torch.int64)
        self.source: str = str(self._folder)
        self.train, self.crop, self.resize = train, crop, resize
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip, self.skip_corrupt = flip, skip_corrupt
        self._warned: set[int] = set()
        log.info("%s: %d images in %d classes", self.source, len(self), len(classes))

    def __repr__(self) -> str:
        if self.train:
            mode = f"train crop={self.crop} scale={self.scale} ratio={self.ratio} flip={self.flip}"
        else:
            mode = f"eval resize={self.resize} crop={self.crop}"
        return f"StreamingImageFolder({self.source!r}, {len(self)} images, {len(self.classes)} classes, {mode})"

    def __len__(self) -> int:
        return int(self._names.shape[0])

    def path(self, index: int) -> Path:
        """The file of image ``index``."""
        return self._folder / os.fsdecode(self._names[index])

    @property
    def files(self) -> list[Path]:
        """Every image file, in dataset order (built on each access; see :meth:`path`)."""
        return [self._folder / os.fsdecode(n) for n in self._names]

    def _decode(self, index: int) -> np.ndarray | str:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never padded
        try:
            return decode_image(self.path(index))
        except Exception as exc:  # noqa: BLE001 - every decoder failure is reported per file
            return f"{type(exc).__name__}: {exc}"
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved

    def _load(self, index: int) -> np.ndarray:
        """Decoded RGB ``uint8 [H, W, 3]`` of ``index``, or of the next decodable image."""
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            result = self._decode(i)
            if not isinstance(result, str):
                return result
            if not self.skip_corrupt:
                raise DataError(
                    f"cannot decode image {self.path(i)}: {result} "
                    "(pass skip_corrupt=True / --skip-corrupt to use the next image instead)"
                )
            if i not in self._warned:
                self._warned.add(i)
                log.warning("cannot decode image %s (%s); using the next decodable image instead", self.path(i), result)
        raise DataError(f"no image of {self.source} could be decoded")

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"StreamingImageFolder items are addressed by (index, aug_seed), got {key!r}")
        index, aug_seed = int(key[0]), int(key[1])
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside 0..{len(self) - 1}")
        img = Image.fromarray(self._load(index))
        if self.train:
            rng = np.random.default_rng(aug_seed)
            out = stream_transforms.train_view(
                img, rng, crop=self.crop, scale=self.scale, ratio=self.ratio, flip=self.flip
            )
        else:
            out = stream_transforms.eval_view(img, resize=self.resize, crop=self.crop)
        return torch.from_numpy(out.transpose(2, 0, 1).copy()), int(self.labels[index])


# ---------------------------------------------------------------------------------------------
# batches and loaders


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's batches of ``(index, sample_seed(order.seed, epoch, position))`` for steps
    ``start_step..`` of ``epoch``, in the order of :meth:`EpochOrder.batches`.

    ``position`` is the index's place in the epoch's permutation, so the augmentation of a
    sample is the same for any number of workers or ranks and after a resume.
    """

    def __init__(self, order: EpochOrder, epoch: int, start_step: int = 0) -> None:
        steps = order.steps_per_epoch()
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} is outside 0..{steps} for this epoch")
        self.order, self.epoch, self.start_step = order, epoch, start_step

    def __len__(self) -> int:
        return self.order.steps_per_epoch() - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, epoch = self.order, self.epoch
        position = torch.empty(order.n, dtype=torch.int64)
        position[order.permutation(epoch)] = torch.arange(order.n)
        for batch in order.batches(epoch, self.start_step):
            yield [(i, sample_seed(order.seed, epoch, int(position[i]))) for i in batch.tolist()]


class _Collate:
    """Stack ``(image, label)`` samples into ``(uint8 [B, 3, crop, crop], int64 [B])``; an
    empty batch (a rank's share of a short last batch) gives empty tensors of those shapes."""

    def __init__(self, crop: int) -> None:
        self.crop = crop

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if not samples:
            return torch.empty(0, 3, self.crop, self.crop, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        images = torch.stack([s[0] for s in samples])
        return images, torch.tensor([s[1] for s in samples], dtype=torch.int64)


def _loader(dataset: StreamingImageFolder, batches: object, workers: int, pin_memory: bool, seed: int) -> DataLoader:
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return DataLoader(
        dataset,
        batch_sampler=batches,  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_Collate(dataset.crop),
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        # the workers' base seed comes from here, not from torch's global RNG (augmentations
        # do not use the workers' RNGs at all: every sample carries its own seed)
        generator=torch.Generator().manual_seed(seed),
    )


def train_loader(
    dataset: StreamingImageFolder,
    order: EpochOrder,
    epoch: int,
    start_step: int = 0,
    *,
    workers: int = 4,
    pin_memory: bool = False,
) -> DataLoader:
    """The DataLoader of this rank's training batches ``(uint8 [B, 3, crop, crop], int64 [B])``
    for steps ``start_step..`` of ``epoch`` (:class:`EpochBatchSampler`); ``workers=0``
    decodes in-process. Consumes no global RNG."""
    if order.n != len(dataset):
        raise ValueError(f"order is for {order.n} images but the dataset has {len(dataset)}")
    batches = EpochBatchSampler(order, epoch, start_step)
    return _loader(dataset, batches, workers, pin_memory, sample_seed(order.seed, epoch, -1))


def eval_loader(
    dataset: StreamingImageFolder,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 4,
    pin_memory: bool = False,
) -> DataLoader:
    """In-order batches of this rank's contiguous shard of ``dataset``
    (``torch.tensor_split(range(N), world_size)[rank]``: no padding and no duplicates, so
    counts summed over the ranks are exact; a shard may be empty when ``N < world_size``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    shard = torch.tensor_split(torch.arange(len(dataset)), world_size)[rank].tolist()
    batches = [[(i, 0) for i in shard[s : s + batch_size]] for s in range(0, len(shard), batch_size)]
    return _loader(dataset, batches, workers, pin_memory, 0)

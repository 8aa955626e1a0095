"""Where the trainer's batches come from: one process's share of every global batch.

* :class:`MemorySource` (``data.loader: memory``, CIFAR, spec section 5): the splits live in
  memory as uint8 tensors (on the GPU when there is one). Each step takes this process's
  contiguous shard of the global batch and augments it with the shard's part of the draws a
  generator seeded by ``(seed, epoch, step)`` makes for the whole batch, so the ranks of a
  group together see exactly the batches one process would, with the same augmentation.
* :class:`StreamSource` (``data.loader: stream``, ImageNet, spec section 6): an ImageFolder
  ``train/`` + ``val/`` tree decoded and augmented per image by DataLoader workers; each
  image's augmentation is seeded by ``(seed, epoch, position)``.

Both shard the test split contiguously over the ranks (no padding), so summed counts are exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from senet.data import EpochOrder, GpuAugment
from senet.errors import DataError
from senet.train.config import Config
from senet.train.data import load_splits
from senet.train.distributed import DistEnv, barrier
from senet.utils.seeding import derive_seed

Batch = tuple[torch.Tensor, torch.Tensor]


def step_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of the augmentation generator of one step (a hash of the three numbers)."""
    return derive_seed(seed, epoch, step, 0xA06)


def _stats(cfg: Config, default: tuple[tuple[float, ...], tuple[float, ...]]) -> tuple[tuple[float, ...], ...]:
    mean = tuple(cfg.data.mean) if cfg.data.mean is not None else default[0]
    std = tuple(cfg.data.std) if cfg.data.std is not None else default[1]
    return mean, std


class MemorySource:
    """CIFAR-size data held in memory and augmented batch-wise on the batch's device."""

    def __init__(self, cfg: Config, device: torch.device, env: DistEnv, *, channels_last: bool) -> None:
        self.cfg, self.device, self.env = cfg, device, env
        self.splits = load_splits(cfg.data)
        train = self.splits.train
        self.classes, self.source = self.splits.classes, train.source
        self.skipped = train.skipped + self.splits.test.skipped
        self.mean, self.std = _stats(cfg, (self.splits.mean, self.splits.std))
        d = cfg.data
        self.augment = GpuAugment(self.mean, self.std, pad=d.pad, crop=d.crop, flip=d.flip, cutout=d.cutout,
                                  channels_last=channels_last)
        self.order = EpochOrder(len(train.labels), d.batch_size, cfg.run.seed, drop_last=True)
        on_device = device.type == "cuda"  # CIFAR-size data lives on the GPU
        self.train_images = train.images.to(device) if on_device else train.images
        self.train_labels = train.labels.to(device)
        self.n_train, self.n_test = len(train.labels), len(self.splits.test.labels)

    def steps_per_epoch(self) -> int:
        return self.order.steps_per_epoch()

    def _shard(self, t: torch.Tensor) -> torch.Tensor:
        return t.tensor_split(self.env.world_size)[self.env.rank] if self.env.distributed else t

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        seed, rank = self.cfg.run.seed, self.env.rank
        for step, idx in enumerate(self.order.batches(epoch, start_step), start_step):
            shards = idx.tensor_split(self.env.world_size)
            offset = sum(len(s) for s in shards[:rank])
            part = shards[rank].to(self.train_images.device, non_blocking=True)
            gen = torch.Generator(device=self.device).manual_seed(step_seed(seed, epoch, step))
            x = self.augment(self.train_images[part].to(self.device, non_blocking=True), gen,
                             total=len(idx), offset=offset)
            y = self.train_labels[part.to(self.train_labels.device)]
            yield x, y

    def eval_batches(self) -> Iterator[Batch]:
        test, size = self.splits.test, self.cfg.data.eval_batch_size
        share = self._shard(torch.arange(self.n_test))
        if len(share) == 0:
            return
        first, n = int(share[0]), len(share)
        for i in range(first, first + n, size):
            stop = min(i + size, first + n)
            yield (self.augment.normalize(test.images[i:stop].to(self.device, non_blocking=True)),
                   test.labels[i:stop].to(self.device, non_blocking=True))


class StreamSource:
    """An ImageNet-layout tree read by DataLoader workers (spec section 6 augmentation)."""

    def __init__(self, cfg: Config, device: torch.device, env: DistEnv, *, channels_last: bool) -> None:
        from senet.data.stream import StreamingImageFolder
        from senet.preprocess import IMAGENET_MEAN, IMAGENET_STD

        d = cfg.data
        if d.path is None:
            raise DataError("data.loader=stream reads an ImageFolder tree: give its folder with --data "
                            "(it must hold train/<class>/... and val/<class>/...)")
        if d.train_subset or d.test_subset:
            raise DataError("data.train_subset / data.test_subset apply to data.loader=memory only")
        self.cfg, self.device, self.env = cfg, device, env
        common = {"crop": d.crop, "resize": d.resize, "scale": tuple(d.scale), "ratio": tuple(d.ratio),
                  "skip_corrupt": d.skip_corrupt}
        # An archive is extracted into each node's cache once: its first process does it while
        # the others wait, then they read the extracted tree.
        if env.local_rank == 0:
            self.train = StreamingImageFolder(d.path, "train", train=True, flip=d.flip, **common)
        barrier()
        if env.local_rank != 0:
            self.train = StreamingImageFolder(d.path, "train", train=True, flip=d.flip, **common)
        self.test = StreamingImageFolder(d.path, "val", train=False, **common)
        if self.test.classes != self.train.classes:
            raise DataError(f"the train and val splits of {self.train.source} have different classes "
                            f"({len(self.train.classes)} vs {len(self.test.classes)})")
        self.classes, self.source, self.skipped = self.train.classes, self.train.source, []
        self.mean, self.std = _stats(cfg, (IMAGENET_MEAN, IMAGENET_STD))
        self.normalize = GpuAugment(self.mean, self.std, pad=0, crop=d.crop, flip=False,
                                    channels_last=channels_last).normalize
        self.order = EpochOrder(len(self.train), d.batch_size, cfg.run.seed, drop_last=True,
                                rank=env.rank, world_size=env.world_size)
        self.n_train, self.n_test = len(self.train), len(self.test)
        self.pin = device.type == "cuda"

    def steps_per_epoch(self) -> int:
        return self.order.steps_per_epoch()

    def _to_device(self, batch: Batch) -> Batch:
        x, y = batch
        x = self.normalize(x.to(self.device, non_blocking=True))
        return x, y.to(self.device, non_blocking=True)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        from senet.data.stream import train_loader

        loader = train_loader(self.train, self.order, epoch, start_step, workers=self.cfg.data.workers,
                              pin_memory=self.pin)
        return map(self._to_device, loader)

    def eval_batches(self) -> Iterator[Batch]:
        from senet.data.stream import eval_loader

        loader = eval_loader(self.test, self.cfg.data.eval_batch_size, rank=self.env.rank,
                             world_size=self.env.world_size, workers=self.cfg.data.workers, pin_memory=self.pin)
        return map(self._to_device, loader)


def make_source(cfg: Config, device: torch.device, env: DistEnv, *, channels_last: bool) -> MemorySource | StreamSource:
    cls = StreamSource if cfg.data.loader == "stream" else MemorySource
    return cls(cfg, device, env, channels_last=channels_last)

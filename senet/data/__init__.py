"""Data for training and evaluation: CIFAR-10/100 (official python format or the JPEG copy),
ImageFolder trees and archives of them, decoded once into uint8 tensors and cached; a
deterministic, resumable data order; batched augmentation on the batch's device.

Typical use::

    train = load_split("cifar10", "train")
    mean, std = channel_stats(train)
    order = EpochOrder(len(train.labels), 128, seed=0)
    augment = GpuAugment(mean, std, cutout=16)
    for idx in order.batches(epoch):
        x = augment(train.images[idx].to(device), generator)
"""

from senet.data.augment import GpuAugment, Normalize
from senet.data.dataset import ImageDataset, channel_stats, load_split
from senet.data.order import EpochOrder

__all__ = ["EpochOrder", "GpuAugment", "ImageDataset", "Normalize", "channel_stats", "load_split"]

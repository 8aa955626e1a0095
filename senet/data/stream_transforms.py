"""Per-image ImageNet transforms on PIL images, every random draw from a seeded generator.

The paper's ImageNet recipe (spec section 6; paper Section 5.1, following Szegedy et al.
2015 "Going deeper with convolutions"):

* training: a random-size crop (scale and aspect-ratio augmentation) resized to 224 x 224,
  then a horizontal flip with probability 1/2 (:func:`train_view`);
* evaluation: the short side resized to 256, then the centre 224 x 224 crop
  (:func:`eval_view`).

The crop follows the standard Inception-style algorithm (the one of torchvision's
``RandomResizedCrop``): up to 10 tries of an area fraction drawn uniformly from ``scale`` and
an aspect ratio (width / height) drawn log-uniformly from ``ratio``, rounded to whole pixels,
accepted when it fits into the image at a uniformly drawn position; otherwise the centre crop
of the whole image clamped to the ``ratio`` range. Resizing is PIL's bilinear filter, which
is antialiased when shrinking. Nothing here touches Python's, numpy's or torch's global RNG:
the draws come from the ``numpy.random.Generator`` passed in, in a fixed order (the tries,
then the flip), so one seed gives one view on every process.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from senet.preprocess import INTERPOLATIONS

CropBox = tuple[int, int, int, int]  # top, left, height, width


def random_resized_crop_params(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> CropBox:
    """``(top, left, height, width)`` of a random-size crop of a ``width x height`` image.

    ``scale``: range of the crop's area as a fraction of the image's; ``ratio``: range of its
    aspect ratio (width / height). See the module docstring for the algorithm.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height  # fallback: the centre crop, clamped to the ratio range
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(img: Image.Image, box: CropBox, size: int) -> Image.Image:
    """The ``box`` (top, left, height, width) of ``img`` resized to ``size x size`` (bilinear)."""
    top, left, h, w = box
    return img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)


def train_view(
    img: Image.Image,
    rng: np.random.Generator,
    *,
    crop: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
) -> np.ndarray:
    """Random-size crop to ``crop x crop`` and, if ``flip``, a horizontal flip with p = 1/2;
    returns ``uint8 [crop, crop, 3]``. Draws the crop first, then the flip, from ``rng``."""
    box = random_resized_crop_params(img.width, img.height, scale, ratio, rng)
    out = np.asarray(resized_crop(img, box, crop))
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def short_side_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the short side to ``resize`` (the long side is
    scaled by the same factor and truncated, as torchvision's ``Resize(int)`` does)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


#: PIL's filter of each interpolation a config may name.
FILTERS = {name: getattr(Image.Resampling, name.upper()) for name in INTERPOLATIONS}


def eval_view(img: Image.Image, *, resize: int, crop: int, interpolation: str = "bilinear") -> np.ndarray:
    """Short side resized to ``resize`` (``interpolation``: PIL's bilinear by default), then the
    centre ``crop x crop`` (``resize >= crop``); returns ``uint8 [crop, crop, 3]``."""
    width, height = short_side_size(img.width, img.height, resize)
    if (width, height) != img.size:
        img = img.resize((width, height), FILTERS[interpolation])
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


def ten_crop_views(img: Image.Image, *, resize: int, crop: int, interpolation: str = "bilinear") -> np.ndarray:
    """The ILSVRC-style 10 crops: short side to ``resize``, then the four corner and the centre
    ``crop x crop`` crops, and the same of the mirrored image (torchvision's ``TenCrop`` order);
    returns ``uint8 [10, crop, crop, 3]``."""
    width, height = short_side_size(img.width, img.height, resize)
    if (width, height) != img.size:
        img = img.resize((width, height), FILTERS[interpolation])
    arr = np.asarray(img)
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    corners = [(0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop), (top, left)]
    views = [a[t:t + crop, x:x + crop] for a in (arr, arr[:, ::-1]) for t, x in corners]
    return np.ascontiguousarray(np.stack(views))

"""A detection set made on the fly: coloured shapes on a plain background, their exact boxes
(for tests and CPU-sized experiments with the detectors of paper section 5.3)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

SHAPES = ("rectangle", "ellipse", "triangle")


def _mask(shape: str, box: list[int], size: int) -> torch.Tensor:
    """Pixels (by their centres) of ``shape`` inscribed in ``box`` = ``x1, y1, x2, y2``."""
    x1, y1, x2, y2 = box
    c = torch.arange(size, dtype=torch.float32) + 0.5
    x, y = c[None, :], c[:, None]
    inside = (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
    if shape == "rectangle":
        return inside
    u = (x - (x1 + x2) / 2) / ((x2 - x1) / 2)  # -1..1 across the box
    v = (y - y1) / (y2 - y1)  # 0 at the top, 1 at the bottom
    if shape == "ellipse":
        return inside & (u**2 + (2 * v - 1) ** 2 <= 1)
    return inside & (u.abs() <= v)  # triangle: apex at the top centre, base along the bottom


def _overlaps(box: list[int], boxes: list[list[int]], gap: int) -> bool:
    return any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap
               for b in boxes)


class SyntheticShapes(Dataset):
    """``n`` RGB images of ``size`` x ``size`` pixels (0-1), each a plain background with 1 to
    ``max_objects`` non-overlapping shapes of random colour; the class is the shape (label
    ``1 + SHAPES.index(shape)``, 0 being torchvision's background), not the colour.

    Item ``i`` is ``(image, {"boxes": (N, 4) float x1 y1 x2 y2, "labels": (N,) int64})``, the
    tight box of the drawn pixels; the same for the same ``seed`` and ``i`` on any machine.
    """

    def __init__(self, n: int, size: int = 128, *, num_shapes: int = 3, max_objects: int = 3,
                 min_side: int | None = None, max_side: int | None = None, seed: int = 0) -> None:
        if not 1 <= num_shapes <= len(SHAPES):
            raise ValueError(f"num_shapes must be in [1, {len(SHAPES)}], got {num_shapes}")
        self.n, self.size, self.seed = n, size, seed
        self.shapes = SHAPES[:num_shapes]
        self.max_objects = max_objects
        self.min_side = min_side if min_side is not None else max(8, size // 8)
        self.max_side = max_side if max_side is not None else size // 2
        if not 4 <= self.min_side <= self.max_side <= size:
            raise ValueError(f"object sides must satisfy 4 <= min_side <= max_side <= size, got "
                             f"{self.min_side}, {self.max_side}, {size}")

    @property
    def num_classes(self) -> int:
        """Classes of a detector for this set, the background included (torchvision's count)."""
        return len(self.shapes) + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)

        def rand(lo: float, hi: float) -> float:
            return lo + (hi - lo) * torch.rand((), generator=g).item()

        background = torch.rand(3, generator=g) * 0.6 + 0.2
        image = background[:, None, None].expand(3, self.size, self.size).clone()
        boxes: list[list[int]] = []
        labels: list[int] = []
        wanted = int(torch.randint(1, self.max_objects + 1, (), generator=g))
        for _ in range(20 * wanted):  # a few tries per object to place it clear of the others
            if len(boxes) == wanted:
                break
            w, h = (int(rand(self.min_side, self.max_side + 1)) for _ in range(2))
            x1, y1 = int(rand(0, self.size - w + 1)), int(rand(0, self.size - h + 1))
            box = [x1, y1, x1 + w, y1 + h]
            if _overlaps(box, boxes, gap=2):
                continue
            label = int(torch.randint(len(self.shapes), (), generator=g))
            colour = torch.rand(3, generator=g)
            while (colour - background).abs().sum() < 0.6:  # visible against the background
                colour = torch.rand(3, generator=g)
            mask = _mask(self.shapes[label], box, self.size)
            image[:, mask] = colour[:, None]
            ys, xs = mask.nonzero(as_tuple=True)
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
            labels.append(label + 1)
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        return image, target


def collate(batch: list[tuple[torch.Tensor, Any]]) -> tuple[list[torch.Tensor], list[Any]]:
    """Images and targets as the two lists torchvision's detectors take (for a ``DataLoader``)."""
    images, targets = zip(*batch)
    return list(images), list(targets)

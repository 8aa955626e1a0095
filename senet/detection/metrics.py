"""Box mean average precision as COCO computes it (the AP and AP@IoU=0.5 of the paper's Table 7).

pycocotools' ``COCOeval`` for boxes, area range "all", no crowd regions: per image and class
the ``max_detections`` best detections are matched greedily, best score first, to the unmatched
ground truth box of highest IoU (at least the threshold); per class, precision is made monotone
and read at 101 recall points; classes without ground truth are left out; AP is the mean over
classes and the IoU thresholds 0.50:0.05:0.95.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)  # as COCOeval, to the last bit


def _array(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), ``x1, y1, x2, y2``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """True for each detection (rows, best score first) matched to a ground truth box (columns)."""
    taken = np.zeros(ious.shape[1], dtype=bool)
    hit = np.zeros(ious.shape[0], dtype=bool)
    for d in range(ious.shape[0]):
        best, m = min(threshold, 1 - 1e-10), -1
        for g in range(ious.shape[1]):  # COCOeval's loop: the last box of the highest IoU wins a tie
            if not taken[g] and ious[d, g] >= best:
                best, m = ious[d, g], g
        if m >= 0:
            taken[m] = hit[d] = True
    return hit


def _average_precision(scores: np.ndarray, hits: np.ndarray, num_gt: int) -> float:
    if not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(hits[order]).astype(float)
    fp = np.cumsum(~hits[order]).astype(float)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))
    for i in range(len(precision) - 1, 0, -1):  # the precision envelope
        precision[i - 1] = max(precision[i - 1], precision[i])
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
    return float(q.mean())


def mean_average_precision(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    *,
    iou_thresholds: Sequence[float] = tuple(IOU_THRESHOLDS),
    max_detections: int = 100,
) -> dict[str, Any]:
    """COCO box AP of ``predictions`` (per image ``boxes`` (N, 4) ``x1 y1 x2 y2``, ``scores``,
    ``labels``: what torchvision's detectors return in eval mode) against ``targets`` (per image
    ``boxes`` and ``labels``). Tensors or arrays.

    Returns ``map`` (mean over classes and ``iou_thresholds``: COCO's AP), ``map_50`` and
    ``map_75`` (when those thresholds are among them), ``per_class`` (label -> AP over the
    thresholds) and ``per_threshold`` (threshold -> AP over classes). Labels with no ground truth
    box are left out; ``map`` is NaN when no image has any.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    thresholds = [float(t) for t in iou_thresholds]
    per_class: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # label -> [(scores, hits per threshold)]
    num_gt: dict[int, int] = {}
    for pred, target in zip(predictions, targets):
        gt_boxes = _array(target["boxes"], np.float64).reshape(-1, 4)
        gt_labels = _array(target["labels"], np.int64).reshape(-1)
        boxes = _array(pred["boxes"], np.float64).reshape(-1, 4)
        scores = _array(pred["scores"], np.float64).reshape(-1)
        labels = _array(pred["labels"], np.int64).reshape(-1)
        for c in np.unique(gt_labels):
            num_gt[int(c)] = num_gt.get(int(c), 0) + int((gt_labels == c).sum())
        for c in np.unique(labels):
            mine = np.flatnonzero(labels == c)
            mine = mine[np.argsort(-scores[mine], kind="mergesort")][:max_detections]
            ious = box_iou(boxes[mine], gt_boxes[gt_labels == c])
            hits = np.stack([_match(ious, t) for t in thresholds])
            per_class.setdefault(int(c), []).append((scores[mine], hits))
    aps = {}
    for c in sorted(num_gt):
        found = per_class.get(c, [])
        scores = np.concatenate([s for s, _ in found]) if found else np.zeros(0)
        hits = np.concatenate([h for _, h in found], axis=1) if found else np.zeros((len(thresholds), 0), bool)
        aps[c] = [_average_precision(scores, hits[k], num_gt[c]) for k in range(len(thresholds))]
    table = np.array([aps[c] for c in sorted(aps)]).reshape(len(aps), len(thresholds))
    out: dict[str, Any] = {
        "map": float(table.mean()) if table.size else float("nan"),
        "per_class": {c: float(np.mean(v)) for c, v in aps.items()},
        "per_threshold": {round(t, 2): float(table[:, k].mean()) if table.size else float("nan")
                          for k, t in enumerate(thresholds)},
    }
    for key, t in (("map_50", 0.5), ("map_75", 0.75)):
        if round(t, 2) in out["per_threshold"]:
            out[key] = out["per_threshold"][round(t, 2)]
    return out

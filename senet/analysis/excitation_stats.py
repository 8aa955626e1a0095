"""Statistics of recorded SE excitations (paper section 7) and the files ``senet analyze`` writes.

**Specificity score** of one block, over ``K`` classes with class means ``m_kc`` and
within-class (population) variances ``v_kc`` of channel ``c``:
``B_c = 1/K sum_k (m_kc - 1/K sum_j m_jc)^2`` (between-class variance of the class means),
``W_c = 1/K sum_k v_kc`` (mean within-class variance), ``score = mean_c B_c / mean_c W_c``.
0 means the class does not move the excitations; 1 means between-class spread equals
within-class spread (``class_share = sum B / (sum B + sum W) = 0.5``). Without any class
effect the score is not exactly 0 but about ``chance = (1 - 1/K) h / (1 - h)``,
``h = mean_k 1/n_k`` (``(K - 1) / (K (n - 1))`` for ``n`` images per class): the ratio of the
expected ``B`` and ``W`` when every image's excitation is the same distribution.

**Channel importance** of a block: the mean excitation of each channel over the recorded
images (section 7 suggests excitations as importance scores, e.g. for pruning).

Files (see :func:`write_outputs`):

* ``excitations.csv``: long format, one row per (block, image, channel) with columns
  ``block, image, class, channel, value`` (``image``: the image's index in its split).
  ``pd.read_csv(f).pivot_table(index=["block", "image"], columns="channel", values="value")``
  gives one row per image; ``groupby(["block", "class", "channel"]).value.mean()`` the curves
  of Fig. 6. ``excitations.safetensors`` holds the same as one ``[N, C]`` tensor per block plus
  ``labels`` and ``image_ids`` (class names in its metadata).
* ``importance.csv`` (``block, channel, importance, std``) and ``importance.safetensors``
  (one float32 ``[C]`` tensor per block).
* ``specificity.csv``: one row per block (``block, stage, index, channels, images, classes,
  score, class_share, chance, mean_excitation, std_excitation, frac_above_0.9,
  frac_below_0.1, hint``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from senet.analysis.excitation import Excitations, SEBlock


@dataclass(frozen=True)
class BlockStats:
    """Statistics of one block's excitations over ``K`` classes (formula in the module docstring).

    ``labels`` are the class label values (rows of ``class_mean`` / ``class_std``), ``counts``
    their numbers of images; ``mean`` / ``std`` are over all images: ``mean`` is the
    per-channel importance score (section 7). ``between`` / ``within`` are ``B_c`` / ``W_c``.
    """

    name: str
    labels: tuple[int, ...]
    counts: torch.Tensor  # [K]
    class_mean: torch.Tensor  # [K, C]
    class_std: torch.Tensor  # [K, C]
    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]
    between: torch.Tensor  # [C]
    within: torch.Tensor  # [C]
    score: float
    chance: float
    frac_high: float  # fraction of all values > 0.9
    frac_low: float  # fraction of all values < 0.1

    @property
    def class_share(self) -> float:
        b, w = float(self.between.sum()), float(self.within.sum())
        return b / (b + w) if b + w > 0 else 0.0

    @property
    def hint(self) -> str:
        """A rough label: class-agnostic below ``max(0.1, 3 * chance)``, class-specific from 1."""
        if len(self.labels) < 2:
            return "n/a (one class)"
        if self.score < max(0.1, 3 * self.chance):
            text = "class-agnostic"
        elif self.score < 1:
            text = "partly class-specific"
        else:
            text = "class-specific"
        return text + (", mostly > 0.9" if self.frac_high >= 0.5 else "")


def block_statistics(values: torch.Tensor, labels: torch.Tensor, name: str = "") -> BlockStats:
    """Per-class and overall statistics of one block's excitations ``values [N, C]``, and the
    class-specificity score (formula in the module docstring)."""
    if values.dim() != 2 or len(values) != len(labels) or len(values) == 0:
        raise ValueError(f"expected values [N, C] with N = len(labels) > 0, got {tuple(values.shape)} "
                         f"and {len(labels)} labels")
    v = values.double()
    present = tuple(int(c) for c in torch.unique(labels))
    counts = torch.tensor([int((labels == c).sum()) for c in present], dtype=torch.float64)
    cm = torch.stack([v[labels == c].mean(0) for c in present])
    cv = torch.stack([v[labels == c].var(0, unbiased=False) for c in present])
    between = cm.var(0, unbiased=False)
    within = cv.mean(0)
    b, w = float(between.mean()), float(within.mean())
    score = 0.0 if b == 0 else (b / w if w > 0 else math.inf)
    h = float((1 / counts).mean())
    k = len(present)
    chance = (1 - 1 / k) * h / (1 - h) if h < 1 else math.nan
    return BlockStats(
        name=name, labels=present, counts=counts, class_mean=cm.float(), class_std=cv.sqrt().float(),
        mean=v.mean(0).float(), std=v.std(0, unbiased=False).float(), between=between.float(),
        within=within.float(), score=score, chance=chance,
        frac_high=float((v > 0.9).double().mean()), frac_low=float((v < 0.1).double().mean()),
    )


def analyse(excitations: Excitations) -> dict[str, BlockStats]:
    """:func:`block_statistics` of every recorded block, in forward order."""
    return {b.name: block_statistics(excitations.values[b.name], excitations.labels, b.name)
            for b in excitations.blocks}


def channel_importance(stats: dict[str, BlockStats]) -> dict[str, torch.Tensor]:
    """Per-channel importance of each block: its mean excitation over the recorded images
    (section 7 suggests it for pruning); float32 ``[C]``."""
    return {name: s.mean.clone() for name, s in stats.items()}


def summary_table(stats: dict[str, BlockStats], blocks: Sequence[SEBlock]) -> str:
    """The printed summary: per block its score, class share, mean excitation and a hint."""
    rows = [f"{'block':<9}{'channels':>9}{'score':>9}{'class%':>8}{'mean s':>8}{'s>0.9':>7}  hint"]
    for b in blocks:
        s = stats[b.name]
        rows.append(f"{b.name:<9}{b.channels:>9}{s.score:>9.3f}{100 * s.class_share:>7.1f}%"
                    f"{float(s.mean.mean()):>8.3f}{s.frac_high:>7.2f}  {s.hint}")
    first = next(iter(stats.values()))
    rows.append(f"score = mean between-class variance / mean within-class variance; no class effect gives about "
                f"{first.chance:.3f} here ({len(first.labels)} classes, {int(first.counts.min())}-"
                f"{int(first.counts.max())} images each); class% = between / (between + within)")
    return "\n".join(rows)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    from senet.utils.atomic import write_text
    from senet.utils.text import csv_text

    write_text(path, csv_text(header, rows))


def _g(x: float) -> str:
    return f"{x:.6g}"


def write_outputs(excitations: Excitations, stats: dict[str, BlockStats], out: str | Path) -> dict[str, Path]:
    """Write ``excitations.csv`` / ``.safetensors``, ``importance.csv`` / ``.safetensors`` and
    ``specificity.csv`` (formats in the module docstring) into ``out``; returns their paths."""
    from senet.errors import fs_error
    from senet.weights.io import write_safetensors

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fs_error(e, out, "create the output folder") from None
    exc, names = excitations, excitations.classes
    paths = {k: out / k for k in ("excitations.csv", "excitations.safetensors", "importance.csv",
                                  "importance.safetensors", "specificity.csv")}
    ids, cls = exc.image_ids.tolist(), [names[int(c)] for c in exc.labels]

    def exc_rows() -> Iterable[list[object]]:
        for b in exc.blocks:
            for img, c, row in zip(ids, cls, exc.values[b.name].tolist()):
                for ch, value in enumerate(row):
                    yield [b.name, img, c, ch, _g(value)]

    _write_csv(paths["excitations.csv"], ["block", "image", "class", "channel", "value"], exc_rows())
    meta = {"classes": json.dumps(names), "blocks": json.dumps([b.name for b in exc.blocks])}
    write_safetensors(paths["excitations.safetensors"],
                      {**exc.values, "labels": exc.labels, "image_ids": exc.image_ids}, meta)
    importance = channel_importance(stats)
    _write_csv(paths["importance.csv"], ["block", "channel", "importance", "std"],
               ([b.name, ch, _g(m), _g(s)] for b in exc.blocks
                for ch, (m, s) in enumerate(zip(importance[b.name].tolist(), stats[b.name].std.tolist()))))
    write_safetensors(paths["importance.safetensors"], importance,
                      {"what": "mean excitation per channel", "images": str(len(exc.labels)), **meta})
    header = ["block", "stage", "index", "channels", "images", "classes", "score", "class_share", "chance",
              "mean_excitation", "std_excitation", "frac_above_0.9", "frac_below_0.1", "hint"]
    _write_csv(paths["specificity.csv"], header, (
        [b.name, b.stage, b.index, b.channels, len(exc.labels), len(s.labels), _g(s.score), _g(s.class_share),
         _g(s.chance), _g(float(s.mean.mean())), _g(float(exc.values[b.name].std())), _g(s.frac_high),
         _g(s.frac_low), s.hint]
        for b in exc.blocks for s in [stats[b.name]]))
    return paths

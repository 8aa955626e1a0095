"""Figures 6 and 7 of the paper (section 7) from recorded excitation statistics.

* :func:`plot_class_means` (Fig. 6): for each chosen SE block, the mean excitation of a sample
  of channels for each class, and the mean over all images ("all");
* :func:`plot_class_spread` (Fig. 7): mean and standard deviation within one class.

matplotlib is imported when a figure is drawn (Agg backend, no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from senet.analysis.excitation import SEBlock
from senet.analysis.excitation_stats import BlockStats
from senet.utils.plotting import pyplot, save_png


def _figure(n: int) -> tuple[Any, list[Any]]:
    plt = pyplot()
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _axis(ax: Any, block: SEBlock, picked: torch.Tensor) -> None:
    ax.set_title(f"{block.name} ({len(picked)} of {block.channels} channels)", fontsize=10)
    ax.set_xlabel("channel" if len(picked) == block.channels else "sampled channel (in channel order)")
    ax.set_ylabel("activation")
    ax.set_xlim(-0.5, len(picked) - 0.5)
    ax.grid(alpha=0.3)


def plot_class_means(
    stats: Mapping[str, BlockStats],
    blocks: Sequence[SEBlock],
    channels: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Fig. 6: one panel per block of ``blocks``, one curve per class of ``stats`` over the
    channels ``channels[block]``, and the mean over all images in black."""
    if not blocks:
        raise ValueError("no SE blocks to plot")
    fig, axes = _figure(len(blocks))
    for ax, block in zip(axes, blocks):
        s, picked = stats[block.name], channels[block.name]
        x = range(len(picked))
        if len(s.labels) > 10:  # more classes than the default colour cycle
            import matplotlib

            ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i % 20) for i in range(len(s.labels))])
        for row, label in enumerate(s.labels):
            ax.plot(x, s.class_mean[row, picked].tolist(), lw=1, alpha=0.85, label=class_names[label])
        ax.plot(x, s.mean[picked].tolist(), "k--", lw=1.6, label="all")
        _axis(ax, block, picked)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                    ncol=1 + len(stats[blocks[0].name].labels) // 25)
    fig.suptitle(title or "Mean excitation per class (paper Fig. 6)")
    return save_png(fig, path, bbox_inches="tight")


def plot_class_spread(
    stats: Mapping[str, BlockStats],
    blocks: Sequence[SEBlock],
    channels: Mapping[str, torch.Tensor],
    class_label: int,
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Fig. 7: for the class ``class_label``, the mean excitation and one standard deviation
    (error bars) over its images, one panel per block, over the channels ``channels[block]``."""
    if not blocks:
        raise ValueError("no SE blocks to plot")
    first = stats[blocks[0].name]
    if class_label not in first.labels:
        raise ValueError(f"class {class_names[class_label]!r} was not recorded")
    row = first.labels.index(class_label)
    fig, axes = _figure(len(blocks))
    for ax, block in zip(axes, blocks):
        s, picked = stats[block.name], channels[block.name]
        ax.errorbar(range(len(picked)), s.class_mean[row, picked].tolist(), yerr=s.class_std[row, picked].tolist(),
                    fmt="o-", ms=2.5, lw=1, elinewidth=0.8, capsize=1.5)
        _axis(ax, block, picked)
    n = int(first.counts[row])
    fig.suptitle(title or f"Excitation of class {class_names[class_label]!r}: mean and std over {n} images "
                          "(paper Fig. 7)")
    return save_png(fig, path, bbox_inches="tight")

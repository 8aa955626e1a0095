"""Training curves: loss, error and learning rate against epochs (``curves.png``)."""

from __future__ import annotations

import math
from pathlib import Path

from senet.utils.plotting import pyplot, save_png


def plot_curves(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    plt = pyplot()
    epochs = [row["epoch"] for row in history]

    def series(key: str) -> list[float]:
        return [row.get(key, math.nan) for row in history]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.plot(epochs, series("train_loss"), label="train")
    ax.plot(epochs, series("test_loss"), "o-", ms=3, label="test")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax.legend()
    ax = axes[1]
    ax.plot(epochs, [100 * v for v in series("train_top1_err")], label="train top-1")
    ax.plot(epochs, [100 * v for v in series("test_top1_err")], "o-", ms=3, label="test top-1")
    ax.plot(epochs, [100 * v for v in series("test_top5_err")], "o--", ms=3, label="test top-5")
    ax.set(xlabel="epoch", ylabel="error (%)", title="error")
    ax.legend()
    ax = axes[2]
    ax.plot(epochs, series("lr"))
    ax.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="learning rate")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_png(fig, path)

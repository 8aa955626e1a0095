"""Figures written as PNG files: matplotlib, imported when a figure is drawn, on the Agg backend
(no display needed); the file is written atomically (:mod:`senet.utils.atomic`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot``, on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a 110 dpi PNG (``savefig``: more of matplotlib's
    ``savefig`` options) and close it."""
    import matplotlib.pyplot as plt

    from senet.utils.atomic import atomic_write

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, **savefig)
    plt.close(fig)
    path = Path(path)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path

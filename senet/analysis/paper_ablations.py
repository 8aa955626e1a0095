"""The paper's ablation results on ImageNet (Hu et al., TPAMI 2019, section 6, Tables 10-16).

The numbers live in ``senet/paper/ablations.csv``, one row per cell of each study of
:mod:`senet.analysis.ablate`: single-crop top-1 / top-5 error (%) of SE-ResNet-50 variants
trained on ImageNet with the ablation recipe (spec section 6), and the params (M) / GFLOPs
(224x224) where the paper states them. A blank cell is a figure the paper does not give.
They describe a different dataset, model and budget from a CIFAR study: the trend across
a study's cells is comparable, the absolute errors are not.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

PAPER_SETTING = "ImageNet, SE-ResNet-50 (Hu et al., Tables 2, 10-16)"


@dataclass(frozen=True)
class PaperAblation:
    """One row of one of the paper's ablation tables."""

    study: str
    cell: str
    label: str
    table: str
    top1: float
    top5: float | None
    params_m: float | None
    gflops: float | None
    note: str = ""

    def error_text(self) -> str:
        """``"22.28 (6.03)"``: top-1 error, top-5 in parentheses where the paper gives it."""
        return f"{self.top1:.2f}" + (f" ({self.top5:.2f})" if self.top5 is not None else "")


def _float(cell: str | None) -> float | None:
    return float(cell) if cell and cell.strip() else None


@lru_cache(maxsize=1)
def paper_ablations() -> tuple[PaperAblation, ...]:
    """Every row of ``ablations.csv``."""
    text = resources.files("senet.paper").joinpath("ablations.csv").read_text()
    rows = []
    for r in csv.DictReader(text.splitlines()):
        top1 = _float(r["top1"])
        if top1 is None:
            raise ValueError(f"senet/paper/ablations.csv: row {r['study']}/{r['cell']} has no top-1 error")
        rows.append(PaperAblation(r["study"], r["cell"], r["label"], r["table"], top1, _float(r["top5"]),
                                  _float(r["params_m"]), _float(r["gflops"]), r.get("note") or ""))
    return tuple(rows)


def paper_ablation(study: str, cell: str) -> PaperAblation | None:
    """The paper's row for ``cell`` of ``study``, or ``None`` where the paper has none
    (for example SE in stage 5 only, which Table 13 does not report)."""
    for row in paper_ablations():
        if row.study == study and row.cell == cell:
            return row
    return None

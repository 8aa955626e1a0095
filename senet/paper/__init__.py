"""The paper's complexity figures (spec section 4) and their comparison with measured ones.

``complexity.csv`` is the checked-in table: one row per row of the paper's Tables 2, 10,
13, 15 and 16 (and further tables as model families join), with the model name and the
``create_model`` keywords that configure it, the input size, and the paper's params (M)
and GFLOPs; a blank cell is a figure the paper does not give. ``note`` (optional) explains
a documented exception.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator

TOLERANCE = 0.01  # spec section 8: within 1% of the paper


@dataclass(frozen=True)
class PaperRow:
    table: str
    label: str
    model: str
    kwargs: dict[str, Any]
    input: int
    params_m: float | None
    gflops: float | None
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    row: PaperRow
    params_m: float
    gflops: float

    @property
    def params_diff(self) -> float | None:
        return None if self.row.params_m is None else self.params_m / self.row.params_m - 1

    @property
    def gflops_diff(self) -> float | None:
        return None if self.row.gflops is None else self.gflops / self.row.gflops - 1

    @property
    def ok(self) -> bool:
        diffs = [d for d in (self.params_diff, self.gflops_diff) if d is not None]
        return all(abs(round(d, 6)) <= TOLERANCE for d in diffs)


def _float(cell: str) -> float | None:
    return float(cell) if cell.strip() else None


def paper_rows() -> list[PaperRow]:
    """The rows of ``complexity.csv``."""
    text = resources.files("senet.paper").joinpath("complexity.csv").read_text()
    rows = []
    for r in csv.DictReader(text.splitlines()):
        rows.append(
            PaperRow(
                table=r["table"],
                label=r["label"],
                model=r["model"],
                kwargs=json.loads(r["kwargs"]),
                input=int(r["input"]),
                params_m=_float(r["params_m"]),
                gflops=_float(r["gflops"]),
                note=r.get("note") or "",
            )
        )
    return rows


def compare(rows: list[PaperRow] | None = None) -> Iterator[Comparison]:
    """Measure every row's model (built on the meta device: nothing is computed)."""
    import torch

    from senet.complexity import complexity
    from senet.models import create_model

    cache: dict[tuple, tuple[float, float]] = {}
    for row in rows if rows is not None else paper_rows():
        key = (row.model, json.dumps(row.kwargs, sort_keys=True), row.input)
        if key not in cache:
            with torch.device("meta"):
                model = create_model(row.model, **row.kwargs)
            c = complexity(model, (3, row.input, row.input))
            cache[key] = (c.mparams, c.gflops)
        yield Comparison(row, *cache[key])

"""An ablation study's results: per-cell statistics over seeds, the paper-shaped Markdown
table (``table.md``), ``results.csv`` / ``results.json`` and ``plot.png``.

Errors are test-set top-1 / top-5 error in %, as mean and sample standard deviation
(``ddof=1``) over the seeds; '-' where there is one seed. Beside each row stands the paper's
ImageNet top-1 (top-5) error for the same variant of SE-ResNet-50 (Tables 2, 10-16), which is
comparable in its trend across the rows only, not in absolute terms. Where the study has the
baseline without SE, each SE cell's paired difference from it (same seeds) is given with its
95% t interval (:mod:`senet.analysis.paired`). ``curves.csv`` / ``curves.png``: the test error
per epoch of every cell, mean and spread over the seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senet.analysis.ablate import PlannedCell, StudyPlan
from senet.analysis.ablate_run import RunOutcome
from senet.analysis.paired import PairedDifference, paired_difference
from senet.analysis.paper_ablations import PAPER_SETTING, paper_ablation
from senet.utils.plotting import pyplot, save_png
from senet.utils.text import csv_text

RESULTS_CSV, RESULTS_JSON, TABLE_MD, PLOT_PNG = "results.csv", "results.json", "table.md", "plot.png"
CURVES_CSV, CURVES_PNG = "curves.csv", "curves.png"


@dataclass
class CellResult:
    """A cell's results over its seeds: errors in %, complexity from the run summaries
    (FLOPs at the dataset's input size, as the trainer counts them)."""

    cell: PlannedCell
    seeds: list[int]
    top1: list[float]
    top5: list[float]
    params: int | None
    flops: int | None
    diverged: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.top1)

    @property
    def top1_mean(self) -> float | None:
        return mean_std(self.top1)[0]

    @property
    def top1_std(self) -> float | None:
        return mean_std(self.top1)[1]

    @property
    def top5_mean(self) -> float | None:
        return mean_std(self.top5)[0]

    @property
    def top5_std(self) -> float | None:
        return mean_std(self.top5)[1]

    @property
    def top1_by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.top1))


def paired_with_baseline(results: Sequence[CellResult]) -> dict[str, PairedDifference]:
    """Per SE cell: its top-1 error minus the no-SE cell's, paired by seed (empty when the
    study has no baseline cell or no seed both finished)."""
    base = next((r for r in results if not r.cell.cell.has_se), None)
    if base is None:
        return {}
    out = {}
    for r in results:
        if r.cell.cell.has_se and (d := paired_difference(r.top1_by_seed, base.top1_by_seed)) is not None:
            out[r.cell.id] = d
    return out


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of ``values``; the deviation is
    ``None`` for fewer than two values, both are ``None`` for none."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def collect(plan: StudyPlan, outcomes: Sequence[RunOutcome]) -> list[CellResult]:
    """One :class:`CellResult` per cell of ``plan`` (in its order) from the runs' outcomes."""
    results = []
    for pc in plan.cells:
        mine = [o for o in outcomes if o.run.cell.id == pc.id]
        done = [o for o in mine if o.summary is not None]
        first = done[0].summary if done else {}
        results.append(CellResult(
            cell=pc,
            seeds=[o.run.seed for o in done],
            top1=[100 * float(o.summary["test_top1_err"]) for o in done if o.summary],
            top5=[100 * float(o.summary["test_top5_err"]) for o in done if o.summary],
            params=first.get("params"),
            flops=first.get("flops"),
            diverged=[o.run.seed for o in mine if o.status == "diverged"],
        ))
    return results


# ------------------------------------------------------------------ formatting
def _flops_unit(results: Sequence[CellResult]) -> tuple[str, float]:
    biggest = max((r.flops for r in results if r.flops), default=0)
    return ("GFLOPs", 1e9) if biggest >= 1e9 else ("MFLOPs", 1e6)


def mean_std_text(mean: float | None, std: float | None) -> str:
    """``"12.34 ± 0.56"`` (``"-"`` without a mean, ``"± -"`` without a spread) for the tables."""
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f} ± -"


def _paper(study: str, cell_id: str) -> tuple[str, str]:
    row = paper_ablation(study, cell_id)
    if row is None:
        return "-", "-"
    params = f"{row.params_m:g}M" if row.params_m is not None else "-"
    gflops = f"{row.gflops:g}" if row.gflops is not None else "-"
    return f"{row.error_text()} (T{row.table})", f"{params} / {gflops}"


def _notes(r: CellResult) -> str:
    notes = [r.cell.note] if r.cell.note else []
    if r.diverged:
        notes.append(f"diverged with seed(s) {', '.join(map(str, r.diverged))}")
    return "; ".join(notes)


def markdown_table(plan: StudyPlan, results: Sequence[CellResult]) -> str:
    """The paper-shaped table: one row per cell, this study's errors (mean ± std over seeds),
    params and FLOPs, and the paper's ImageNet figures beside."""
    unit, scale = _flops_unit(results)
    paired = paired_with_baseline(results)
    has_base = any(not r.cell.cell.has_se for r in results)
    b = plan.base
    subset = f", {b.data.train_subset} training images" if b.data.train_subset else ""
    steps = f", at most {b.run.max_steps} steps" if b.run.max_steps else ""
    lines = [
        f"### {plan.title}: `{plan.model}` on {b.data.dataset}",
        "",
        f"Recipe `{plan.recipe}`, {b.schedule.epochs} epoch(s){subset}{steps}, seeds "
        f"{', '.join(map(str, plan.seeds))}; test error in % as mean ± sample std over seeds "
        f"('-': one seed); {unit} at {b.data.crop}x{b.data.crop}.",
        f"Paper columns: {PAPER_SETTING}, top-1 (top-5) error in % and params / GFLOPs at 224x224 "
        "as the paper gives them (T = its table). A different dataset, model and budget: compare "
        "the trend across rows, not the absolute numbers.",
    ]
    if has_base:
        lines.append("Δ vs no SE: top-1 error minus the no-SE cell's, paired by seed, mean [95% t interval] "
                     "in points; an interval that excludes 0 is a difference these seeds resolve.")
    lines += [
        "",
        f"| cell | top-1 err % | top-5 err % |{' Δ top-1 vs no SE |' if has_base else ''} seeds | params | "
        f"{unit} | paper top-1 (top-5) % | paper params / GFLOPs | note |",
        "|---|---|---|" + ("---|" if has_base else "") + "---|---|---|---|---|---|",
    ]
    for r in results:
        paper_err, paper_cost = _paper(plan.study, r.cell.id)
        params = f"{r.params:,}" if r.params is not None else "-"
        flops = f"{r.flops / scale:.3f}" if r.flops is not None else "-"
        diff = ""
        if has_base:
            d = paired.get(r.cell.id)
            diff = f" {d.text() if d else '-'} |"
        lines.append(f"| {r.cell.label} | {mean_std_text(r.top1_mean, r.top1_std)} | {mean_std_text(r.top5_mean, r.top5_std)} |{diff} "
                     f"{r.n} | {params} | {flops} | {paper_err} | {paper_cost} | {_notes(r)} |")
    return "\n".join(lines) + "\n"


def result_rows(plan: StudyPlan, results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """One flat record per cell: what ``results.csv`` and ``results.json`` hold."""
    rows = []
    paired = paired_with_baseline(results)
    for r in results:
        paper = paper_ablation(plan.study, r.cell.id)
        d = paired.get(r.cell.id)
        rows.append({
            "study": plan.study, "cell": r.cell.id, "label": r.cell.label, "model": r.cell.model,
            "kwargs": json.dumps(r.cell.kwargs, sort_keys=True), "n_seeds": r.n,
            "seeds": " ".join(map(str, r.seeds)),
            "top1_err_mean": r.top1_mean, "top1_err_std": r.top1_std,
            "top5_err_mean": r.top5_mean, "top5_err_std": r.top5_std,
            "top1_diff_vs_none": d.mean if d else None, "top1_diff_std": d.std if d else None,
            "top1_diff_ci_low": d.ci_low if d else None, "top1_diff_ci_high": d.ci_high if d else None,
            "diff_pairs": d.n if d else 0,
            "params": r.params, "flops": r.flops,
            "paper_table": paper.table if paper else None, "paper_top1": paper.top1 if paper else None,
            "paper_top5": paper.top5 if paper else None, "paper_params_m": paper.params_m if paper else None,
            "paper_gflops": paper.gflops if paper else None, "note": _notes(r),
        })
    return rows


# ------------------------------------------------------------------ plot
def plot_results(plan: StudyPlan, results: Sequence[CellResult], path: str | Path) -> None:
    """``reduction``: top-1 error against params with error bars (std over seeds); other
    studies: bars with error bars. A second panel shows the paper's ImageNet top-1 error."""
    plt = pyplot()
    done = [r for r in results if r.top1_mean is not None]
    papers = [paper_ablation(plan.study, r.cell.id) for r in results]
    fig, axes = plt.subplots(1, 2 if any(papers) else 1, figsize=(11 if any(papers) else 6, 4), squeeze=False)
    ax = axes[0][0]
    if plan.study == "reduction":
        for r in done:
            x = (r.params or 0) / 1e3
            ax.errorbar([x], [r.top1_mean], yerr=[r.top1_std or 0.0], fmt="s" if not r.cell.cell.has_se else "o",
                        capsize=4, color="tab:gray" if not r.cell.cell.has_se else "tab:blue")
            ax.annotate(r.cell.label, (x, r.top1_mean), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set(xlabel="parameters (thousands)")
    else:
        xs = range(len(done))
        ax.bar(xs, [r.top1_mean for r in done], yerr=[r.top1_std or 0.0 for r in done], capsize=4,
               color="tab:blue", alpha=0.8)
        ax.set_xticks(list(xs), [r.cell.label for r in done], rotation=20, ha="right")
        if done:
            lo = min(r.top1_mean - (r.top1_std or 0) for r in done)
            hi = max(r.top1_mean + (r.top1_std or 0) for r in done)
            ax.set_ylim(max(0.0, lo - 0.5 * (hi - lo) - 0.5), hi + 0.2 * (hi - lo) + 0.5)
    ax.set(ylabel="test top-1 error (%)")
    ax.set_title(f"{plan.model} on {plan.base.data.dataset}\n({len(plan.seeds)} seed(s), mean ± 1 std)", fontsize=10)
    ax.margins(x=0.15, y=0.1)
    ax.grid(alpha=0.3)
    if any(papers):
        ax = axes[0][1]
        rows = [(r.cell.label, p) for r, p in zip(results, papers) if p is not None]
        if plan.study == "reduction" and all(p.params_m for _, p in rows):
            ax.plot([p.params_m for _, p in rows], [p.top1 for _, p in rows], "o", color="tab:orange")
            for label, p in rows:
                ax.annotate(label, (p.params_m, p.top1), textcoords="offset points", xytext=(5, 5), fontsize=8)
            ax.set(xlabel="parameters (M)")
            ax.margins(x=0.15, y=0.1)
        else:
            ax.bar(range(len(rows)), [p.top1 for _, p in rows], color="tab:orange", alpha=0.8)
            ax.set_xticks(list(range(len(rows))), [label for label, _ in rows], rotation=20, ha="right")
            tops = [p.top1 for _, p in rows]
            ax.set_ylim(min(tops) - 1.0, max(tops) + 0.5)
        ax.set(ylabel="top-1 error (%)")
        ax.set_title("paper: ImageNet, SE-ResNet-50\n(trend comparable, absolute errors not)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(plan.title)
    save_png(fig, path)


# ------------------------------------------------------------------ learning curves
def learning_curves(plan: StudyPlan, out: Path) -> list[dict[str, Any]]:
    """Per cell and epoch: test top-1 error (%) and training loss, mean, sample std, min and max
    over the seeds whose ``metrics.csv`` has that epoch (evaluated epochs only)."""
    from senet.train import RunDir

    per: dict[tuple[str, float], dict[str, list[float]]] = {}
    for run in plan.runs:
        for row in RunDir(out / run.folder).metrics():
            if "test_top1_err" not in row or "train_loss" not in row:
                continue
            acc = per.setdefault((run.cell.id, row["epoch"]), {"err": [], "loss": []})
            acc["err"].append(100 * row["test_top1_err"])
            acc["loss"].append(row["train_loss"])
    order = {pc.id: i for i, pc in enumerate(plan.cells)}
    rows = []
    for (cell, epoch), acc in sorted(per.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        err_mean, err_std = mean_std(acc["err"])
        loss_mean, loss_std = mean_std(acc["loss"])
        rows.append({"cell": cell, "epoch": epoch, "n_seeds": len(acc["err"]), "test_top1_err_mean": err_mean,
                     "test_top1_err_std": err_std, "test_top1_err_min": min(acc["err"]),
                     "test_top1_err_max": max(acc["err"]), "train_loss_mean": loss_mean, "train_loss_std": loss_std})
    return rows


def plot_learning_curves(plan: StudyPlan, rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Test error and training loss per epoch of every cell: the mean over seeds, with a band of
    one sample std (min to max where one std is undefined)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = {pc.id: pc.label for pc in plan.cells}
    for i, cell in enumerate(dict.fromkeys(r["cell"] for r in rows)):
        mine = [r for r in rows if r["cell"] == cell]
        x = [r["epoch"] for r in mine]
        colour = f"C{i}"
        for ax, key in ((axes[0], "test_top1_err"), (axes[1], "train_loss")):
            mean = [r[f"{key}_mean"] for r in mine]
            std = [r[f"{key}_std"] for r in mine]
            if key == "test_top1_err" and any(s is None for s in std):
                lo, hi = [r["test_top1_err_min"] for r in mine], [r["test_top1_err_max"] for r in mine]
            else:
                lo = [m - (s or 0.0) for m, s in zip(mean, std)]
                hi = [m + (s or 0.0) for m, s in zip(mean, std)]
            ax.plot(x, mean, "-o", ms=3, color=colour, label=f"{labels.get(cell, cell)} (n={mine[-1]['n_seeds']})")
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
    axes[0].set(xlabel="epoch", ylabel="test top-1 error (%)")
    axes[1].set(xlabel="epoch", ylabel="training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{plan.title}: {plan.model} on {plan.base.data.dataset} (mean ± 1 std over seeds)", fontsize=10)
    save_png(fig, path)


def rows_csv_text(rows: Sequence[dict[str, Any]], empty_header: str) -> str:
    """Result rows (dicts of one shape) as CSV, floats to 4 places, ``None`` empty."""
    header = list(rows[0]) if rows else [empty_header]
    return csv_text(header, ([("" if v is None else f"{v:.4f}" if isinstance(v, float) else v) for v in row.values()]
                             for row in rows))


# ------------------------------------------------------------------ all of it
def write_report(plan: StudyPlan, outcomes: Sequence[RunOutcome], out: str | Path) -> str:
    """Write ``results.csv``, ``results.json``, ``table.md``, ``plot.png``, ``curves.csv`` and
    ``curves.png`` into ``out``; returns the Markdown table."""
    from senet.utils.atomic import write_text

    out = Path(out)
    results = collect(plan, outcomes)
    rows = result_rows(plan, results)
    write_text(out / RESULTS_CSV, rows_csv_text(rows, "study"))
    curves = learning_curves(plan, out)
    write_text(out / CURVES_CSV, rows_csv_text(curves, "cell"))
    if curves:
        plot_learning_curves(plan, curves, out / CURVES_PNG)
    meta = {k: v for k, v in plan.to_dict().items() if k not in ("cells", "runs", "base_config")}
    write_text(out / RESULTS_JSON, json.dumps({**meta, "paper": PAPER_SETTING, "cells": rows}, indent=2) + "\n")
    table = markdown_table(plan, results)
    write_text(out / TABLE_MD, table)
    plot_results(plan, results, out / PLOT_PNG)
    return table

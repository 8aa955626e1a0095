"""The pruning study's results (:mod:`senet.pruning.study`): one Markdown table (``table.md``),
``results.csv`` / ``results.json`` and ``plot.png`` (test error against FLOPs, one line per
criterion, before and after fine-tuning).

Per cell: params and FLOPs of the pruned network, test top-1 error before and after
fine-tuning (mean ± sample std over the seeds), the paired difference of ``se`` against each
other criterion after fine-tuning (same seed: same fine-tuning data order and augmentation;
mean and 95% t interval, :mod:`senet.analysis.paired`) and the target's measured CPU speed-up
(median of interleaved per-round ratios with its 95% interval; the same network for every
criterion of a target).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senet.analysis.ablate_report import mean_std, mean_std_text, rows_csv_text
from senet.analysis.paired import PairedDifference, paired_difference
from senet.pruning.study import PruneCell, PruneOutcome, PruneStudyPlan

RESULTS_CSV, RESULTS_JSON, TABLE_MD, PLOT_PNG = "results.csv", "results.json", "table.md", "plot.png"


@dataclass
class PruneCellResult:
    """A cell over its seeds: errors in %, before (pruned) and after fine-tuning."""

    cell: PruneCell
    seeds: list[int]
    before: dict[int, float]
    after: dict[int, float]
    params: int | None
    flops: int | None
    flops_kept: float | None
    diverged: list[int]


def collect(plan: PruneStudyPlan, outcomes: Sequence[PruneOutcome]) -> list[PruneCellResult]:
    results = []
    for cell in plan.cells:
        mine = [o for o in outcomes if o.run.cell == cell]
        first = mine[0].record if mine else {}
        results.append(PruneCellResult(
            cell, [o.run.seed for o in mine],
            {o.run.seed: 100 * float(o.record["test_top1_err"]) for o in mine},
            {o.run.seed: 100 * float(o.summary["test_top1_err"]) for o in mine if o.summary},
            first.get("params_after"), first.get("flops_after"), first.get("flops_kept"),
            [o.run.seed for o in mine if o.status == "diverged"]))
    return results


def paired(results: Sequence[PruneCellResult], key: str = "after") -> dict[tuple[float, str], PairedDifference]:
    """``(target, other criterion) -> se minus other``, paired by seed (errors in points)."""
    out = {}
    for r in results:
        if r.cell.criterion != "se":
            continue
        for other in results:
            if other.cell.target == r.cell.target and other.cell.criterion != "se":
                d = paired_difference(getattr(r, key), getattr(other, key))
                if d is not None:
                    out[r.cell.target, other.cell.criterion] = d
    return out


def _speed(speed: dict[str, Any] | None, key: str) -> str:
    s = (speed or {}).get(key)
    if not s:
        return "-"
    return f"{s['speedup']:.2f} ({s['ci_low']:.2f}-{s['ci_high']:.2f})"


def markdown_table(plan: PruneStudyPlan, results: Sequence[PruneCellResult], base: dict[str, Any] | None,
                   speeds: dict[float, dict[str, Any]], command: str | None = None) -> str:
    f = plan.finetune
    others = [c for c in plan.criteria if c != "se"]
    diffs = paired(results) if "se" in plan.criteria else {}
    subset = f", {f.data.train_subset} training images" if f.data.train_subset else ""
    steps = f", at most {f.run.max_steps} steps" if f.run.max_steps else ""
    batches = "/".join(str(b) for b in plan.speed_batches)
    engines = "eager PyTorch and onnxruntime" if plan.onnx else "eager PyTorch"
    lines = [f"### {plan.title}: `{plan.model}` on {plan.dataset}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Base: `{plan.base}`. Each cell prunes it to the FLOPs target with the criterion (the same layer widths "
        f"for every criterion of a target; `se` ranks channels by their mean excitation over {plan.calibration} "
        f"training images), then fine-tunes it with recipe `{plan.recipe}` ({f.schedule.epochs} epoch(s){subset}"
        f"{steps}), seeds {', '.join(map(str, plan.seeds))}. Test top-1 error in % as mean ± sample std over "
        "seeds. Δ: `se` minus the other criterion after fine-tuning, paired by seed, mean [95% t interval] in "
        "points (negative: `se` better; an interval holding 0 resolves no difference). Speed-up: unpruned time / "
        f"pruned time, CPU inference at batch {batches}, {engines}, median of "
        f"{plan.speed_rounds} interleaved rounds (distribution-free interval of the median, 95% from 6 rounds on; "
        "the same pruned widths, hence one measurement, for every criterion of a target).",
        "",
        "| target | criterion | params | MFLOPs (kept) | err before FT % | err after FT % | "
        + "".join(f" Δ vs {o} |" for o in others)
        + "".join(f" speed-up {k.replace('_b', ' b')} |" for k in plan.speed_keys),
        "|---|---|---|---|---|---|" + "---|" * len(others) + "---|" * len(plan.speed_keys),
    ]
    if base:
        lines.append(f"| 100% | unpruned | {base['params']:,} | {base['flops'] / 1e6:.2f} (1.000) | "
                     f"{100 * base['test_top1_err']:.2f} | - |" + " - |" * len(others)
                     + " 1 |" * len(plan.speed_keys))
    for r in results:
        kept = f" ({r.flops_kept:.3f})" if r.flops_kept is not None else ""
        row = (f"| {100 * r.cell.target:g}% | {r.cell.criterion} | {r.params:,} | {r.flops / 1e6:.2f}{kept} | "
               if r.params is not None else f"| {100 * r.cell.target:g}% | {r.cell.criterion} | - | - | ")
        row += f"{mean_std_text(*mean_std(list(r.before.values())))} | {mean_std_text(*mean_std(list(r.after.values())))} |"
        for o in others:
            d = diffs.get((r.cell.target, o)) if r.cell.criterion == "se" else None
            row += f" {d.text() if d else '-'} |"
        speed = speeds.get(r.cell.target)
        row += "".join(f" {_speed(speed, k)} |" for k in plan.speed_keys)
        if r.diverged:
            row += f" diverged: seed(s) {', '.join(map(str, r.diverged))}"
        lines.append(row)
    return "\n".join(lines) + "\n"


def result_rows(plan: PruneStudyPlan, results: Sequence[PruneCellResult],
                speeds: dict[float, dict[str, Any]]) -> list[dict[str, Any]]:
    after = paired(results, "after") if "se" in plan.criteria else {}
    before = paired(results, "before") if "se" in plan.criteria else {}
    rows = []
    for r in results:
        b_mean, b_std = mean_std(list(r.before.values()))
        a_mean, a_std = mean_std(list(r.after.values()))
        row: dict[str, Any] = {
            "cell": r.cell.id, "target_flops": r.cell.target, "criterion": r.cell.criterion,
            "seeds": " ".join(map(str, r.seeds)), "params": r.params, "flops": r.flops, "flops_kept": r.flops_kept,
            "err_before_mean": b_mean, "err_before_std": b_std, "err_after_mean": a_mean, "err_after_std": a_std,
            "err_before_by_seed": json.dumps(r.before), "err_after_by_seed": json.dumps(r.after),
        }
        for o in plan.criteria:
            if o == "se":
                continue
            for when, table in (("after", after), ("before", before)):
                d = table.get((r.cell.target, o)) if r.cell.criterion == "se" else None
                row[f"se_minus_{o}_{when}"] = d.mean if d else None
                row[f"se_minus_{o}_{when}_ci_low"] = d.ci_low if d else None
                row[f"se_minus_{o}_{when}_ci_high"] = d.ci_high if d else None
        speed = speeds.get(r.cell.target) or {}
        for k in plan.speed_keys:
            s = speed.get(k) or {}
            row[f"speedup_{k}"] = s.get("speedup")
            row[f"speedup_{k}_ci_low"] = s.get("ci_low")
            row[f"speedup_{k}_ci_high"] = s.get("ci_high")
        row["diverged"] = " ".join(map(str, r.diverged))
        rows.append(row)
    return rows


def plot(plan: PruneStudyPlan, results: Sequence[PruneCellResult], base: dict[str, Any] | None,
         path: str | Path) -> None:
    """Test error against FLOPs, one line per criterion; left: after fine-tuning, right: before."""
    from senet.utils.plotting import pyplot, save_png

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "after", "after fine-tuning"), (axes[1], "before", "pruned, before fine-tuning")):
        for i, criterion in enumerate(plan.criteria):
            mine = sorted((r for r in results if r.cell.criterion == criterion and getattr(r, key) and r.flops),
                          key=lambda r: r.flops)
            if not mine:
                continue
            xs = [r.flops / 1e6 for r in mine]
            stats = [mean_std(list(getattr(r, key).values())) for r in mine]
            ax.errorbar(xs, [m for m, _ in stats], yerr=[s or 0.0 for _, s in stats], fmt="-o", capsize=4,
                        color=f"C{i}", label=criterion)
        if base:
            ax.plot([base["flops"] / 1e6], [100 * base["test_top1_err"]], "k*", ms=10, label="unpruned")
        ax.set(xlabel="MFLOPs", ylabel="test top-1 error (%)", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{plan.model} on {plan.dataset}: pruned by criterion (mean ± 1 std over {len(plan.seeds)} seeds)",
                 fontsize=10)
    save_png(fig, path)


def write_report(plan: PruneStudyPlan, outcomes: Sequence[PruneOutcome], speeds: dict[float, dict[str, Any]],
                 out: str | Path, *, command: str | None = None) -> str:
    """Write ``table.md``, ``results.csv``, ``results.json`` and ``plot.png`` into ``out``;
    returns the table."""
    from senet.pruning.study import BASE
    from senet.utils.atomic import write_text
    from senet.utils.text import read_json

    out = Path(out)
    results = collect(plan, outcomes)
    base = read_json(out / BASE, dict, what="the base model's record") if (out / BASE).is_file() else None
    rows = result_rows(plan, results, speeds)
    write_text(out / RESULTS_CSV, rows_csv_text(rows, "cell"))
    meta = {k: v for k, v in plan.to_dict().items() if k not in ("cells", "runs", "finetune_config")}
    write_text(out / RESULTS_JSON, json.dumps({**meta, "command": command, "base_result": base, "cells": rows,
                                               "speed": {str(t): s for t, s in speeds.items()}}, indent=2) + "\n")
    table = markdown_table(plan, results, base, speeds, command)
    write_text(out / TABLE_MD, table)
    plot(plan, results, base, out / PLOT_PNG)
    return table

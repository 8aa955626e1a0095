"""``senet ablate``: one of the paper's ablation studies (Tables 10-16) as a grid of training runs."""

from __future__ import annotations

import argparse

from senet.analysis.ablate import STUDIES
from senet.cli.options import add_data, add_device, add_out, add_overrides, add_progress, positive_int, show_progress
from senet.cli.train_cmd import PROGRESS_HELP, shortcuts

HELP = ("run one of the paper's ablation studies (Tables 10-16), or SE against its baseline (--study se), "
        "with a recipe, several seeds per cell, resumable")

STUDY_NAMES = ", ".join(STUDIES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, metavar="NAME", help=f"the study: {STUDY_NAMES}")
    p.add_argument("--recipe", metavar="NAME|FILE", help="recipe of every cell (default: default); its model needs SE")
    p.add_argument("--epochs", type=positive_int, help="shorten/lengthen the recipe keeping its schedule's shape")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="K",
                   help="runs per cell, seeds run.seed .. run.seed+K-1 (default 1)")
    add_data(p, dataset=False)
    add_out(p, help="study folder (default: runs/ablate-<study>-<recipe>); run the same command again to "
                    "resume it: finished cells are reused, interrupted ones continued")
    add_overrides(p, help="override a config value (YAML) of every cell, e.g. --set data.train_subset=10000")
    add_device(p, default=None, help="run.device")
    p.add_argument("--cells", metavar="ID,ID", help="train only these cells of the study (see --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their model keywords, train nothing")
    add_progress(p, help=PROGRESS_HELP)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from senet.analysis.ablate import plan_study, safe_name
    from senet.analysis.ablate_report import (CURVES_CSV, CURVES_PNG, PLOT_PNG, RESULTS_CSV, RESULTS_JSON, TABLE_MD,
                                             write_report)
    from senet.analysis.ablate_run import run_study
    from senet.errors import SenetError
    from senet.train.distributed import dist_env

    if dist_env().distributed:
        raise SenetError("senet ablate runs its cells one after another in a single process and is not "
                         "distributed: start it with python/senet, not torchrun (WORLD_SIZE > 1)")

    cells = [c.strip() for c in args.cells.split(",") if c.strip()] if args.cells else None
    plan = plan_study(args.study, args.recipe, [*args.overrides, shortcuts(args)], epochs=args.epochs,
                      seeds=args.seeds, cells=cells)
    out = Path(args.out or f"runs/ablate-{args.study}-{safe_name(plan.recipe.removesuffix('.yaml'))}")
    b = plan.base
    print(f"{plan.title}: {len(plan.cells)} cells x {len(plan.seeds)} seed(s) = {len(plan.runs)} runs of "
          f"{plan.model} (recipe {plan.recipe}, {b.schedule.epochs} epochs"
          f"{f', {b.data.train_subset} training images' if b.data.train_subset else ''}) -> {out}")
    if args.dry_run:
        for pc in plan.cells:
            note = f"  ({pc.note})" if pc.note else ""
            print(f"  {pc.id:<10} {pc.label:<16} {pc.model} {pc.kwargs}{note}")
        return 0
    try:
        outcomes = run_study(plan, out, progress=show_progress(args))
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue {out} (finished cells are kept)")
        raise
    table = write_report(plan, outcomes, out)
    print()
    print(table, end="")
    written = [str(out / f) for f in (TABLE_MD, RESULTS_CSV, RESULTS_JSON, PLOT_PNG, CURVES_CSV, CURVES_PNG)
               if (out / f).exists()]
    print(f"\nwrote {', '.join(written)}")
    return 0

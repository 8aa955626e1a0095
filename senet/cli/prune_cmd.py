"""``senet prune``: a smaller network from a trained one, ranked by its SE excitations or by
another criterion; or (``--study``) the measured comparison of the criteria."""

from __future__ import annotations

import argparse

from senet.cli.model_source import add_model_arguments
from senet.cli.options import (add_data, add_device, add_out, add_overrides, add_progress, add_skip_corrupt,
                               positive_int, show_progress)

HELP = ("prune a trained model's channels (SE excitations, L1 norm, BN scale or random) to a FLOPs or channel "
        "target, write it as a senet file; --study compares the criteria")


def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be fractions such as 0.5 or 0.7,0.5, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must be fractions such as 0.5 or 0.7,0.5, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from senet.pruning import CALIBRATION, CRITERIA, STUDY_CRITERIA

    add_model_arguments(p, bare_model=True)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--flops", type=_fractions, metavar="F",
                        help="fraction of the FLOPs to keep, e.g. 0.5 (within 2%%); with --study a list: 0.7,0.5")
    target.add_argument("--ratio", type=_fractions, metavar="R",
                        help="fraction of the channels of every prunable group to keep, e.g. 0.5")
    p.add_argument("--criterion", default="se", choices=CRITERIA,
                   help="se: mean SE excitation over training images (the paper's suggestion; default); l1: filter "
                        "L1 norm; bn: batch-norm scale; random")
    p.add_argument("--calibration", type=positive_int, default=CALIBRATION, metavar="N",
                   help=f"training images whose excitations rank the channels (se; default {CALIBRATION})")
    add_data(p, dataset=True, default="the run's, else searched")
    add_skip_corrupt(p)
    p.add_argument("--seed", type=int, default=0, help="calibration sample and random order (default 0)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the pruned .safetensors (default <run>/pruned-<criterion>-<target>.safetensors)")
    p.add_argument("--eval", action="store_true", help="also print the test error before and after pruning")
    p.add_argument("--finetune", metavar="DIR",
                   help="then fine-tune the pruned network into the run folder DIR (resumable with "
                        "senet train --resume DIR)")
    p.add_argument("--recipe", metavar="NAME|FILE", help="fine-tuning recipe (default: finetune, a short cosine schedule)")
    p.add_argument("--epochs", type=positive_int, help="fine-tuning epochs (the recipe's shape kept)")
    add_overrides(p, help="override a fine-tuning config value, e.g. --set optim.lr=0.01")
    add_device(p)
    study = p.add_argument_group("study (--study)")
    study.add_argument("--study", action="store_true",
                       help="prune to each --flops target with each of --criteria, fine-tune each --seeds times, "
                            "report errors, paired differences and measured speed-ups")
    study.add_argument("--criteria", type=_names, default=list(STUDY_CRITERIA), metavar="A,B",
                       help=f"criteria of the study (default {','.join(STUDY_CRITERIA)})")
    study.add_argument("--seeds", type=positive_int, default=3, help="fine-tuning seeds per cell (default 3)")
    study.add_argument("--speed-rounds", type=positive_int, default=11, help="interleaved timing rounds (default 11)")
    study.add_argument("--speed-batches", type=lambda t: [int(v) for v in _names(t)], default=[1, 64],
                       metavar="B,B", help="inference batch sizes timed (default 1,64)")
    study.add_argument("--no-onnx", action="store_true", help="time eager PyTorch only")
    add_out(study, help="the study folder (default runs/prune-study-<model>)")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    if args.study:
        return _study(args)
    return _prune(args)


def _one(values: list[float] | None, name: str) -> float | None:
    if values is None:
        return None
    if len(values) != 1:
        raise ValueError(f"--{name} takes one fraction (a list only with --study), got {values}")
    return values[0]


def _prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from senet.cli.model_source import load_data, load_source
    from senet.models import save_weights
    from senet.pruning import check_target, prune
    from senet.pruning.data import calibration, stored_transform, test_error
    from senet.utils.device import resolve_device

    flops, ratio = _one(args.flops, "flops"), _one(args.ratio, "ratio")
    kind, value = check_target(flops, ratio)
    if args.finetune and (Path(args.finetune) / "config.yaml").exists():
        raise ValueError(f"--finetune {args.finetune} holds a run already; continue it with senet train --resume")
    source = load_source(args)
    model = source.model
    if args.output:
        out = Path(args.output)
    else:
        folder = source.run.path if source.run is not None else Path(".")
        out = folder / f"pruned-{args.criterion}-{kind}{round(100 * value)}.safetensors"
    if out.suffix != ".safetensors":
        raise ValueError(f"--output {out}: the pruned network is written as .safetensors")
    images = transform = None
    if args.criterion == "se":
        train = load_data(source, "train")
        images, transform = calibration(train, args.calibration, args.seed), stored_transform(model, train)
    test = load_data(source, "test") if args.eval else None
    device = resolve_device(args.device)
    before = test_error(model, test, device=device) if test is not None else None
    model.cpu()
    result = prune(model, flops=flops, ratio=ratio, criterion=args.criterion, calibration=images, transform=transform,
                   seed=args.seed)
    save_weights(model, out)
    print(f"{source.name} pruned by {args.criterion} to {kind} {value:g}: params {result.params_before:,} -> "
          f"{result.params_after:,} ({result.params_kept:.3f}), FLOPs {result.flops_before:,} -> "
          f"{result.flops_after:,} ({result.flops_kept:.3f}) at {'x'.join(map(str, result.input_size[1:]))}; "
          f"{sum(len(v) for v in result.removed.values())} channel units removed from {result.groups} groups")
    print(f"checked: the pruned network's logits equal the unpruned one's with those channels zeroed "
          f"(largest difference {result.max_abs_diff:.2g})")
    if before is not None:
        after = test_error(model, test, device=device)
        print(f"test error on {test.source}: top-1 {100 * before['top1_err']:.2f}% before pruning, "
              f"{100 * after['top1_err']:.2f}% pruned (before fine-tuning)")
    print(f"wrote {out}")
    if args.finetune:
        _finetune(args, out)
    return 0


def _finetune(args: argparse.Namespace, pruned: object) -> None:
    from senet.cli.train_cmd import init_values
    from senet.train import RunDir, Trainer, resolve
    from senet.pruning.study import FINETUNE_RECIPE

    values = {"model": init_values(str(pruned)), "run": {"device": args.device}}
    if args.data is not None:
        values["data"] = {"path": args.data}
    if args.dataset is not None:
        values.setdefault("data", {})["dataset"] = args.dataset
    cfg = resolve(args.recipe or FINETUNE_RECIPE, [*args.overrides, values], epochs=args.epochs)
    with RunDir.create(args.finetune, cfg) as run:
        trainer = Trainer(cfg, run, progress=show_progress(args))
        before = trainer.test()
        print(f"fine-tuning {cfg.model.name} from {pruned} ({cfg.schedule.epochs} epochs, recipe {cfg.recipe}) -> "
              f"{run.path}; test error before fine-tuning: top-1 {100 * before['top1_err']:.2f}%")
        summary = trainer.fit()
    print(f"test error after fine-tuning: top-1 {100 * summary['test_top1_err']:.2f}% "
          f"(before: {100 * before['top1_err']:.2f}%)  -> {run.path}")


def _study(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    from senet.analysis.ablate import safe_name
    from senet.errors import SenetError
    from senet.pruning.report import PLOT_PNG, RESULTS_CSV, RESULTS_JSON, TABLE_MD, write_report
    from senet.pruning import TARGETS
    from senet.pruning.study import plan_prune_study, run_prune_study

    if args.ratio is not None:
        raise ValueError("--study compares criteria at FLOPs targets: give --flops (e.g. 0.7,0.5), not --ratio")
    if args.weights is None and args.run is None:
        raise SenetError("--study needs the trained model: --run DIR or --weights FILE")
    base = args.run or args.weights
    plan_out = Path(args.out) if args.out else None
    model_name = Path(base).name
    out = plan_out or Path(f"runs/prune-study-{safe_name(model_name)}")
    overrides = list(args.overrides)
    if args.device:
        overrides.append({"run": {"device": args.device}})
    plan = plan_prune_study(base, out, targets=args.flops or list(TARGETS), criteria=args.criteria, seeds=args.seeds,
                            recipe=args.recipe, overrides=overrides, epochs=args.epochs, calibration=args.calibration,
                            dataset=args.dataset, data=args.data, speed_batches=args.speed_batches,
                            speed_rounds=args.speed_rounds, onnx=not args.no_onnx)
    f = plan.finetune
    print(f"{plan.title}: {len(plan.targets)} target(s) x {len(plan.criteria)} criteria x {len(plan.seeds)} seed(s) = "
          f"{len(plan.runs)} pruned networks of {plan.model}, each fine-tuned {f.schedule.epochs} epoch(s) with recipe "
          f"{plan.recipe} -> {out}")
    try:
        outcomes, speeds = run_prune_study(plan, out, progress=show_progress(args))
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue {out} (finished work is kept)")
        raise
    command = "senet " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["prune"] else None
    table = write_report(plan, outcomes, speeds, out, command=command)
    print()
    print(table, end="")
    print(f"\nwrote {', '.join(str(out / f) for f in (TABLE_MD, RESULTS_CSV, RESULTS_JSON, PLOT_PNG))}")
    return 0

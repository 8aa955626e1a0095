"""``senet train``: train a recipe into a run directory, or resume one."""

from __future__ import annotations

import argparse
import time

HELP = "train a model with a recipe (default: a short SE-ResNet run on CIFAR-10) and report its test error"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", metavar="NAME|FILE", help="built-in recipe name (see `senet recipes`) or a .yaml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.05 --set model.kwargs.reduction=8")
    p.add_argument("--epochs", type=int, help="shorten/lengthen the recipe keeping its schedule's shape")
    p.add_argument("--data", metavar="PATH", help="dataset folder or archive (default: searched, see README)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<recipe>-<time>)")
    p.add_argument("--seed", type=int, help="random seed (run.seed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="run.device")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--skip-corrupt", action="store_true", help="leave out unreadable images (listed in the run dir)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")


def _shortcuts(args: argparse.Namespace) -> dict:
    values: dict = {}
    if args.data is not None:
        values.setdefault("data", {})["path"] = args.data
    if args.skip_corrupt:
        values.setdefault("data", {})["skip_corrupt"] = True
    if args.seed is not None:
        values.setdefault("run", {})["seed"] = args.seed
    if args.device is not None:
        values.setdefault("run", {})["device"] = args.device
    return values


def run(args: argparse.Namespace) -> int:
    from senet.errors import SenetError
    from senet.train import RunDir, Trainer, resolve
    from senet.train.config import config_from_dict, merge

    if args.resume:
        if args.recipe or args.overrides or args.epochs or args.out or args.data or args.seed is not None:
            raise SenetError("--resume continues a run with its own config.yaml; only --device may be given with it")
        run_dir = RunDir.open(args.resume)
        cfg = run_dir.config()
        if args.device:
            cfg = config_from_dict(merge(cfg.to_dict(), {"run": {"device": args.device}}))
    else:
        cfg = resolve(args.recipe, [*args.overrides, _shortcuts(args)], epochs=args.epochs)
        if args.print_config:
            print(cfg.to_yaml(), end="")
            return 0
        out = args.out or f"runs/{cfg.recipe.replace('/', '-').removesuffix('.yaml')}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = RunDir.create(out, cfg)
        print(f"run directory: {run_dir.path}")
    trainer = Trainer(cfg, run_dir, resume=bool(args.resume), progress=False if args.no_progress else None)
    info = trainer.splits
    print(f"{cfg.model.name} on {cfg.data.dataset} ({info.train.source}): {len(info.train.labels)} train / "
          f"{len(info.test.labels)} test images, {cfg.schedule.epochs} epochs of {trainer.steps_per_epoch} steps, "
          f"{trainer.device} {trainer.precision}")
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        run_dir.log_event("interrupted")
        print(f"interrupted; continue with: senet train --resume {run_dir.path}")
        raise
    except SenetError as e:
        run_dir.log_event(f"stopped: {e}")
        raise
    print(f"test error: top-1 {100 * summary['test_top1_err']:.2f}%  top-5 {100 * summary['test_top5_err']:.2f}%  "
          f"({summary['seconds']:.0f} s, {summary['images_per_s']:.0f} img/s)  -> {run_dir.path}")
    return 0

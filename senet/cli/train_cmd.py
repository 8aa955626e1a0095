"""``senet train``: train a recipe into a run directory, or resume one."""

from __future__ import annotations

import argparse
import contextlib
import time

from senet.cli.options import add_device, nonnegative_int, positive_int

HELP = "train a model with a recipe (default: a short SE-ResNet run on CIFAR-10) and report its test error"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", metavar="NAME|FILE", help="built-in recipe name (see `senet recipes`) or a .yaml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.05 --set model.kwargs.reduction=8")
    p.add_argument("--epochs", type=positive_int, help="shorten/lengthen the recipe keeping its schedule's shape")
    p.add_argument("--data", metavar="PATH", help="dataset folder or archive (default: searched, see README)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<recipe>-<time>)")
    p.add_argument("--seed", type=nonnegative_int, help="random seed (run.seed)")
    add_device(p, default=None, help="run.device")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--skip-corrupt", action="store_true", help="leave out unreadable images (listed in the run dir)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")


def shortcuts(args: argparse.Namespace) -> dict:
    """The config values of the shortcut flags (--data, --skip-corrupt, --seed, --device) a
    command defines; shared by ``train`` and ``ablate``."""
    values: dict = {}
    if getattr(args, "data", None) is not None:
        values.setdefault("data", {})["path"] = args.data
    if getattr(args, "skip_corrupt", False):
        values.setdefault("data", {})["skip_corrupt"] = True
    if getattr(args, "seed", None) is not None:
        values.setdefault("run", {})["seed"] = args.seed
    if getattr(args, "device", None) is not None:
        values.setdefault("run", {})["device"] = args.device
    return values


def _execution_overrides(overrides: list[str]) -> dict:
    """``--set`` values allowed with ``--resume``: how the run executes, never what it computes."""
    from senet.errors import SenetError
    from senet.train.config import EXECUTION_ONLY, merge, parse_override

    values: dict = {}
    for text in overrides:
        change = parse_override(text)
        (section, inner), = change.items()
        key = next(iter(inner)) if isinstance(inner, dict) else None
        if key not in EXECUTION_ONLY.get(section, ()):
            allowed = ", ".join(f"{s}.{k}" for s, keys in EXECUTION_ONLY.items() for k in keys)
            raise SenetError(f"--set {text} would change what a resumed run computes; with --resume only "
                             f"these may change: {allowed}")
        values = merge(values, change)
    return values


def run(args: argparse.Namespace) -> int:
    from senet.train import distributed

    try:
        return _run(args, distributed.dist_env())
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, env) -> int:
    from senet.errors import SenetError
    from senet.train import RunDir, distributed, resolve
    from senet.train.config import config_from_dict, merge
    from senet.train.rundir import FINISHED, PARTIAL

    say = print if env.is_main else (lambda *a, **k: None)
    resume = args.resume
    if env.restart_count and not resume and args.out and RunDir(args.out).state() in (PARTIAL, FINISHED):
        resume = args.out  # torchrun restarted the group: continue the run it was writing
    if env.max_restarts and not (args.out or args.resume):
        raise SenetError("with torchrun --max-restarts, give the run directory with --out (or --resume) "
                         "so that restarted workers can find the run to resume")
    if resume:
        if args.resume and (args.recipe or args.epochs or args.out or args.data or args.seed is not None):
            raise SenetError("--resume continues a run with its own config.yaml; only --device and --set of "
                             "execution settings may be given with it")
        run_dir = RunDir.open(resume)
        cfg = run_dir.config()
        changes = _execution_overrides(args.overrides if args.resume else [])
        if args.device:
            changes = merge(changes, {"run": {"device": args.device}})
        if changes:
            cfg = config_from_dict(merge(cfg.to_dict(), changes))
        if run_dir.state() == FINISHED:
            summary = run_dir.summary()
            say(f"{run_dir.path} has finished already ({summary['epochs']:g} epochs, test error top-1 "
                f"{100 * summary['test_top1_err']:.2f}% top-5 {100 * summary['test_top5_err']:.2f}%); nothing to resume")
            return 0
    else:
        cfg = resolve(args.recipe, [*args.overrides, shortcuts(args)], epochs=args.epochs)
        if args.print_config:
            say(cfg.to_yaml(), end="")
            return 0
    distributed.join(env, cfg.run)  # before the run folder: a new one is named by rank 0 for the group
    if not resume:
        out = args.out or f"runs/{cfg.recipe.replace('/', '-').removesuffix('.yaml')}-{time.strftime('%Y%m%d-%H%M%S')}"
        out = distributed.broadcast_object(out)  # every rank writes to (and resumes from) rank 0's folder
        run_dir = RunDir.create(out, cfg) if env.is_main else RunDir(out)
        distributed.barrier()
        say(f"run directory: {run_dir.path}")
    with run_dir:  # a failure before the first checkpoint removes the folder this command created
        if resume and env.is_main:  # the group's rank 0 owns the folder for all of it
            run_dir.acquire()
        try:
            summary = _train(cfg, run_dir, resume=bool(resume), args=args, env=env, say=say)
        except KeyboardInterrupt:
            if env.is_main:
                with contextlib.suppress(SenetError):
                    run_dir.log_event("interrupted")
            say(f"interrupted; continue with: senet train --resume {run_dir.path}")
            raise
        except Exception as e:
            if env.is_main:
                with contextlib.suppress(SenetError):
                    run_dir.log_event(f"stopped: {e}")
                if run_dir.fresh and not run_dir.has_checkpoint():
                    say(f"removed {run_dir.path}: the run stopped before its first checkpoint")
            raise
    say(f"test error: top-1 {100 * summary['test_top1_err']:.2f}%  top-5 {100 * summary['test_top5_err']:.2f}%  "
        f"({summary['seconds']:.0f} s, {summary['images_per_s']:.0f} img/s)  -> {run_dir.path}")
    return 0


def _train(cfg, run_dir, *, resume: bool, args: argparse.Namespace, env, say) -> dict:
    from senet.train import Trainer

    trainer = Trainer(cfg, run_dir, resume=resume, progress=False if args.no_progress else None)
    src = trainer.source
    group = f", {env.world_size} processes" if env.distributed else ""
    say(f"{cfg.model.name} on {cfg.data.dataset} ({src.source}): {src.n_train} train / {src.n_test} test images, "
        f"{cfg.schedule.epochs} epochs of {trainer.steps_per_epoch} steps, {trainer.device} {trainer.precision}{group}")
    return trainer.fit()

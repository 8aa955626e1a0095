"""Which model a command works on: ``--run DIR | --weights FILE [--model NAME] | --model NAME
[--pretrained]``, shared by ``senet eval``, ``analyze``, ``export`` and ``predict``, and the data a
trained model goes with (``eval`` and ``analyze``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def add_model_arguments(p: argparse.ArgumentParser, *, bare_model: bool) -> None:
    """``--run`` / ``--weights`` (one of them), ``--model``; with ``bare_model`` also a model by name
    alone, its released weights with ``--pretrained``."""
    src = p.add_mutually_exclusive_group(required=not bare_model)
    src.add_argument("--run", metavar="DIR", help="a run directory written by `senet train`")
    src.add_argument("--weights", metavar="FILE", help="a senet .safetensors file or a timm/Cadene checkpoint")
    if bare_model:
        src.add_argument("--pretrained", action="store_true", help="the released weights of --model (downloaded)")
    p.add_argument("--model", help="model name (needed for weight files that do not record it)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="use weights holding NaN or inf values (refused by default)")


def add_dataset_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                          data_default: str = "searched, see README", use: str = "") -> None:
    """The one ``--dataset`` / ``--data`` pair of the commands that read a dataset for a model
    (``use``: what the command takes from it, appended to the help)."""
    p.add_argument("--dataset", help=f"cifar10, cifar100 or an ImageFolder path{use} (default: the run's / cifar10)")
    p.add_argument("--data", metavar="PATH", help=f"where the dataset is (default: {data_default})")


def add_source_arguments(p: argparse.ArgumentParser, *, data_default: str = "searched, see README") -> None:
    add_model_arguments(p, bare_model=False)
    add_dataset_arguments(p, data_default=data_default)
    p.add_argument("--split", default="test", choices=["test", "val", "train"])


@dataclass
class ModelSource:
    name: str
    model: Any  # torch.nn.Module with the weights loaded
    meta: Any  # senet.weights metadata: classes, mean, std (None without weights)
    weights: Path | None
    dataset: str | None = None
    data: str | None = None
    run: Any = None  # the RunDir of --run


def load_model(args: argparse.Namespace, *, need_weights: bool = True) -> ModelSource:
    """The model of ``--run`` / ``--weights`` / ``--model [--pretrained]``; a missing folder or
    file, an unfinished run, an unknown model or non-finite weights is a :class:`SenetError`."""
    from senet.errors import SenetError
    from senet.models import create_model
    from senet.train import RunDir
    from senet.train.rundir import WEIGHTS
    from senet.utils.finite import nonfinite_names

    run_dir = None
    if getattr(args, "run", None):
        if not Path(args.run).is_dir():
            raise SenetError(f"--run {args.run}: no such folder")
        run_dir = RunDir.open(args.run)
        weights = run_dir.file(WEIGHTS)
        if not weights.is_file():
            raise SenetError(f"{run_dir.path} has no {WEIGHTS} yet (the run has not finished)")
        pretrained: Any = weights
    elif getattr(args, "weights", None):
        weights = Path(args.weights)
        if not weights.is_file():
            raise SenetError(f"--weights {weights}: no such file")
        pretrained = weights
    elif getattr(args, "pretrained", False):
        if not args.model:
            raise SenetError("--pretrained needs --model NAME")
        weights, pretrained = None, True
    else:
        if not args.model:
            raise SenetError("give --run DIR, --weights FILE or --model NAME")
        if need_weights:
            raise SenetError(f"--model {args.model} alone has random weights; add --pretrained (released "
                             "weights), --weights FILE or --run DIR")
        weights, pretrained = None, False
    model = create_model(args.model, pretrained=pretrained)
    bad = nonfinite_names(model.state_dict())
    if bad and not args.allow_nonfinite:
        where = weights or f"the released weights of {args.model}"
        raise SenetError(f"{where} holds NaN or inf values in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); pass --allow-nonfinite to use them anyway")
    return ModelSource(model.senet_spec.name, model, getattr(model, "senet_weights", None), weights, run=run_dir)


def load_source(args: argparse.Namespace) -> ModelSource:
    """:func:`load_model`, and the dataset it is evaluated on (``--dataset`` / ``--data``, by
    default the run's or CIFAR-10)."""
    source = load_model(args)
    if source.run is not None:
        cfg = source.run.config()
        # a streamed run (ImageNet, Places365) names its dataset, but its --data is an ImageFolder tree
        source.dataset = args.dataset or (cfg.data.dataset if cfg.data.loader == "memory" else "imagefolder")
        source.data = args.data if args.data is not None else cfg.data.path
    else:
        source.dataset = args.dataset or "cifar10"
        source.data = args.data
    return source

"""The ``--run DIR | --weights FILE [--model NAME]`` source shared by ``senet eval`` and
``senet analyze``: which trained model to load and which data it goes with."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def add_source_arguments(p: argparse.ArgumentParser, *, data_default: str = "searched, see README") -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR", help="a run directory written by `senet train`")
    src.add_argument("--weights", metavar="FILE", help="a senet .safetensors file or a timm/Cadene checkpoint")
    p.add_argument("--model", help="model name (needed for weight files that do not record it)")
    p.add_argument("--dataset", help="cifar10, cifar100 or an ImageFolder path (default: the run's / cifar10)")
    p.add_argument("--data", metavar="PATH", help=f"where the dataset is (default: {data_default})")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="use weights holding NaN or inf values (refused by default)")


@dataclass
class ModelSource:
    name: str
    model: Any  # torch.nn.Module with the weights loaded
    meta: Any  # senet.weights metadata: classes, mean, std
    weights: Path
    dataset: str
    data: str | None


def load_source(args: argparse.Namespace) -> ModelSource:
    """The model of ``--run`` / ``--weights``, its metadata and the dataset it is evaluated on;
    a missing folder or file, an unfinished run or an unknown model is a :class:`SenetError`."""
    from senet.errors import SenetError
    from senet.models import create_model
    from senet.train import RunDir
    from senet.train.rundir import WEIGHTS
    from senet.utils.finite import nonfinite_names

    dataset, data = args.dataset, args.data
    if args.run:
        if not Path(args.run).is_dir():
            raise SenetError(f"--run {args.run}: no such folder")
        run_dir = RunDir.open(args.run)
        cfg = run_dir.config()
        weights = run_dir.file(WEIGHTS)
        if not weights.is_file():
            raise SenetError(f"{run_dir.path} has no {WEIGHTS} yet (the run has not finished)")
        dataset = dataset or cfg.data.dataset
        data = data if data is not None else cfg.data.path
    else:
        weights = Path(args.weights)
        if not weights.is_file():
            raise SenetError(f"--weights {weights}: no such file")
        dataset = dataset or "cifar10"
    model = create_model(args.model, pretrained=weights)
    bad = nonfinite_names(model.state_dict())
    if bad and not args.allow_nonfinite:
        raise SenetError(f"{weights} holds NaN or inf values in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); pass --allow-nonfinite to use them anyway")
    return ModelSource(model.senet_spec.name, model, model.senet_weights, weights, dataset, data)

"""``senet eval``: top-1 / top-5 error of a run's model or of a weight file on a test split."""

from __future__ import annotations

import argparse

from senet.cli.model_source import add_source_arguments
from senet.cli.options import positive_int

HELP = "evaluate a trained run (--run DIR) or a weight file (--weights FILE [--model NAME]) on a test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=positive_int, default=500)


def run(args: argparse.Namespace) -> int:
    from senet.cli.model_source import load_source
    from senet.data import GpuAugment, load_split
    from senet.errors import SenetError
    from senet.train import evaluate
    from senet.train.trainer import resolve_device

    source = load_source(args)
    name, model, meta = source.name, source.model, source.meta
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    ds = load_split(source.dataset, args.split, data=source.data)
    outputs = model.num_classes
    if outputs != len(ds.classes):
        raise SenetError(f"the model has {outputs} outputs but {ds.source} has {len(ds.classes)} classes")
    if meta.classes and list(meta.classes) != list(ds.classes):
        raise SenetError(f"the model's classes ({', '.join(meta.classes[:5])}, ...) are not those of {ds.source} "
                         f"({', '.join(ds.classes[:5])}, ...)")
    device = resolve_device(args.device)
    model.to(device)
    res = evaluate(model, ds.images, ds.labels, GpuAugment(mean, std, crop=None, flip=False).normalize,
                   batch_size=args.batch_size, device=device)
    print(f"{name} on {ds.source} ({args.split}, {len(ds.labels)} images): "
          f"top-1 error {100 * res['top1_err']:.2f}%  top-5 error {100 * res['top5_err']:.2f}%  "
          f"loss {res['loss']:.4f}")
    return 0

"""``senet eval``: top-1 / top-5 error of a run's model or of a weight file on a test split."""

from __future__ import annotations

import argparse

HELP = "evaluate a trained run (--run DIR) or a weight file (--weights FILE [--model NAME]) on a test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR", help="a run directory written by `senet train`")
    src.add_argument("--weights", metavar="FILE", help="a senet .safetensors file or a timm/Cadene checkpoint")
    p.add_argument("--model", help="model name (needed for weight files that do not record it)")
    p.add_argument("--dataset", help="cifar10, cifar100 or an ImageFolder path (default: the run's / cifar10)")
    p.add_argument("--data", metavar="PATH", help="where the dataset is (default: searched, see README)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=500)


def run(args: argparse.Namespace) -> int:
    import torch

    from senet.data import GpuAugment, load_split
    from senet.errors import SenetError
    from senet.models import create_model, model_info
    from senet.train import RunDir, evaluate
    from senet.train.rundir import WEIGHTS
    from senet.train.trainer import resolve_device
    from senet.weights import read_metadata

    dataset, data = args.dataset, args.data
    if args.run:
        run_dir = RunDir.open(args.run)
        cfg = run_dir.config()
        weights = run_dir.file(WEIGHTS)
        if not weights.is_file():
            raise SenetError(f"{run_dir.path} has no {WEIGHTS} yet (the run has not finished)")
        dataset = dataset or cfg.data.dataset
        data = data if data is not None else cfg.data.path
    else:
        weights = args.weights
        dataset = dataset or "cifar10"
    meta = read_metadata(weights)
    name = args.model or meta.model
    if not name:
        raise SenetError(f"{weights} does not record its model; pass --model NAME")
    model = create_model(name, pretrained=weights)
    info = model_info(name)
    mean = meta.mean or info.mean
    std = meta.std or info.std
    ds = load_split(dataset, args.split, data=data)
    outputs = next(m for m in reversed(list(model.modules())) if isinstance(m, torch.nn.Linear)).out_features
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

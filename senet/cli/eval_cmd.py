"""``senet eval``: top-1 / top-5 error of a run's model or of a weight file on a test split."""

from __future__ import annotations

import argparse

from senet.cli.model_source import add_source_arguments
from senet.cli.options import add_device, add_input_size, add_precision, positive_float, positive_int

HELP = "evaluate a trained run (--run DIR) or a weight file (--weights FILE [--model NAME]) on a test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    add_device(p)
    add_precision(p)
    p.add_argument("--batch-size", type=positive_int, default=128)
    add_input_size(p, help="evaluate at this side, e.g. 320 as in Table 8")
    p.add_argument("--crop-pct", type=positive_float, default=None,
                   help="centre-crop fraction (default: the weights'); the short side is resized to SIDE / crop-pct")
    p.add_argument("--ten-crop", action="store_true",
                   help="average the probabilities of 10 crops (corners, centre, mirrored), as the ILSVRC entry")
    p.add_argument("--full-split", action="store_true",
                   help="with --run: score every image of the split, not the run's data.test_subset / train_subset")


def run(args: argparse.Namespace) -> int:
    from senet.cli.model_source import check_classes, load_data, load_source
    from senet.data.transforms import ViewAverage, batch_transform, check_eval_sizes, resolve_data_config
    from senet.errors import SenetError
    from senet.lowprec import at_precision, check_precision, score_against_fp32
    from senet.train.data import subset
    from senet.train.evaluate import eval_batches, evaluate
    from senet.utils.device import resolve_device

    device = resolve_device(args.device)
    check_precision(args.precision, device)
    source = load_source(args)
    name, model = source.name, source.model
    run_data = source.run.config().data if source.run is not None else None
    ds = load_data(source, args.split)
    what = f"{args.split} split, {len(ds.labels)}"
    if run_data is not None and not args.full_split:  # score what the run's own summary scored
        key = "train_subset" if args.split == "train" else "test_subset"
        n, total = getattr(run_data, key), len(ds.labels)
        if 0 < n < total:
            ds = subset(ds, n)
            what = f"{args.split} split, the run's data.{key}: {n} of {total}"
    check_classes(source, ds, allow=args.allow_class_mismatch)
    if model.num_classes < len(ds.classes):  # even allowed: labels beyond the outputs cannot be scored
        raise SenetError(f"the model's {model.num_classes} outputs cannot score the {len(ds.classes)} classes of "
                         f"{ds.source}")
    size, pct = args.input_size, args.crop_pct
    h, w = ds.images.shape[-2:]
    if run_data is not None and run_data.loader == "memory" and size is None and pct is None and h == w:
        size, pct = h, 1.0  # as the run's own test pass: the stored images, normalised
    cfg = resolve_data_config(model, input_size=size, crop_pct=pct)
    check_eval_sizes(model, cfg, batch_size=args.batch_size, images=len(ds.labels), ten_crop=args.ten_crop)
    net = ViewAverage(model, 10) if args.ten_crop else model
    net.to(device)
    transform = batch_transform(cfg, ds.images.shape[-2:], ten_crop=args.ten_crop)
    if args.precision == "fp32":
        res = {"fp32": evaluate(net, ds.images, ds.labels, transform, batch_size=args.batch_size, device=device)}
        agreement = None
    else:  # one pass: fp32 and the lower precision on the same batches
        batches = eval_batches(ds.images, ds.labels, transform, batch_size=args.batch_size, device=device)
        scored = score_against_fp32(net, batches, {args.precision: at_precision(net, args.precision, device)})
        res = {k: v.errors for k, v in scored.items()}
        agreement = scored[args.precision].agreement
    views = " (10 crops)" if args.ten_crop else ""

    def figures(errors: dict[str, float]) -> str:
        return (f"top-1 error {100 * errors['top1_err']:.2f}%  top-5 error {100 * errors['top5_err']:.2f}%  "
                f"loss {errors['loss']:.4f}")

    print(f"{name} on {ds.source} ({what} images at {cfg.crop}x{cfg.crop}{views}): {figures(res['fp32'])}")
    if agreement is not None:
        print(f"  {args.precision}: {figures(res[args.precision])}; {agreement.describe()}")
    return 0

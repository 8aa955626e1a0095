"""``senet predict``: the top-k classes of images or folders of images, with probabilities."""

from __future__ import annotations

import argparse

from senet.cli.model_source import add_model_arguments
from senet.cli.options import (add_device, add_input_size, add_precision, add_progress, add_skip_corrupt,
                               positive_float, positive_int, show_progress)

HELP = "classify images (files or folders) with a model: top-k class names and probabilities"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE|FOLDER")
    add_model_arguments(p, bare_model=True)
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_input_size(p, help="evaluate at this side")
    p.add_argument("--crop-pct", type=positive_float, default=None,
                   help="centre-crop fraction (default: the weights'); the short side is resized to SIDE / crop-pct")
    p.add_argument("--ten-crop", action="store_true", help="average the 10 crops (corners, centre, mirrored)")
    add_device(p)
    add_precision(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", metavar="FILE", help="also write the predictions as JSON")
    out.add_argument("--csv", metavar="FILE", help="also write the predictions as CSV")
    add_skip_corrupt(p)
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from dataclasses import asdict

    from tqdm.auto import tqdm

    from senet.cli.model_source import load_model
    from senet.data.transforms import resolve_data_config
    from senet.lowprec import check_precision
    from senet.predict import find_images, predict
    from senet.utils.device import resolve_device
    from senet.utils.atomic import write_text
    from senet.utils.text import csv_text

    device = resolve_device(args.device)
    check_precision(args.precision, device)
    paths = find_images(args.images)
    source = load_model(args)
    cfg = resolve_data_config(source.model, input_size=args.input_size, crop_pct=args.crop_pct)
    skipped: list[str] = []

    def on_skip(path: object, reason: str) -> None:
        skipped.append(str(path))
        print(f"skipped {path}: {reason}", file=sys.stderr)

    agreements = []

    def on_agreement(agreement: object) -> None:
        agreements.append(agreement)
        print(f"{args.precision}, first batch: {agreement.describe()}", file=sys.stderr)

    show = show_progress(args) and len(paths) > 1
    results = []
    with tqdm(total=len(paths), unit="img", disable=not show, file=sys.stderr) as bar:
        for pred in predict(source.model, paths, cfg, topk=args.topk, batch_size=args.batch_size,
                            ten_crop=args.ten_crop, skip_corrupt=args.skip_corrupt, device=device,
                            precision=args.precision, on_skip=on_skip, on_agreement=on_agreement,
                            progress=bar.update):
            results.append(pred)
            shown = ", ".join(f"{c} {p:.1%}" for c, p in zip(pred.classes, pred.probabilities))
            bar.write(f"{pred.path}: {shown}", file=sys.stdout)
    if args.json:
        write_text(args.json, json.dumps({"model": source.name, "precision": args.precision,
                                          **({"agreement": asdict(agreements[0])} if agreements else {}),
                                          "predictions": [asdict(r) for r in results],
                                          "skipped": skipped}, indent=2) + "\n")
    if args.csv:
        write_text(args.csv, csv_text(["path", "rank", "class", "index", "probability"], (
            [r.path, rank, c, i, f"{p:.6f}"]
            for r in results for rank, (c, i, p) in enumerate(zip(r.classes, r.indices, r.probabilities), 1))))
    if skipped:
        print(f"{len(skipped)} file(s) skipped", file=sys.stderr)
    return 0

"""``senet export``: a model as ONNX or TorchScript, checked against PyTorch, with its preprocessing;
``--int8``: an int8 ONNX file, checked against fp32 on held-out images."""

from __future__ import annotations

import argparse
from typing import Any

from senet.cli.model_source import add_model_arguments
from senet.cli.options import add_data, add_deprecated, add_input_size, finite_float, positive_int

HELP = "export a model (--run DIR | --weights FILE | --model NAME [--pretrained]) to ONNX or TorchScript, verified"

#: the options that only mean something with --int8 (attribute, flag)
INT8_OPTIONS = (("dataset", "--dataset"), ("data", "--data"), ("images", "--images"), ("calibration", "--calibration"),
                ("held_out", "--held-out"), ("min_agreement", "--min-agreement"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, bare_model=True)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch size free (ONNX)")
    p.add_argument("--dynamic-size", action="store_true", help="leave the height and width free (ONNX)")
    p.add_argument("--opset", type=positive_int, default=None,
                   help="ONNX opset (default: the exporter's; torch 2.14 writes 18 to the newest the installed onnx knows)")
    add_input_size(p, help="side of the example input")
    p.add_argument("--no-optimize", dest="optimize", action="store_false", default=None,
                   help="skip the ONNX exporter's graph optimisations")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="file to write (default: <model>.onnx / <model>.pt, in the run folder for --run)")
    # --out names a folder in every other command
    add_deprecated(p, "--out", target="output", instead="--output FILE", metavar="FILE")
    q = p.add_argument_group("int8 (ONNX, static post-training quantization, checked against fp32)")
    q.add_argument("--int8", action="store_true",
                   help="write an int8 ONNX file (default name <model>-int8.onnx); needs calibration images")
    # calibration images from the dataset's train split, held-out images from its test split
    add_data(q, dataset=True, default="the run's / searched, see README")
    q.add_argument("--images", metavar="FOLDER",
                   help="instead of a dataset: image files under FOLDER, shuffled, split into calibration and held-out")
    q.add_argument("--calibration", type=positive_int, default=None, metavar="N",
                   help="calibration images (default 256)")
    q.add_argument("--held-out", type=positive_int, default=None, metavar="N",
                   help="held-out images the int8 file is checked on (default 512)")
    q.add_argument("--min-agreement", type=finite_float, default=None, metavar="PERCENT",
                   help="refuse the int8 file below this top-1 agreement with fp32 (default 99)")


def _int8_inputs(args: argparse.Namespace, source: Any) -> Any:
    """The :class:`senet.int8.Int8` of ``--images`` or of the dataset (``--dataset``/``--data``,
    by default the run's)."""
    from senet.errors import SenetError
    from senet.int8 import CALIBRATION_IMAGES, HELD_OUT_IMAGES, MIN_AGREEMENT, Int8

    pct = args.min_agreement if args.min_agreement is not None else 100 * MIN_AGREEMENT
    if not 0 <= pct <= 100:
        raise SenetError(f"--min-agreement must be a percentage in [0, 100], got {pct:g}")
    counts = {"calibration": args.calibration or CALIBRATION_IMAGES, "held_out": args.held_out or HELD_OUT_IMAGES,
              "input_size": args.input_size, "min_agreement": pct / 100}
    if args.images:
        if args.dataset or args.data:
            raise SenetError("give --images FOLDER or a dataset (--dataset / --data), not both")
        return Int8.from_folder(source.model, args.images, **counts)
    dataset, data = args.dataset, args.data
    if source.run is not None:
        cfg = source.run.config().data
        if cfg.loader != "memory" and dataset is None and data is None:
            raise SenetError(f"--int8: the run's dataset ({cfg.dataset}) is streamed, not loaded whole; give "
                             "--images FOLDER (or --dataset / --data) for calibration images")
        dataset = dataset or cfg.dataset
        data = data if data is not None else cfg.path
    if dataset is None and data is None:
        raise SenetError("--int8 needs calibration images: --dataset / --data (train split to calibrate, test split "
                         "to check) or --images FOLDER")
    return Int8.from_dataset(source.model, dataset or "cifar10", data=data, **counts)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from senet.cli.model_source import load_model
    from senet.errors import SenetError
    from senet.export import SUFFIXES, export_model

    if not args.int8:
        given = [flag for attr, flag in INT8_OPTIONS if getattr(args, attr) is not None]
        if given:
            raise SenetError(f"{', '.join(given)} apply to --int8 only")
    elif args.format != "onnx":
        raise SenetError(f"--int8 applies to ONNX files only, not to {args.format}")
    source = load_model(args, need_weights=False)
    if args.output:
        out = Path(args.output)
    else:
        folder = source.run.path if source.run is not None else Path(".")
        out = folder / f"{source.name}{'-int8' if args.int8 else ''}{SUFFIXES[args.format]}"
    size = None
    if args.input_size:
        size = (source.model.in_chans, args.input_size, args.input_size)
    int8 = None
    if args.int8:
        print("preparing calibration and held-out images ...", flush=True)
        int8 = _int8_inputs(args, source)
    print(f"exporting {source.name} to {args.format}{' (int8)' if int8 is not None else ''} ...", flush=True)
    result = export_model(source.model, out, format=args.format, input_size=size, dynamic_batch=args.dynamic_batch,
                          dynamic_size=args.dynamic_size, opset=args.opset, optimize=args.optimize, int8=int8)
    shapes = ", ".join("x".join(map(str, s)) for s in result.shapes)
    if result.agreement is not None:
        print(f"wrote {result.path}: int8, {result.agreement.describe()}; largest logit difference "
              f"{result.max_abs_diff:.3g} ({result.max_rel_diff:.2g} of the largest logit); checked on inputs {shapes}")
    else:
        print(f"wrote {result.path}: largest difference from PyTorch {result.max_abs_diff:.3g} "
              f"({result.max_rel_diff:.2g} of the largest logit) on inputs {shapes}")
    return 0

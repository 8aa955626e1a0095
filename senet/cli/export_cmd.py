"""``senet export``: a model as ONNX or TorchScript, checked against PyTorch, with its preprocessing."""

from __future__ import annotations

import argparse

from senet.cli.model_source import add_model_arguments
from senet.cli.options import add_deprecated, add_input_size, positive_int

HELP = "export a model (--run DIR | --weights FILE | --model NAME [--pretrained]) to ONNX or TorchScript, verified"


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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from senet.cli.model_source import load_model
    from senet.export import SUFFIXES, export_model

    source = load_model(args, need_weights=False)
    if args.output:
        out = Path(args.output)
    else:
        folder = source.run.path if source.run is not None else Path(".")
        out = folder / f"{source.name}{SUFFIXES[args.format]}"
    size = None
    if args.input_size:
        size = (source.model.in_chans, args.input_size, args.input_size)
    print(f"exporting {source.name} to {args.format} ...", flush=True)
    result = export_model(source.model, out, format=args.format, input_size=size, dynamic_batch=args.dynamic_batch,
                          dynamic_size=args.dynamic_size, opset=args.opset, optimize=args.optimize)
    shapes = ", ".join("x".join(map(str, s)) for s in result.shapes)
    print(f"wrote {result.path}: largest difference from PyTorch {result.max_abs_diff:.3g} "
          f"({result.max_rel_diff:.2g} of the largest logit) on inputs {shapes}")
    return 0

"""``senet convert SRC DST``: a timm / Cadene / senet checkpoint to senet-native ``.safetensors``."""

from __future__ import annotations

import argparse

from senet.cli.options import finite_float, positive_float

HELP = "convert a timm or Cadene (pretrainedmodels) checkpoint to senet-native .safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint to read (.pth/.pt/.bin, torch.load with weights_only=True, or .safetensors)")
    p.add_argument("dst", help="senet .safetensors file to write")
    p.add_argument("--model", default=None,
                   help="senet model name (default: inferred from the checkpoint's names and shapes)")
    p.add_argument("--set", dest="kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="model keyword overriding the checkpoint's layout, value parsed as JSON when it can be")
    p.add_argument("--classes", default=None, metavar="FILE", help="text file with one class name per line")
    p.add_argument("--mean", type=finite_float, nargs="+", default=None, help="input normalisation mean to record")
    p.add_argument("--std", type=positive_float, nargs="+", default=None, help="input normalisation std to record")
    p.add_argument("--allow-nonfinite", action="store_true", help="write weights holding NaN or inf values too")


def run(args: argparse.Namespace) -> int:
    from senet.cli.complexity_cmd import _parse_kwargs
    from senet.errors import SenetError
    from senet.models import convert_weights
    from senet.models._pretrained import ClassNamesError
    from senet.utils.text import read_text

    what = "--classes: one class name per line"
    classes = None
    if args.classes:
        classes = [line.strip() for line in read_text(args.classes, what).splitlines() if line.strip()]
        if not classes:
            raise SenetError(f"{args.classes} holds no class names ({what})")
    try:
        model = convert_weights(args.src, args.dst, model=args.model, classes=classes, mean=args.mean,
                                std=args.std, allow_nonfinite=args.allow_nonfinite, **_parse_kwargs(args.kwargs))
    except ClassNamesError as e:
        raise SenetError(f"{args.classes}: {e} ({what})") from None
    spec = model.senet_spec
    source = model.senet_weights.format
    extra = ", ".join(f"{k}={v!r}" for k, v in spec.kwargs.items())
    print(f"wrote {args.dst}: {spec.name} ({extra}) from {source} weights in {args.src}")
    return 0

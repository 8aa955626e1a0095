"""``senet models``: every registered model with its params and GFLOPs, then timm's names for them."""

from __future__ import annotations

import argparse

HELP = "list registered models (and timm's names for them) with params and GFLOPs at their default input size"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'se_*'")
    p.add_argument("--names", action="store_true", help="names only (no complexity)")
    p.add_argument("--pretrained", action="store_true",
                   help="only names with released weights, each as name.tag (one line per set of weights)")


def run(args: argparse.Namespace) -> int:
    import torch

    from senet.complexity import complexity
    from senet.models import create_model, list_aliases, list_models, model_info

    names = list_models(args.pattern, pretrained=args.pretrained, include_aliases=True)
    if args.names:
        print("\n".join(names))
        return 0
    aliases = list_aliases()
    print(f"{'model':<34} {'family':<14} {'SE':<3} {'input':>7} {'classes':>7} {'params M':>9} {'GFLOPs':>8}  "
          "timm name of")
    for name in names:
        info = model_info(name)
        with torch.device("meta"):
            model = create_model(name)
        size = model.pretrained_cfg["input_size"]
        c = complexity(model, size)
        arch = name.partition(".")[0]
        of = f"{aliases[arch][0]}, {_layout(aliases[arch][1])}" if arch in aliases else ""
        print(f"{name:<34} {info.family:<14} {'yes' if info.has_se else 'no':<3} {f'{size[1]}x{size[2]}':>7} "
              f"{info.num_classes:>7} {c.mparams:9.2f} {c.gflops:8.3f}  {of}".rstrip())
    return 0


def _layout(kwargs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))

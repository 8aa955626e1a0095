"""``senet models``: every registered model with its params and GFLOPs."""

from __future__ import annotations

import argparse

HELP = "list registered models with params and GFLOPs at their default input size"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'se_*'")
    p.add_argument("--names", action="store_true", help="names only (no complexity)")


def run(args: argparse.Namespace) -> int:
    import torch

    from senet.complexity import complexity
    from senet.models import create_model, list_models, model_info

    names = list_models(args.pattern)
    if args.names:
        print("\n".join(names))
        return 0
    print(f"{'model':<28} {'family':<14} {'SE':<3} {'input':>7} {'classes':>7} {'params M':>9} {'GFLOPs':>8}")
    for name in names:
        info = model_info(name)
        with torch.device("meta"):
            model = create_model(name)
        c = complexity(model, info.input_size)
        size = f"{info.input_size[1]}x{info.input_size[2]}"
        print(f"{name:<28} {info.family:<14} {'yes' if info.has_se else 'no':<3} {size:>7} "
              f"{info.num_classes:>7} {c.mparams:9.2f} {c.gflops:8.3f}")
    return 0

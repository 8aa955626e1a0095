"""``senet complexity``: params and FLOPs of a model, or of every row of the paper's tables."""

from __future__ import annotations

import argparse
import json

from senet.cli.options import positive_int

HELP = "params and GFLOPs of a model, or (--paper) every paper row beside the measured figures"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="a registered model name")
    p.add_argument("--paper", action="store_true",
                   help="compare every paper row; exit 1 if one is >1%% off without a documented reason")
    p.add_argument("--input-size", type=positive_int, default=None, help="square input side (default: the model's)")
    p.add_argument("--set", dest="kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="model keyword, value parsed as JSON when it can be (e.g. reduction=8)")


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    width = int(spec.split(".")[0].lstrip("+"))
    return "-".rjust(width + len(suffix)) if x is None else format(x, spec) + suffix


def _paper_gflops(x: float | None) -> str:
    """The paper's GFLOPs with the digits it gives: 2 decimals, 3 where it has them (0.569)."""
    if x is None:
        return "-"
    text = f"{x:.3f}"
    return text[:-1] if text.endswith("0") else text


def _parse_kwargs(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except RecursionError:
            raise ValueError(f"--set {key}: the value is nested too deeply") from None
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from senet.complexity import complexity
    from senet.errors import SenetError
    from senet.models import create_model, model_info
    from senet.paper import TOLERANCE, compare

    if args.paper:
        print(f"{'table':>5}  {'row':<16} {'model':<22} {'params M':>9} {'paper':>6} {'diff':>7}"
              f" {'GFLOPs':>7} {'paper':>6} {'diff':>7}  ok")
        bad = documented = 0
        for c in compare():
            excused = not c.ok and bool(c.row.note)  # a documented exception (note column)
            documented += excused
            bad += not c.ok and not excused
            pd = None if c.params_diff is None else 100 * c.params_diff
            gd = None if c.gflops_diff is None else 100 * c.gflops_diff
            print(f"{c.row.table:>5}  {c.row.label:<16} {c.row.model:<22} {c.params_m:9.2f} "
                  f"{_fmt(c.row.params_m, '6.1f')} {_fmt(pd, '+6.2f', '%')} {c.gflops:7.3f} "
                  f"{_paper_gflops(c.row.gflops):>6} {_fmt(gd, '+6.2f', '%')}  "
                  f"{'yes' if c.ok else 'doc' if excused else 'NO'}"
                  + (f"  ({c.row.note})" if c.row.note else ""))
        print(f"{bad} row(s) more than {TOLERANCE:.0%} off the paper without a documented reason; "
              f"{documented} documented exception(s)")
        return 1 if bad else 0
    if not args.model:
        raise ValueError("give a model name or --paper")
    info = model_info(args.model)
    size = info.input_size if args.input_size is None else (3, args.input_size, args.input_size)
    with torch.device("meta"):
        model = create_model(args.model, **_parse_kwargs(args.kwargs))
    try:
        c = complexity(model, size)
    except RuntimeError as e:  # the network's layers reject the input, e.g. a kernel larger than the map
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SenetError(f"{args.model} cannot run at {size[1]}x{size[2]}: {first}; try a larger --input-size") from None
    print(f"{args.model}: {c.params:,} params ({c.mparams:.2f} M), {c.flops:,} FLOPs ({c.gflops:.3f} G) "
          f"at {size[1]}x{size[2]}")
    return 0

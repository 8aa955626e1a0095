"""Argument types that range-check numbers: a bad value is an argparse error naming the option
(``argument --batch-size: must be an integer >= 1, got '0'``), before anything runs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from senet.utils.device import DEVICES


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= low``."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def add_device(p: argparse.ArgumentParser, *, default: str | None = "auto", help: str | None = None) -> None:
    """The one ``--device`` option of every command: ``auto`` (CUDA when present), ``cpu``, ``cuda``."""
    p.add_argument("--device", default=default, choices=DEVICES,
                   help=help or "auto (CUDA when present, the default), cpu or cuda")


#: the values of ``--precision``; ``senet.lowprec.check_precision`` says where each runs
PRECISIONS = ("fp32", "bf16")


def add_precision(p: argparse.ArgumentParser) -> None:
    """The one ``--precision`` option of the inference commands (``predict``, ``eval``)."""
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (the default) or bf16: autocast, on CPUs and GPUs with bf16 units; the bf16 "
                        "predictions are compared with fp32 (top-1 agreement, probability difference)")

"""Argument types that range-check numbers: a bad value is an argparse error naming the option
(``argument --batch-size: must be an integer >= 1, got '0'``), before anything runs; and the
reading of the text files options name (:func:`read_text_option`)."""

from __future__ import annotations

import argparse
import codecs
import math
from collections.abc import Callable


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


DEVICES = ("auto", "cpu", "cuda")


def add_device(p: argparse.ArgumentParser, *, default: str | None = "auto", help: str | None = None) -> None:
    """The one ``--device`` option of every command: ``auto`` (CUDA when present), ``cpu``, ``cuda``."""
    p.add_argument("--device", default=default, choices=DEVICES,
                   help=help or "auto (CUDA when present, the default), cpu or cuda")


#: Largest text file an option may name (a class list of a million long names fits).
TEXT_LIMIT = 64 * 2**20
# byte-order marks, UTF-32's before UTF-16's (FF FE 00 00 starts with FF FE)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"))


def read_text_option(path: str, option: str) -> str:
    """The text of the file ``option`` names (``--classes FILE``): UTF-8, with or without a
    byte-order mark, or UTF-16 / UTF-32 with one (what Windows editors save as "Unicode").
    A file that cannot be read, is larger than :data:`TEXT_LIMIT` or is not such text is a
    one-line error naming the option and the file."""
    from senet.errors import SenetError, fs_error

    try:
        with open(path, "rb") as f:
            data = f.read(TEXT_LIMIT + 1)
    except OSError as e:
        raise fs_error(e, path, f"read {option}") from None
    if len(data) > TEXT_LIMIT:
        raise SenetError(f"{option} {path}: larger than {TEXT_LIMIT // 2**20} MiB; expected a text file")
    codec, name = "utf-8", "UTF-8"
    for bom, bom_codec, bom_name in _BOMS:
        if data.startswith(bom):
            codec, name = bom_codec, bom_name
            break
    try:
        text, problem = data.decode(codec), ""
    except UnicodeDecodeError as e:
        text, problem = "", f"byte 0x{data[e.start]:02x} at offset {e.start}"
    if problem or "\0" in text:
        guess = "; UTF-16 without a byte-order mark?" if b"\0" in data else ""
        raise SenetError(f"{option} {path}: not {name} text ({problem or 'NUL characters'}{guess}); "
                         "save it as UTF-8 (or UTF-16 with a byte-order mark)")
    return text

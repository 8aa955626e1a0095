"""The options the ``senet`` commands share, each with one meaning wherever it appears, and
argument types that check values: a bad value is an argparse error naming the option
(``argument --batch-size: must be an integer >= 1, got '0'``), before anything runs.

* ``--model NAME`` names a registered model; ``--model-kw KEY=VALUE`` is one of its
  ``create_model`` keywords (value read as YAML, as a recipe's).
* ``--set KEY=VALUE`` overrides a value of the training configuration (``train``, ``ablate``).
* ``--out DIR`` is always a folder; a command writing one file names it ``--output FILE``.
* ``--data PATH`` is where the dataset is, ``--dataset`` which one it is.
* ``--device``, ``--no-progress``, ``--input-size`` mean the same in every command.

An old spelling kept for one release (:func:`add_deprecated`) still works and says on stderr
what replaces it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

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


def add_progress(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    """``--no-progress``: no progress bar; without it there is one when stderr is a terminal
    (:func:`show_progress`)."""
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help=help or "no progress bar (default: one when stderr is a terminal)")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw a progress bar: on a terminal, unless ``--no-progress``."""
    return args.progress and sys.stderr.isatty()


def add_skip_corrupt(p: argparse.ArgumentParser) -> None:
    """``--skip-corrupt``: leave out unreadable images, each named (:func:`report_skipped`),
    instead of stopping at the first one."""
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out unreadable or non-image files, naming them (default: an error)")


def report_skipped(skipped: list[str], *, shown: int = 10) -> None:
    """Name on stderr the images ``--skip-corrupt`` left out of a split (the first ``shown``)."""
    if skipped:
        more = f", and {len(skipped) - shown} more" if len(skipped) > shown else ""
        print(f"warning: left out {len(skipped)} unreadable image(s): {', '.join(skipped[:shown])}{more}",
              file=sys.stderr)


def add_out(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--out DIR``: the folder a command writes into (``help`` says its default)."""
    p.add_argument("--out", metavar="DIR", help=help)


def add_data(p: argparse.ArgumentParser, *, dataset: bool, default: str = "searched, see README") -> None:
    """``--data PATH`` (the dataset's folder or archive) and, with ``dataset``, ``--dataset`` (which
    one it is; ``train``/``ablate`` take it from the recipe, ``--set data.dataset=...``)."""
    if dataset:
        p.add_argument("--dataset", help="cifar10, cifar100 or an ImageFolder path (default: the run's / cifar10)")
    p.add_argument("--data", metavar="PATH", help=f"the dataset's folder or archive (default: {default})")


def add_input_size(p: argparse.ArgumentParser, *, help: str = "square input side") -> None:
    """``--input-size SIDE``: the side of the square input, by default the model's (its weights')."""
    p.add_argument("--input-size", type=positive_int, default=None, metavar="SIDE",
                   help=f"{help} (default: the model's input size)")


def add_overrides(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable): a value of the training configuration, read as YAML
    (:func:`senet.train.config.parse_override`); only the commands that train have it."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def model_keyword(text: str) -> tuple[str, Any]:
    """``"reduction=8"`` -> ``("reduction", 8)``: a ``create_model`` keyword, the value read as
    YAML as ``--set``'s (:func:`senet.utils.text.yaml_value`)."""
    from senet.errors import ConfigError
    from senet.utils.text import yaml_value

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE with a model keyword as KEY (e.g. reduction=8), "
                                         f"got {text!r}")
    try:
        return key, yaml_value(raw, key)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


model_keyword.__name__ = "KEY=VALUE"  # argparse names the type in its messages


def add_model(p: argparse.ArgumentParser, *, help: str, old_set: bool = False) -> None:
    """``--model NAME`` and its keywords, ``--model-kw KEY=VALUE`` (repeatable; :func:`model_kwargs`);
    with ``old_set`` also their old name ``--set`` (``complexity``, ``convert``), deprecated."""
    p.add_argument("--model", metavar="NAME", help=help)
    p.add_argument("--model-kw", dest="model_kw", type=model_keyword, action="append", default=[],
                   metavar="KEY=VALUE", help="a create_model keyword of the model, the value read as YAML "
                                             "(e.g. reduction=8, stride_in_1x1=false, se_stages=[3,4]); repeatable")
    if old_set:
        add_deprecated(p, "--set", target="model_kw", instead="--model-kw KEY=VALUE", append=True,
                       type=model_keyword, metavar="KEY=VALUE")


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--model-kw`` keywords, the last value of a keyword given twice."""
    return dict(args.model_kw)


class _Deprecated(argparse.Action):
    """An old spelling, hidden from the help: it stores its value where ``instead`` does (into
    ``target``; appended with ``append``) and says on stderr, once per command, what to write."""

    def __init__(self, option_strings: list[str], dest: str, *, target: str, instead: str, append: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.target, self.instead, self.append = target, instead, append

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        old = option_string or f"the positional {self.metavar}"
        noted = namespace.__dict__.setdefault("_deprecated", set())
        if old not in noted:
            noted.add(old)
            print(f"{parser.prog}: note: {old} is deprecated here and goes away in the next release; use "
                  f"{self.instead}", file=sys.stderr)
        if self.append:
            setattr(namespace, self.target, [*(getattr(namespace, self.target, None) or []), values])
        else:
            setattr(namespace, self.target, values)


def add_deprecated(p: argparse.ArgumentParser, *names: str, target: str, instead: str, append: bool = False,
                   **kwargs: Any) -> None:
    """An old spelling (option ``--x`` or, given a plain name, an optional positional argument)
    that still works for one release, storing into ``target`` with a note on stderr."""
    positional = {} if names[0].startswith("-") else {"nargs": "?"}
    p.add_argument(*names, action=_Deprecated, target=target, instead=instead, append=append,
                   default=argparse.SUPPRESS, **positional, **kwargs)


#: the values of ``--precision``; ``senet.lowprec.check_precision`` says where each runs
PRECISIONS = ("fp32", "bf16")


def add_precision(p: argparse.ArgumentParser) -> None:
    """The one ``--precision`` option of the inference commands (``predict``, ``eval``)."""
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (the default) or bf16: autocast, on CPUs and GPUs with bf16 units; the bf16 "
                        "predictions are compared with fp32 (top-1 agreement, probability difference)")

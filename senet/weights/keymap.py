"""Renaming a checkpoint's keys: the one mechanism every foreign layout's key map uses."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from senet.errors import WeightsError

#: ``(pattern, replacement)``: the first pattern that matches a key (``re.match``, from its
#: start) rewrites it with ``re.sub`` semantics; keys no pattern matches keep their name.
Rule = tuple[str, str]


def prefix_rules(renames: Mapping[str, str]) -> list[Rule]:
    """Rules replacing each key prefix ``old`` by ``new`` (``{"layer0.": "stem."}``)."""
    return [(re.escape(old), new.replace("\\", "\\\\")) for old, new in renames.items()]


def rename_keys(
    state: Mapping[str, torch.Tensor], rules: Sequence[Rule], source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` with its keys renamed by ``rules``, and a map ``new key -> key in the file``.

    Two keys that end up with one name are an error naming both (a wrong map must not drop a
    tensor silently).
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = key
        for pattern, repl in compiled:
            if pattern.match(key):
                new = pattern.sub(repl, key, count=1)
                break
        if new in out:
            raise WeightsError(f"{source}: keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new] = value
        origin[new] = key
    return out, origin


@dataclass(frozen=True)
class Foreign:
    """A checkpoint of another project, renamed to a senet family's keys.

    ``source`` names the project's layout (``"timm"``, ``"legacy"``); ``layout`` holds the model
    keywords that make senet compute what that project computes with these weights (stride
    position, stem pooling ...); ``describe`` is a one-line description for error messages.
    """

    source: str
    state: dict[str, torch.Tensor]
    origin: dict[str, str]
    layout: dict[str, Any] = field(default_factory=dict)
    describe: str = ""


#: A family's reader of one foreign layout: the renamed checkpoint, or ``None`` if the keys
#: are not of that layout.
Converter = Callable[[Mapping[str, torch.Tensor], str], "Foreign | None"]


def is_batch_counter(key: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: training bookkeeping that old checkpoints lack."""
    return key.endswith("num_batches_tracked")

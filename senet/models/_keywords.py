"""What a ``create_model`` keyword may be, and what building with it may cost (:mod:`senet.models._builder`
uses both): the keywords a model takes (:func:`model_keywords`), the SE keywords turned into the
model's :class:`~senet.layers.SEConfig` (the only place that does), the one range check of every
numeric keyword, the caller's or a weight file's (:func:`check_keywords`), and :class:`SizeGuard`,
which stops a constructor before it allocates more than a bound or builds a layer without
channels."""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from numbers import Integral, Real
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from senet.layers.se import SE_KWARGS, SEConfig
from senet.models import registry


def model_keywords(info: registry.ModelInfo) -> list[str]:
    """The keywords ``create_model(info.name, ...)`` accepts besides the builder's own."""
    params = inspect.signature(info.family_info.cls.__init__).parameters
    own = [p for p, v in params.items() if p not in ("self", "se") and v.kind is v.KEYWORD_ONLY]
    return sorted(own + (list(SE_KWARGS) if info.has_se else []))


def se_config(info: registry.ModelInfo, kwargs: dict[str, Any]) -> SEConfig | None:
    """Pop the SE keywords from ``kwargs``: the model's :class:`SEConfig`, or ``None`` without SE."""
    se_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in SE_KWARGS}
    if "se" in kwargs:
        raise ValueError("pass SE settings as keywords (reduction=, placement=, ...), not se=")
    if not info.has_se:
        if se_kwargs:
            raise ValueError(f"SE options {sorted(se_kwargs)} given to {info.name}, a model without SE blocks; "
                             "use its se_ variant")
        return None
    se = SEConfig.from_kwargs(se_kwargs)
    allowed = info.family_info.placements
    if se.placement not in allowed:
        raise ValueError(f"placement {se.placement!r} is not available in the {info.family} family; "
                         f"allowed: {', '.join(map(repr, allowed))}")
    return se


#: Lowest value of each integer keyword that is not 1 (stage numbers: VGG's start at 0; the
#: model names the stages it has).
_INT_LOW = {"num_classes": 0, "se_stages": 0}
#: Probabilities: numbers in [0, 1). Every other number keyword must be > 0.
_RATES = ("drop_rate", "drop_path_rate", "dropout")


@lru_cache(maxsize=None)
def numeric_keywords(cls: type, has_se: bool) -> dict[str, tuple[type, bool, bool]]:
    """``keyword -> (int or float, is a sequence, may be None)`` for every numeric keyword of
    ``cls.__init__`` (and the SE keywords), from the annotations."""
    hints = dict(typing.get_type_hints(cls.__init__))
    if has_se:
        se_hints = typing.get_type_hints(SEConfig)
        hints.update({key: se_hints[field] for key, field in SE_KWARGS.items()})
    out = {}
    for key, hint in hints.items():
        optional = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(rest) != 1:
                continue
            optional, hint = True, rest[0]
        if hint in (int, float):
            out[key] = (hint, False, optional)
        elif typing.get_origin(hint) in (tuple, list, Sequence) and \
                all(a in (int, Ellipsis) for a in typing.get_args(hint)) and typing.get_args(hint):
            out[key] = (int, True, optional)
    return out


def _allowed(key: str, kind: type) -> tuple[str, Any]:
    """The range of a numeric keyword: what it must be (the words after "must be") and a test of
    one value."""
    if kind is int:
        low = _INT_LOW.get(key, 1)
        return f"an integer >= {low}", lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= low
    finite = lambda v: isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if key in _RATES:
        return "in [0, 1)", lambda v: finite(v) and 0 <= v < 1
    return "> 0 and finite", lambda v: finite(v) and v > 0


def check_keywords(info: registry.ModelInfo, kwargs: Mapping[str, Any]) -> None:
    """Every numeric keyword of ``info``'s model (``num_classes``, ``in_chans``, widths, depths,
    groups, ``reduction``, ``se_divisor``, ``se_stages`` ... whatever its family takes, found from
    its annotations) is a number of the right kind in its range: integers >= 1
    (``num_classes``, stage numbers >= 0), rates in [0, 1), other numbers finite and > 0. A ``ValueError`` names the
    keyword and the range. The one check of every keyword, the caller's or a weight file's."""
    kinds = numeric_keywords(info.family_info.cls, info.has_se)
    for key, value in kwargs.items():
        if key not in kinds or (value is None and kinds[key][2]):
            continue
        kind, sequence, _ = kinds[key]
        text, ok = _allowed(key, kind)
        if sequence:  # sequences are of integers
            if not isinstance(value, (list, tuple)) or not all(ok(v) for v in value):
                raise ValueError(f"{info.name}: {key} must be a sequence of {text.replace('an integer', 'integers')}, "
                                 f"got {value!r}")
        elif not ok(value):
            raise ValueError(f"{info.name}: {key} must be {text}, got {value!r}")


class TooLarge(Exception):
    def __init__(self, shape: tuple[int, ...], nbytes: int, total: int) -> None:
        super().__init__(shape, nbytes, total)
        self.shape, self.nbytes, self.total = shape, nbytes, total


class EmptyLayer(Exception):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(shape)
        self.shape = shape


_FACTORIES = frozenset((torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.empty_strided))


#: Initialisers: they only fill values, which tensors on the meta device do not have.
_FILLERS = frozenset(("normal_", "uniform_", "fill_", "zero_", "kaiming_normal_", "kaiming_uniform_",
                      "xavier_normal_", "xavier_uniform_", "trunc_normal_", "constant_", "ones_", "zeros_"))


class SizeGuard(TorchFunctionMode):
    """Adds up the bytes of every tensor a model's constructor creates and stops it before the
    allocation that would take the total past ``limit`` or create an empty layer (keywords whose
    widths round down to 0 channels), and on the meta device (shapes only:
    :func:`model_shapes`, :func:`infer_model`) skips the initialisers,
    which would only fill values that do not exist there (half the time of such a build)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.total = 0

    def __torch_function__(self, func, types_, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in _FILLERS:
            target = args[0] if args else kwargs.get("tensor")  # nn.init passes it by name
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        if func in _FACTORIES:
            size = kwargs.get("size")
            if size is None and args:
                size = args[0] if isinstance(args[0], (tuple, list, torch.Size)) else args
            try:
                shape = tuple(int(n) for n in size)
            except (TypeError, ValueError):
                shape = None
            if shape is not None and all(n >= 0 for n in shape):
                if 0 in shape:
                    raise EmptyLayer(shape)
                nbytes = math.prod(shape) * (kwargs.get("dtype") or torch.get_default_dtype()).itemsize
                self.total += nbytes
                if self.total > self.limit:
                    raise TooLarge(shape, nbytes, self.total)
        return func(*args, **kwargs)

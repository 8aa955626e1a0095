"""Sizes a command may be asked to work at, checked before anything is allocated.

* :func:`check_work_size`: one tensor a setting makes senet allocate (an image resized by
  ``crop_pct``, a batch of inputs: ``batch_size`` x input size, an export's example input, a
  training batch) may hold at most :func:`max_work_bytes` (4 GiB, or ``$SENET_MAX_WORK_BYTES``):
  an absurd value (``--crop-pct 1e-6`` would resize each image to 10^14 pixels) is a one-line
  error naming the setting and the size it would need, not a process that grows until the
  kernel kills it.
* :func:`max_model_bytes`: the weights of a model ``create_model`` builds (8 GiB, or
  ``$SENET_MAX_MODEL_BYTES``); the builder stops a construction before it allocates more.
* :func:`check_input_size`: an input side a model cannot run at (below its pretrained config's
  ``min_input_size``, or where its layers reject the input) is an error naming the setting and
  the smallest side that works, found by running the network on the meta device (no memory,
  no arithmetic).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from senet.errors import SenetError

if TYPE_CHECKING:  # torch is imported where a model is run: the configuration checks stay light
    from torch import nn

ENV = "SENET_MAX_WORK_BYTES"
DEFAULT_MAX_WORK_BYTES = 4 << 30


def env_bytes(name: str) -> int | None:
    """The positive number of bytes the environment variable ``name`` sets (``4e9`` allowed),
    ``None`` when it is unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise SenetError(f"${name} must be a positive number of bytes, got {text!r}")
    return value


def max_work_bytes() -> int:
    """The largest tensor a setting may ask for: ``$SENET_MAX_WORK_BYTES`` or 4 GiB."""
    return env_bytes(ENV) or DEFAULT_MAX_WORK_BYTES


MODEL_ENV = "SENET_MAX_MODEL_BYTES"
#: 2**31 float32 values: some 15 times VGG-16, the largest registered model
DEFAULT_MAX_MODEL_BYTES = 8 << 30


def max_model_bytes() -> int:
    """The most the parameters and buffers of a model ``create_model`` builds may take:
    ``$SENET_MAX_MODEL_BYTES`` or 8 GiB."""
    return env_bytes(MODEL_ENV) or DEFAULT_MAX_MODEL_BYTES


def human_bytes(n: float) -> str:
    """``n`` bytes as ``1.5 GiB``, ``3.2e+05 TiB`` beyond that."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def check_work_size(what: str, shape: Sequence[int], itemsize: int = 4) -> None:
    """Refuse ``what`` (the setting and its value, e.g. ``"--crop-pct 1e-06"``) when it needs
    a tensor of ``shape`` (``itemsize`` bytes per element) above :func:`max_work_bytes`."""
    size = math.prod(int(s) for s in shape) * itemsize
    limit = max_work_bytes()
    if size > limit:
        dims = "x".join(f"{int(s):,}" for s in shape)
        raise SenetError(f"{what} would need a {dims} tensor ({human_bytes(size)}), more than the "
                         f"{human_bytes(limit)} senet allows for one (${ENV} raises the limit)")


def _model_name(model: nn.Module) -> str:
    spec = getattr(model, "senet_spec", None)
    return spec.name if spec is not None else type(model).__name__


def run_error(model: nn.Module, size: Sequence[int]) -> str | None:
    """Why ``model`` cannot run on one input of ``size`` = (C, H, W), or ``None`` when it can
    (a forward pass on the meta device: shapes only)."""
    import torch

    state = {name: t.to("meta") for name, t in (*model.named_parameters(), *model.named_buffers())}
    x = torch.empty(2, *size, device="meta")  # two: batch norm in training mode needs more than one value
    try:
        with torch.no_grad():
            torch.func.functional_call(model, state, (x,))
    except Exception as e:  # noqa: BLE001 (the layers raise RuntimeError, ValueError, ...)
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        return (lines[0] if lines else type(e).__name__)[:200]
    return None


def check_input_size(model: nn.Module, size: Sequence[int], what: str) -> None:
    """Refuse an input ``size`` = (C, H, W) ``model`` cannot run at; ``what`` names the setting
    (``"--input-size"``). The message gives the smallest square side that works."""
    c, h, w = (int(s) for s in size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = _model_name(model)
    low = cfg.get("min_input_size") or 1
    if isinstance(low, (tuple, list)):  # timm's form, (C, H, W)
        low = min(low[-2:])
    low = int(low)
    if min(h, w) < low:
        raise SenetError(f"{what} {min(h, w)} is below {name}'s smallest input side, {low} "
                         f"(its pretrained_cfg min_input_size)")
    error = run_error(model, (c, h, w))
    if error is None:
        return
    smallest = _smallest_side(model, c, max(h, w) + 1)
    if smallest is None:  # no size runs on the meta device: it cannot judge this model
        return
    raise SenetError(f"{name} cannot run at {h}x{w} ({what} {min(h, w)}): {error}; the smallest side it runs "
                     f"at is {smallest}")


def _smallest_side(model: nn.Module, channels: int, start: int, top: int = 4096) -> int | None:
    """The smallest square side >= ``start`` the model runs at (its layers' limits are
    monotonic: a larger input never fails where a smaller one runs), up to ``top``."""
    hi = start
    while run_error(model, (channels, hi, hi)) is not None:
        if hi >= top:
            return None
        hi = min(top, hi * 2)
    lo = start - 1  # fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run_error(model, (channels, mid, mid)) is None:
            hi = mid
        else:
            lo = mid
    return hi

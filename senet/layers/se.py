"""The Squeeze-and-Excitation block (Hu et al., TPAMI 2019, section 3).

Given the output ``U`` (``C x H x W``) of a transformation ``F_tr``:

* squeeze, eq. 2: ``z_c = 1/(H W) sum_ij u_c(i, j)`` (global average pooling; Table 11
  also studies max pooling, Table 16 removes the pooling altogether: "NoSqueeze");
* excitation, eq. 3: ``s = sigma(W2 delta(W1 z))`` with ``W1: C/r x C``, ``W2: C x C/r``,
  ``delta`` a ReLU and ``sigma`` the gate (sigmoid by default; Table 12 tries tanh and ReLU);
* scale, eq. 4: ``x~_c = s_c * u_c``.

This module is the project's only SE implementation. Blocks of every model family take an
:class:`SEConfig` and ask it for an :class:`SqueezeExcite` where the placement wants one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Optional

import torch
from torch import nn

SQUEEZES = ("avg", "max", "none")
GATES = ("sigmoid", "tanh", "relu")
PLACEMENTS = ("standard", "pre", "post", "identity", "conv3x3")

#: ``create_model`` keyword -> :class:`SEConfig` field. These names are public API.
SE_KWARGS = {
    "reduction": "reduction",
    "se_bias": "bias",
    "squeeze": "squeeze",
    "gate": "gate",
    "placement": "placement",
    "se_stages": "stages",
    "se_divisor": "divisor",
}


def _choice(name: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, never below ``divisor`` nor
    below 90% of ``value`` (timm's and the TF MobileNets' channel rounding)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def hidden_channels(channels: int, reduction: float, divisor: int | None = None) -> int:
    """Width ``C/r`` of the excitation bottleneck.

    The paper's parameter counts (Table 10) use ``floor(C / r)``: that is the default.
    With ``divisor`` the width is rounded to the nearest multiple of ``divisor`` (never below
    ``divisor`` nor below 90% of ``C/r``: :func:`make_divisible`), as timm does with
    ``divisor=8``; useful where ``C`` is small (16 channels on CIFAR give ``C/16 = 1``). ``reduction`` and ``divisor``
    are taken as :class:`SEConfig` validates them; a width below 1 is a ``ValueError``.
    """
    hidden = int(channels // reduction) if divisor is None else make_divisible(channels / reduction, divisor)
    if hidden < 1:
        raise ValueError(
            f"SE hidden size C/r = {channels}/{reduction} rounds to 0; "
            f"use a reduction ratio <= {channels} or set se_divisor (e.g. 8)"
        )
    return hidden


@dataclass(frozen=True)
class SEConfig:
    """How a model uses SE blocks. Field names map to ``create_model`` keywords by :data:`SE_KWARGS`.

    Args:
        reduction: the reduction ratio ``r`` (Table 10).
        bias: biases of the two excitation layers (the paper's ablations drop them; the
            released models keep them).
        squeeze: ``"avg"`` (eq. 2), ``"max"`` (Table 11) or ``"none"`` (NoSqueeze, Table 16:
            the two FC layers become 1x1 convolutions applied at every position).
        gate: ``"sigmoid"``, ``"tanh"`` or ``"relu"`` (Table 12).
        placement: where a residual block puts the SE block (Tables 14, 15):
            ``"standard"`` on the residual branch before the sum; ``"pre"`` on the branch's
            input; ``"post"`` after the sum and its ReLU; ``"identity"`` on the identity
            path, in parallel with the branch; ``"conv3x3"`` inside the branch right after
            the 3x3 convolution (and its BN and ReLU).
        stages: the stages that get SE (Table 13), numbered as in the paper (the stem is
            stage 1, ``conv2_x`` at 56x56 is stage 2 ...). ``None`` means every stage.
        divisor: round the hidden width to a multiple of this (see :func:`hidden_channels`).
    """

    reduction: float = 16
    bias: bool = True
    squeeze: str = "avg"
    gate: str = "sigmoid"
    placement: str = "standard"
    stages: tuple[int, ...] | None = None
    divisor: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, (int, float)):
            raise ValueError(f"reduction ratio r must be a positive number, got {self.reduction!r}")
        if not self.reduction > 0:
            raise ValueError(f"reduction ratio r must be > 0, got {self.reduction!r}")
        _choice("squeeze", self.squeeze, SQUEEZES)
        _choice("gate", self.gate, GATES)
        _choice("placement", self.placement, PLACEMENTS)
        if self.stages is not None:
            try:
                stages = tuple(int(s) for s in self.stages)
            except (TypeError, ValueError):
                raise ValueError(f"se_stages must be a sequence of stage numbers, got {self.stages!r}") from None
            object.__setattr__(self, "stages", stages)
        if self.divisor is not None and (isinstance(self.divisor, bool) or not isinstance(self.divisor, int)
                                         or self.divisor < 1):
            raise ValueError(f"se_divisor must be a positive integer or None, got {self.divisor!r}")

    @classmethod
    def from_kwargs(cls, se_kwargs: dict[str, Any], base: "SEConfig | None" = None) -> "SEConfig":
        """Build a config from ``create_model`` keywords, on top of ``base`` (default: the paper's)."""
        unknown = set(se_kwargs) - set(SE_KWARGS)
        if unknown:
            raise ValueError(f"unknown SE options {sorted(unknown)}; allowed: {sorted(SE_KWARGS)}")
        return replace(base or cls(), **{SE_KWARGS[k]: v for k, v in se_kwargs.items()})

    def to_kwargs(self) -> dict[str, Any]:
        """The inverse of :meth:`from_kwargs`: ``create_model`` keywords for this config."""
        inverse = {v: k for k, v in SE_KWARGS.items()}
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[inverse[f.name]] = list(value) if isinstance(value, tuple) else value
        return out

    def check_stages(self, available: Iterable[int]) -> None:
        """Raise ``ValueError`` if :attr:`stages` names a stage the model does not have."""
        available = tuple(available)
        if self.stages is None:
            return
        bad = [s for s in self.stages if s not in available]
        if bad:
            raise ValueError(
                f"se_stages {list(self.stages)} names stage(s) {bad} that do not exist; "
                f"this model's stages are {list(available)} (stage 1 is the stem)"
            )

    def in_stage(self, stage: int) -> bool:
        return self.stages is None or stage in self.stages

    def make(self, channels: int) -> "SqueezeExcite":
        return SqueezeExcite(
            channels, self.reduction, bias=self.bias, squeeze=self.squeeze, gate=self.gate, divisor=self.divisor
        )


class AvgSqueeze(nn.Module):
    """Eq. 2 as a sum over the positions and one division of the pooled ``(N, C, 1, 1)`` tensor:
    the values of ``AdaptiveAvgPool2d(1)``, but the sum's backward is a broadcast view where the
    mean's allocates and writes a full-size gradient. Measured (interleaved A/B in one process,
    medians of paired ratios, 2-core CPU, 1 thread, 2026-12-07): with ``AdaptiveAvgPool2d(1)``
    instead, a ``cifar_se_resnet20`` training step (batch 128, channels_last) takes 1.049x the
    time (96% CI 1.040-1.052, 25 rounds); se_resnet50 inference is unchanged (0.997x at batch 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum((2, 3), keepdim=True) / (x.shape[-2] * x.shape[-1])


class Scale(nn.Module):
    """Eq. 4: ``u * s``, the excitation ``s`` broadcast over the positions of ``u``; with
    ``residual`` (how residual units call it), ``residual + u * s``.

    The residual is added in place into the product: one full-size temporary less per block.
    Measured against ``se(u) + residual`` (same A/B as :class:`AvgSqueeze`): without it a
    ``cifar_se_resnet20`` training step takes 1.019x the time (96% CI 1.010-1.032) and
    se_resnet50 inference at batch 16 1.050x (1.000-1.053; batch 1: 0.993x, no difference).
    ``addcmul`` instead (one pass at inference, a costlier backward) measured 0.983x at batch 1
    (0.969-1.002), 0.991x at batch 16 and 1.006x (1.000-1.015) per training step: not worth a
    train/eval branch. A module, so that a forward hook sees ``(u, s)`` and the scaled output,
    and so that it can be swapped (e.g. for a quantized multiply)."""

    def forward(self, u: torch.Tensor, s: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = u * s
        if residual is not None:
            out = out.add_(residual)  # the product is not saved for backward: in place is safe
        return out


_SQUEEZE_MODULES = {"avg": AvgSqueeze, "max": lambda: nn.AdaptiveMaxPool2d(1), "none": nn.Identity}
_GATE_MODULES = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


class SqueezeExcite(nn.Module):
    """One SE block over ``channels`` channels (eqs. 2-4), laid out as torchvision's
    ``SqueezeExcitation``: ``pool -> fc1 -> act -> fc2 -> gate -> scale``, each a submodule
    called as a module.

    ``pool`` is the squeeze (average, max, or ``Identity`` for NoSqueeze); ``fc1`` / ``fc2``
    are ``nn.Conv2d`` 1x1 layers of shapes ``[C/r, C, 1, 1]`` and ``[C, C/r, 1, 1]`` (the
    layout of the released models and of timm), applied to the pooled ``(N, C, 1, 1)`` tensor,
    or at every position for NoSqueeze; ``gate`` makes the excitation ``s`` (a forward hook on
    it sees ``s``, paper section 7); ``scale`` applies it (:class:`Scale`). Forward hooks, FLOP
    counters, module swaps, structural pruning, fx, ONNX and TorchScript all see plain modules.
    The keywords are :class:`SEConfig`'s, checked by it.

    ``forward(u)`` returns ``u * s``; ``forward(u, residual)`` returns ``residual + u * s``
    (how residual units call it, see :class:`Scale`).
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        *,
        bias: bool = True,
        squeeze: str = "avg",
        gate: str = "sigmoid",
        divisor: int | None = None,
    ) -> None:
        super().__init__()
        SEConfig(reduction=reduction, bias=bias, squeeze=squeeze, gate=gate, divisor=divisor)  # checks them
        self.channels = channels
        self.hidden = hidden_channels(channels, reduction, divisor)
        self.squeeze = squeeze
        self.pool = _SQUEEZE_MODULES[squeeze]()
        self.fc1 = nn.Conv2d(channels, self.hidden, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(self.hidden, channels, 1, bias=bias)
        self.gate = _GATE_MODULES[gate]()
        self.scale = Scale()

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation ``s`` for input ``x``: shape ``(N, C, 1, 1)``, or ``(N, C, H, W)`` for NoSqueeze."""
        return self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.scale(x, self.excite(x), residual)

    def flops(self, input_shape: torch.Size) -> int:
        """Multiply-adds of one call for one image: squeeze, both FC layers and the scaling."""
        c, h, w = input_shape[-3:]
        fc = 2 * self.channels * self.hidden
        if self.squeeze == "none":
            return fc * h * w + c * h * w
        return c * h * w + fc + c * h * w

    def extra_repr(self) -> str:
        return f"{self.channels}->{self.hidden}->{self.channels}, squeeze={self.squeeze}"

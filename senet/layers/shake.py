"""Shake-Shake regularization (Gastaldi 2017, arXiv:1705.07485; spec section 7b).

A Shake-Shake residual unit has two parallel residual branches ``F1``, ``F2`` and an
identity path. In the paper's terms the branches are combined with a stochastic affine
combination:

* forward pass, training: ``x_{i+1} = x_i + a * F1(x_i) + (1 - a) * F2(x_i)`` with
  ``a ~ U(0, 1)`` ("Shake") or ``a = 0.5`` ("Even");
* backward pass, training: the gradient reaching ``F1`` is scaled by ``b`` and the one
  reaching ``F2`` by ``1 - b``, with ``b ~ U(0, 1)`` drawn independently of ``a``
  ("Shake"), ``b = 0.5`` ("Even") or ``b = a`` ("Keep", i.e. ordinary back-propagation);
* "Image" level draws one coefficient per image of the mini-batch, "Batch" level one for
  the whole mini-batch;
* test time: ``a = 0.5`` (the expectation of ``a``).

The paper's best CIFAR-10 model is Shake-Shake-Image (forward Shake, backward Shake, level
Image); its best CIFAR-100 model is Shake-Even-Image (forward Shake, backward Even).

Randomness comes from torch's global generator of the tensors' device, so a trainer that
saves and restores the RNG states reproduces a run exactly. In training mode
:func:`shake_shake` draws, in this order, ``a`` (only if ``forward="shake"``) then ``b``
(only if ``backward="shake"``), each as ``torch.rand(n, dtype=float32, device=x1.device)``
with ``n`` the batch size ("image") or 1 ("batch"). Both are drawn in the forward pass,
whether or not a backward pass follows, so the number of draws never depends on autograd.
"""

from __future__ import annotations

from typing import Any

import torch

SHAKE_FORWARD = ("shake", "even")
SHAKE_BACKWARD = ("shake", "even", "keep")
SHAKE_LEVELS = ("image", "batch")


def check_shake_options(forward: str, backward: str, level: str) -> None:
    """Raise ``ValueError`` naming the bad option and the allowed values."""
    for name, value, allowed in (
        ("shake_forward", forward, SHAKE_FORWARD),
        ("shake_backward", backward, SHAKE_BACKWARD),
        ("shake_level", level, SHAKE_LEVELS),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")


class ShakeShakeFunction(torch.autograd.Function):
    """``a * x1 + (1 - a) * x2`` forward; gradients ``b * g`` and ``(1 - b) * g`` backward.

    ``a`` and ``b`` are tensors broadcastable to ``x1`` (shape ``(N, 1, 1, 1)`` or
    ``(1, 1, 1, 1)``) and are treated as constants (no gradient).
    """

    @staticmethod
    def forward(ctx: Any, x1: torch.Tensor, x2: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(b)
        a = a.to(x1.dtype)
        return x2 + a * (x1 - x2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (b,) = ctx.saved_tensors
        b = b.to(grad.dtype)
        g1 = grad * b if ctx.needs_input_grad[0] else None
        g2 = grad * (1 - b) if ctx.needs_input_grad[1] else None
        return g1, g2, None, None


def _coefficient(mode: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    if mode == "shake":
        return torch.rand(shape[0], dtype=torch.float32, device=device).view(shape)
    return torch.full(shape, 0.5, dtype=torch.float32, device=device)


def shake_shake(
    x1: torch.Tensor,
    x2: torch.Tensor,
    forward: str = "shake",
    backward: str = "shake",
    level: str = "image",
    training: bool = True,
) -> torch.Tensor:
    """Combine two branch outputs with Shake-Shake (see the module docstring).

    Args:
        x1, x2: outputs of the two residual branches, same shape ``(N, ...)``.
        forward: ``"shake"`` (``a ~ U(0, 1)``) or ``"even"`` (``a = 0.5``).
        backward: ``"shake"`` (``b ~ U(0, 1)``, independent of ``a``), ``"even"``
            (``b = 0.5``) or ``"keep"`` (``b = a``).
        level: ``"image"`` (one coefficient per image) or ``"batch"`` (one per call).
        training: if false, returns ``0.5 * (x1 + x2)`` and draws nothing.
    """
    check_shake_options(forward, backward, level)
    if x1.shape != x2.shape:
        raise ValueError(f"shake_shake needs branch outputs of one shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if not training:
        return 0.5 * (x1 + x2)
    n = x1.shape[0] if level == "image" else 1
    shape = (n,) + (1,) * (x1.dim() - 1)
    a = _coefficient(forward, shape, x1.device)
    b = a if backward == "keep" else _coefficient(backward, shape, x1.device)
    return ShakeShakeFunction.apply(x1, x2, a, b)

"""Low-precision inference checked against fp32: the agreement report and bf16 autocast.

* **bf16** (``senet predict`` / ``senet eval --precision bf16``): ``torch.autocast`` on CPUs with
  bf16 units (AVX512_BF16 or AMX on x86, the BF16 extension on Arm) and on CUDA GPUs that have
  them; elsewhere PyTorch would emulate bf16, slower than fp32, so it is refused
  (:func:`check_precision`).
* :class:`Agreement` is the one report of every low-precision path (bf16 here, int8 ONNX files
  in :mod:`senet.int8`): top-1 agreement with fp32 and the mean absolute difference of the
  softmax probabilities.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from senet.errors import SenetError

PRECISIONS = ("fp32", "bf16")

# ----------------------------------------------------------------------------------------------
# agreement with fp32


@dataclass(frozen=True)
class Agreement:
    """How closely a low-precision model follows fp32 on ``images`` inputs."""

    images: int
    top1: float  # fraction of the inputs whose most probable class is fp32's
    mean_abs_prob_diff: float  # mean over inputs and classes of |p_low - p_fp32| (softmax)
    max_abs_prob_diff: float

    def describe(self) -> str:
        return (f"top-1 agrees with fp32 on {self.top1:.2%} of {self.images} images, mean |probability "
                f"difference| {self.mean_abs_prob_diff:.2e} (largest {self.max_abs_prob_diff:.3g})")

    def to_json(self) -> dict[str, float | int]:
        return {"images": self.images, "top1": self.top1, "mean_abs_prob_diff": self.mean_abs_prob_diff,
                "max_abs_prob_diff": self.max_abs_prob_diff}


class AgreementMeter:
    """Accumulates :class:`Agreement` over batches of fp32 and low-precision logits."""

    def __init__(self) -> None:
        self.images = 0
        self.agree = 0
        self.abs_sum = 0.0
        self.values = 0
        self.abs_max = 0.0

    def update(self, reference: torch.Tensor, logits: torch.Tensor) -> None:
        ref, out = reference.detach().float().cpu(), logits.detach().float().cpu()
        if ref.shape != out.shape:
            raise SenetError(f"the low-precision model returns outputs of shape {tuple(out.shape)}, "
                             f"fp32 {tuple(ref.shape)}")
        diff = (out.softmax(-1) - ref.softmax(-1)).abs()
        self.images += ref.shape[0]
        self.agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
        self.abs_sum += float(diff.double().sum())
        self.values += diff.numel()
        self.abs_max = max(self.abs_max, float(diff.max())) if diff.numel() else self.abs_max

    def result(self) -> Agreement:
        if not self.images:
            raise ValueError("no images were compared")
        return Agreement(self.images, self.agree / self.images, self.abs_sum / self.values, self.abs_max)


# ----------------------------------------------------------------------------------------------
# bf16


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_units(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes in bf16 natively: x86 CPUs with AVX512_BF16 or AMX, Arm CPUs
    with the BF16 extension, CUDA GPUs that support it (Ampere and later)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if getattr(cpu, probe, lambda: False)():
            return True
    flags = _cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"}) or (platform.machine().lower() in ("aarch64", "arm64")
                                                          and "bf16" in flags)


def check_precision(precision: str, device: torch.device | str) -> None:
    """Refuse a precision ``device`` cannot run fast: bf16 without bf16 units (PyTorch would
    emulate it, slower than fp32), an unknown name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "bf16" and not bf16_units(device):
        what = ("this CPU has no bf16 units (AVX512_BF16 or AMX on x86, the BF16 extension on Arm)"
                if device.type == "cpu" else f"{device} has no bf16 units")
        raise SenetError(f"--precision bf16: {what}; PyTorch would emulate bf16, slower than fp32: "
                         "use --precision fp32")


def at_precision(model: nn.Module, precision: str, device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s logits at ``precision`` (autocast; checked by :func:`check_precision`), as fp32."""
    from senet.train.evaluate import autocast_for

    device = torch.device(device)
    check_precision(precision, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast_for(device, precision):
            return model(x).float()

    return run


@dataclass(frozen=True)
class Scored:
    """Errors (``loss``, ``top1_err``, ``top5_err``, fractions) of one way of running a model and
    its agreement with fp32 on the same inputs (``None`` for fp32 itself)."""

    errors: dict[str, float]
    agreement: Agreement | None


def score_against_fp32(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                       others: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, Scored]:
    """Score ``model`` in fp32 and each of ``others`` (name -> logits of an input batch: bf16
    autocast, an int8 file, ...) on the same ``(input, label)`` batches, in one pass: the errors
    of each, and the :class:`Agreement` of each with fp32. The result has ``"fp32"`` first."""
    from senet.train.evaluate import batch_sums, errors_from_sums

    was_training = model.training
    model.eval()
    sums = {name: torch.zeros(4, dtype=torch.float64) for name in ("fp32", *others)}
    meters = {name: AgreementMeter() for name in others}
    try:
        for x, y in batches:
            with torch.inference_mode():
                ref = model(x).float()
            sums["fp32"] += batch_sums(ref, y).cpu()
            for name, run in others.items():
                logits = run(x).float().to(ref.device)
                sums[name] += batch_sums(logits, y).cpu()
                meters[name].update(ref, logits)
    finally:
        model.train(was_training)
    return {name: Scored(errors_from_sums(total), meters[name].result() if name in meters else None)
            for name, total in sums.items()}

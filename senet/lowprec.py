"""Low-precision inference, each path checked against fp32: int8 ONNX files and bf16 autocast.

* **int8** (:func:`export_int8`, reached through ``senet.export.export_model(..., int8=Int8(...))``
  and ``senet export --int8``): the model is exported to fp32 ONNX (verified as every export),
  then quantized statically by onnxruntime's quantization tools: QDQ format, int8 weights per
  output channel, uint8 activations whose ranges are measured on calibration images. The SE
  block (paper eq. 2-4) is quantized whole: the squeeze becomes a ``GlobalAveragePool`` (an int8
  kernel in onnxruntime, where the ``ReduceSum``/``ReduceMean`` it is exported as runs in fp32
  on a dequantized copy of the block's input), the excitation's 1x1 convolutions run in int8,
  the sigmoid by onnxruntime's int8 lookup table and the channel-wise scaling and residual sum
  as int8 ``Mul`` / ``Add``. The file is then run on held-out images, disjoint from the
  calibration images, next to the fp32 model in PyTorch; it is refused (nothing written) when
  their top-1 classes agree on fewer than ``min_agreement`` of the images.
* **bf16** (``senet predict`` / ``senet eval --precision bf16``): ``torch.autocast`` on CPUs with
  bf16 units (AVX512_BF16 or AMX on x86, the BF16 extension on Arm) and on CUDA GPUs that have
  them; elsewhere PyTorch would emulate bf16, slower than fp32, so it is refused
  (:func:`check_precision`).

:class:`Agreement` is the one report of both: top-1 agreement with fp32 and the mean absolute
difference of the softmax probabilities.

Images for calibration and the agreement check go through the model's own evaluation transform
(:mod:`senet.data.transforms`): :meth:`Int8.from_dataset`, :meth:`Int8.from_folder`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import random
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.errors import SenetError
from senet.utils.limits import check_work_size

PRECISIONS = ("fp32", "bf16")
#: the smallest top-1 agreement with fp32 an int8 file must reach (``senet export --min-agreement``)
MIN_AGREEMENT = 0.99
#: default numbers of calibration and held-out images (``senet export --calibration / --held-out``)
CALIBRATION_IMAGES = 256
HELD_OUT_IMAGES = 512
#: where an int8 file computes the SE gate and scaling (:attr:`Int8.se_gate`)
SE_GATES = ("int8", "float")
_SEED = 0


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


# ----------------------------------------------------------------------------------------------
# int8 ONNX


@dataclass(frozen=True)
class Int8:
    """What an int8 export needs: model inputs (normalised float ``[N, C, H, W]``, as the model
    takes them) to calibrate the activation ranges on, other inputs to check the file on, and
    how well it must agree with fp32 there.

    Args:
        calibration: inputs whose activation ranges set the int8 scales.
        held_out: inputs, none of them a calibration input, on which the int8 file and the fp32
            model are compared (:class:`Agreement`).
        min_agreement: the smallest top-1 agreement accepted (a fraction).
        batch_size: images per onnxruntime call (for files with a free batch size).
        se_gate: ``"int8"`` (the default) quantizes the SE gate (sigmoid) and the channel-wise
            scaling with the rest; ``"float"`` keeps those two operations in fp32 (their inputs
            dequantized, their output quantized again). Measured in
            ``benchmarks/lowprec.py`` (docs/results/lowprec.md).
    """

    calibration: torch.Tensor
    held_out: torch.Tensor
    min_agreement: float = MIN_AGREEMENT
    batch_size: int = 32
    se_gate: str = "int8"

    def __post_init__(self) -> None:
        for name in ("calibration", "held_out"):
            x = getattr(self, name)
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point() or len(x) == 0:
                raise ValueError(f"Int8.{name} must be a non-empty float tensor [N, C, H, W] of model inputs")
        if self.calibration.shape[1:] != self.held_out.shape[1:]:
            raise ValueError(f"calibration inputs of {tuple(self.calibration.shape[1:])} but held-out inputs of "
                             f"{tuple(self.held_out.shape[1:])}: they must have one size")
        m = self.min_agreement
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1:
            raise ValueError(f"min_agreement must be a fraction in [0, 1], got {m!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.se_gate not in SE_GATES:
            raise ValueError(f"se_gate must be one of {', '.join(SE_GATES)}, got {self.se_gate!r}")

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.calibration.shape[1:])  # type: ignore[return-value]

    @classmethod
    def from_dataset(cls, model: nn.Module, dataset: str, *, data: str | os.PathLike[str] | None = None,
                     calibration: int = CALIBRATION_IMAGES, held_out: int = HELD_OUT_IMAGES,
                     input_size: int | None = None, held_out_split: str = "test", **options: Any) -> Int8:
        """Calibration images from the ``train`` split of ``dataset`` (as ``senet.data.load_split``
        takes it: ``cifar10``, ``cifar100``, an ImageFolder tree or archive), held-out images from
        ``held_out_split``: disjoint by construction. Each is a fixed random subset (seed 0),
        prepared by the model's evaluation transform (at ``input_size``, default the model's)."""
        from senet.data import load_split
        from senet.data.transforms import batch_transform, resolve_data_config

        cfg = resolve_data_config(model, input_size=input_size)

        def inputs(split: str, n: int) -> torch.Tensor:
            ds = load_split(dataset, split, data=data)
            _check_count(n, f"{split} images", len(ds.labels), f"the {split} split of {ds.source}")
            idx = torch.randperm(len(ds.labels), generator=torch.Generator().manual_seed(_SEED))[:n].sort().values
            check_work_size(f"{n} images at {cfg.crop}x{cfg.crop}", (n, *cfg.input_size))
            transform = batch_transform(cfg, tuple(ds.images.shape[-2:]))
            return torch.cat([transform(ds.images[idx[i:i + 64]]) for i in range(0, n, 64)])

        return cls(inputs("train", calibration), inputs(held_out_split, held_out), **options)

    @classmethod
    def from_folder(cls, model: nn.Module, folder: str | os.PathLike[str], *,
                    calibration: int = CALIBRATION_IMAGES, held_out: int = HELD_OUT_IMAGES,
                    input_size: int | None = None, **options: Any) -> Int8:
        """The image files under ``folder`` (recursively), shuffled with a fixed seed: the first
        ``calibration`` calibrate, the next ``held_out`` check; the folder must hold both."""
        from senet.data.decode import decode_image
        from senet.data.transforms import eval_crops, normalize, resolve_data_config
        from senet.errors import DataError
        from senet.predict import find_images

        if not Path(folder).is_dir():
            raise DataError(f"{folder}: no such folder")
        cfg = resolve_data_config(model, input_size=input_size)
        files = find_images([folder])
        _check_count(calibration + held_out, "calibration and held-out images", len(files), f"{folder}")
        random.Random(_SEED).shuffle(files)
        check_work_size(f"{calibration + held_out} images at {cfg.crop}x{cfg.crop}",
                        (calibration + held_out, *cfg.input_size))

        def inputs(paths: Sequence[Path]) -> torch.Tensor:
            views = []
            for path in paths:
                try:
                    views.append(eval_crops(decode_image(path), cfg))
                except Exception as e:  # noqa: BLE001 (PIL raises many types for a bad file)
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise DataError(f"{path}: not a readable image ({reason})") from None
            return normalize(torch.cat(views), cfg)

        return cls(inputs(files[:calibration]), inputs(files[calibration:calibration + held_out]), **options)


def _check_count(n: int, what: str, available: int, where: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of {what} must be an integer >= 1, got {n!r}")
    if n > available:
        raise SenetError(f"{n} {what} asked for, but {where} holds {available}")


class _MeanSqueeze(nn.Module):
    """The average-pool squeeze as a mean, exported as ``ReduceMean`` over H and W, which
    :func:`_global_pools` turns into ``GlobalAveragePool``: onnxruntime has an int8 kernel for
    that, none for ``ReduceSum`` / ``ReduceMean``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def _int8_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` computing the same function, its SE squeezes (``AvgSqueeze``) as means."""
    from senet.layers.se import AvgSqueeze

    ready = copy.deepcopy(model)
    for parent in list(ready.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, AvgSqueeze):
                setattr(parent, name, _MeanSqueeze())
    return ready


def _global_pools(graph: Any) -> int:
    """Rewrite, in an ONNX ``GraphProto`` with shapes inferred, each ``ReduceMean`` over the two
    spatial axes of a 4-D tensor that keeps its dimensions into a ``GlobalAveragePool`` (the same
    values). Returns how many."""
    from onnx import helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input, *graph.output]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    count = 0
    for i, node in enumerate(graph.node):
        if node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("keepdims", 1) != 1:
            continue
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in consts:
            axes = consts[node.input[1]].tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        graph.node[i].CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                name=node.name or f"global_pool_{i}"))
        count += 1
    return count


def _se_gate_nodes(graph: Any) -> list[str]:
    """Names of the SE gates (``Sigmoid``) of an ONNX graph and of the ``Mul`` nodes that scale a
    tensor by one of them (eq. 4), naming unnamed nodes on the way."""
    gates = set()
    names = []
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type.lower()}_{i}"
        if node.op_type == "Sigmoid":
            gates.add(node.output[0])
            names.append(node.name)
        elif node.op_type == "Mul" and gates.intersection(node.input):
            names.append(node.name)
    return names


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` protocol over batches of a tensor."""

    def __init__(self, name: str, inputs: torch.Tensor, batch: int) -> None:
        self.batches = iter([inputs[i:i + batch].numpy() for i in range(0, len(inputs), batch)])
        self.name = name

    def get_next(self) -> dict[str, Any] | None:
        x = next(self.batches, None)
        return None if x is None else {self.name: x}



def onnx_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, default onnxruntime's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SenetError("running an ONNX file needs onnxruntime (pip install 'senet[onnx]')") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_batch(session: Any, wanted: int) -> int:
    """The batch size to feed ``session``: its input's, where fixed, else ``wanted``."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else wanted


def run_session(session: Any, inputs: torch.Tensor, batch: int) -> torch.Tensor:
    """``session``'s outputs for ``inputs``, ``batch`` at a time (a last short batch of a file with a
    fixed batch size is padded and cut)."""
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    outs = []
    for i in range(0, len(inputs), batch):
        x = inputs[i:i + batch]
        n = len(x)
        if isinstance(fixed, int) and n < fixed:
            x = torch.cat([x, x.new_zeros(fixed - n, *x.shape[1:])])
        outs.append(torch.from_numpy(session.run(None, {name: x.float().contiguous().numpy()})[0][:n]))
    return torch.cat(outs)


def _quantize(fp32: Path, out: Path, work: Path, int8: Int8) -> None:
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise SenetError("an int8 export needs onnx and onnxruntime (pip install 'senet[onnx]')") from None
    from senet.export import _quiet

    pre = work / "pre.onnx"
    with _quiet():
        # shape inference and onnxruntime's graph clean-up (constant folding, BN into the convolutions)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    _global_pools(model.graph)
    keep_float = _se_gate_nodes(model.graph) if int8.se_gate == "float" else []
    onnx.save(model, str(pre))
    session = onnx_session(pre)
    name = session.get_inputs()[0].name
    batch = session_batch(session, int8.batch_size)
    del session
    calibration = int8.calibration
    if len(calibration) % batch:  # a file with a fixed batch size: whole batches only
        calibration = calibration[: len(calibration) // batch * batch] if len(calibration) >= batch else \
            calibration.repeat(math.ceil(batch / len(calibration)), 1, 1, 1)[:batch]
    with _quiet() as log:
        try:
            quantize_static(str(pre), str(out), _Reader(name, calibration, batch), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
        except Exception as e:  # noqa: BLE001 (onnxruntime's quantizer raises many types)
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SenetError(f"int8 quantization failed: {detail[:300]}") from None
    del log


def export_int8(model: nn.Module, path: Path, int8: Int8, *, dynamic_batch: bool, dynamic_size: bool,
                opset: int | None, optimize: bool | None, tolerance: float) -> Any:
    """The int8 stage of ``senet.export.export_model`` (which checks the options and calls this):
    writes ``path`` atomically, or nothing when the file is refused; returns its
    :class:`~senet.export.Exported` (the logit differences and :class:`Agreement` measured on the
    held-out inputs)."""
    import onnx

    from senet.export import Exported, export_model, preprocessing
    from senet.utils.atomic import atomic_path

    model.eval()
    with tempfile.TemporaryDirectory(prefix="senet-int8-") as tmp:
        work = Path(tmp)
        # the fp32 file, verified against PyTorch as every export
        float_export = export_model(_int8_ready(model), work / "fp32.onnx", format="onnx",
                                    input_size=int8.input_size, dynamic_batch=dynamic_batch,
                                    dynamic_size=dynamic_size, opset=opset, optimize=optimize, tolerance=tolerance)
        quantized = work / "int8.onnx"
        _quantize(float_export.path, quantized, work, int8)
        session = onnx_session(quantized)
        batch = session_batch(session, int8.batch_size)
        with torch.no_grad():
            ref = torch.cat([model(int8.held_out[i:i + batch]).float() for i in range(0, len(int8.held_out), batch)])
        out = run_session(session, int8.held_out, batch)
        meter = AgreementMeter()
        meter.update(ref, out)
        agreement = meter.result()
        if agreement.top1 < int8.min_agreement:
            raise SenetError(f"the int8 file is refused: its top-1 class agrees with fp32 on {agreement.top1:.2%} of "
                             f"{agreement.images} held-out images, below the {int8.min_agreement:.2%} required "
                             f"(mean |probability difference| {agreement.mean_abs_prob_diff:.2e}); nothing was written")
        shapes = [(len(int8.held_out), *int8.input_size)]
        for shape in float_export.shapes[1:]:  # a dynamic file also runs at its other checked shape
            got = run_session(session, torch.randn(shape, generator=torch.Generator().manual_seed(0)), shape[0])
            if tuple(got.shape) != (shape[0], ref.shape[1]) or not torch.isfinite(got).all():
                raise SenetError(f"the int8 file does not run at {'x'.join(map(str, shape))}; nothing was written")
            shapes.append(shape)
        del session
        meta = {**preprocessing(model), "precision": json.dumps("int8"),
                "int8_agreement": json.dumps(agreement.to_json()),
                "int8_calibration_images": json.dumps(len(int8.calibration)), "int8_se_gate": json.dumps(int8.se_gate)}
        written = onnx.load(str(quantized))
        del written.metadata_props[:]
        for key, value in meta.items():
            written.metadata_props.add(key=key, value=value)
        with atomic_path(path) as final:
            onnx.save(written, str(final))
    abs_diff, scale = float((out - ref).abs().max()), float(ref.abs().max())
    return Exported(path, "onnx", abs_diff, abs_diff / scale if scale > 0 else abs_diff, shapes, meta,
                    precision="int8", agreement=agreement)

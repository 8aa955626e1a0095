"""int8 ONNX files, checked against fp32 (``senet export --int8``,
``senet.export.export_model(..., int8=Int8(...))``).

``export_model`` writes the model as fp32 ONNX, verified as every export, after
:func:`int8_ready` has made its SE squeezes means; :func:`quantize_checked` then quantizes that
file statically with onnxruntime's quantization tools: QDQ format, int8 weights per output
channel, uint8 activations whose ranges are the 99.999th percentile of their magnitudes on
calibration images (onnxruntime's ``Percentile`` calibration: on the trained ``cifar_se_resnet20``
of docs/results/lowprec.md, 3,000 CIFAR-10 test images, it agrees with fp32 on 99.27% of them,
where ``MinMax`` agrees on 98.87% with 256 calibration images and 98.97% with 1,024). Where
onnxruntime finds no finite percentile (a tensor constant on every calibration image), the file
is calibrated by min/max instead and says so (``int8_calibration`` in its header). The SE
block (paper eqs. 2-4) is quantized whole by default: the squeeze becomes a ``GlobalAveragePool``
(onnxruntime has an int8 kernel for it; the ``ReduceSum`` / ``ReduceMean`` it is exported as
runs in fp32 on a dequantized copy of the block's input), the excitation's 1x1 convolutions run
in int8, the sigmoid by onnxruntime's int8 lookup table and the channel-wise scaling and
residual sum as int8 ``Mul`` / ``Add``; :attr:`Int8.se_gate` ``"float"`` keeps the gate and the
scaling in fp32 instead (measured against each other in ``benchmarks/lowprec.py``).

The file is then run on held-out images, disjoint from the calibration images, next to the fp32
model in PyTorch, and refused (nothing written) when their top-1 classes agree on fewer than
:attr:`Int8.min_agreement` of them (:class:`senet.lowprec.Agreement`, default
:data:`MIN_AGREEMENT`).

The model is used as it is (never rebuilt from its registry name), so pruned models, whose
widths differ from the registry's, quantize as any other. Images for calibration and the check
go through the model's own evaluation transform (:meth:`Int8.from_dataset`,
:meth:`Int8.from_folder`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.errors import SenetError
from senet.lowprec import Agreement, AgreementMeter
from senet.onnx_runtime import onnx_session, run_session, session_batch
from senet.utils.limits import check_work_size
from senet.utils.quiet import quiet

#: the smallest top-1 agreement with fp32 an int8 file must reach (``senet export --min-agreement``)
MIN_AGREEMENT = 0.99
#: default numbers of calibration and held-out images (``senet export --calibration / --held-out``)
CALIBRATION_IMAGES = 256
HELD_OUT_IMAGES = 512
#: where an int8 file computes the SE gate and scaling (:attr:`Int8.se_gate`)
SE_GATES = ("int8", "float")
_SEED = 0


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


def int8_ready(model: nn.Module) -> nn.Module:
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



def _quantize(fp32: Path, out: Path, work: Path, int8: Int8) -> str:
    """Quantize ``fp32`` into ``out``; returns the calibration method used (module docstring)."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise SenetError("an int8 export needs onnx and onnxruntime (pip install 'senet[onnx]')") from None

    pre = work / "pre.onnx"
    with quiet():
        # shape inference and onnxruntime's graph clean-up (constant folding, BN into the convolutions)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    _global_pools(model.graph)
    keep_float = _se_gate_nodes(model.graph) if int8.se_gate == "float" else []
    onnx.save(model, str(pre))
    first = model.graph.input[0]  # its batch size where the file fixes one, else ours
    name, dim = first.name, first.type.tensor_type.shape.dim[0].dim_value
    batch = dim if dim > 0 else int8.batch_size
    calibration = int8.calibration
    if len(calibration) % batch:  # a file with a fixed batch size: whole batches only
        calibration = calibration[: len(calibration) // batch * batch] if len(calibration) >= batch else \
            calibration.repeat(math.ceil(batch / len(calibration)), 1, 1, 1)[:batch]
    methods = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax}
    for method, calibrate in methods.items():
        with quiet():
            try:
                quantize_static(str(pre), str(out), _Reader(name, calibration, batch), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calibrate, nodes_to_exclude=keep_float)
                return method
            except Exception as e:  # noqa: BLE001 (onnxruntime's quantizer raises many types)
                detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if method == "percentile" and "not finite" in detail:
                    # a tensor whose histogram has no width (constant on every calibration image):
                    # no percentile; its min/max range is exact. Recorded in the file (int8_calibration)
                    continue
                raise SenetError(f"int8 quantization failed: {detail[:300]}") from None
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Quantized:
    """What :func:`quantize_checked` wrote: the file's header, its agreement with fp32 and largest
    logit difference on the held-out inputs, and the input shapes it was run at."""

    metadata: dict[str, str]
    agreement: Agreement
    max_abs_diff: float
    max_rel_diff: float
    shapes: list[tuple[int, ...]]


def quantize_checked(model: nn.Module, fp32: Path, checked_shapes: Sequence[tuple[int, ...]], path: Path,
                     int8: Int8) -> Quantized:
    """Quantize the verified fp32 ONNX file ``fp32`` of ``model`` (module docstring) and write it
    to ``path`` atomically, with ``model``'s header and the int8 figures, if it agrees with
    ``model`` on ``int8.held_out``; else raise, writing nothing. ``checked_shapes`` are those the
    fp32 file was verified at: the int8 file must run at the others too (dynamic files)."""
    import onnx

    from senet.models._pretrained import file_header
    from senet.utils.atomic import atomic_path

    with tempfile.TemporaryDirectory(prefix="senet-int8-") as tmp:
        quantized = Path(tmp) / "int8.onnx"
        method = _quantize(fp32, quantized, Path(tmp), int8)
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
        for shape in checked_shapes[1:]:  # a dynamic file also runs at its other checked shape
            got = run_session(session, torch.randn(shape, generator=torch.Generator().manual_seed(0)), shape[0])
            if tuple(got.shape) != (shape[0], ref.shape[1]) or not torch.isfinite(got).all():
                raise SenetError(f"the int8 file does not run at {'x'.join(map(str, shape))}; nothing was written")
            shapes.append(tuple(shape))
        del session
        meta = file_header(model, extra={"precision": "int8", "int8_agreement": json.dumps(agreement.to_json()),
                                         "int8_calibration_images": str(len(int8.calibration)),
                                         "int8_se_gate": int8.se_gate, "int8_calibration": method})
        written = onnx.load(str(quantized))
        del written.metadata_props[:]
        for key, value in meta.items():
            written.metadata_props.add(key=key, value=value)
        with atomic_path(path) as final:
            onnx.save(written, str(final))
    abs_diff, scale = float((out - ref).abs().max()), float(ref.abs().max())
    return Quantized(meta, agreement, abs_diff, abs_diff / scale if scale > 0 else abs_diff, shapes)

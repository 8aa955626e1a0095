"""Shipping a model: ONNX (the dynamo exporter, built on ``torch.export``) or TorchScript, verified.

:func:`export_model` writes the file through a temporary one, runs what it wrote (onnxruntime for
ONNX, ``torch.jit.load`` for TorchScript) on random inputs, compares with PyTorch, and renames the
file into place only if the largest difference is within ``tolerance`` (1e-4 of the largest
logit by default): a file that would compute something else is never left behind. The model's
name, keywords and preprocessing (input size, mean, std, ``crop_pct``, interpolation, class
names) go into the file (ONNX ``metadata_props``; TorchScript ``_extra_files["senet.json"]``):
the header of senet's weight files (:mod:`senet.weights.metadata`), which
:func:`senet.read_metadata` reads back.

With ``int8=`` (:class:`senet.int8.Int8`) the ONNX file is quantized to int8 after that check
and kept only if its top-1 class agrees with fp32 on held-out images (:mod:`senet.int8`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from senet.errors import SenetError
from senet.models._pretrained import file_header
from senet.utils.atomic import atomic_path
from senet.utils.limits import check_input_size, check_work_size
from senet.utils.quiet import quiet
from senet.weights.io import EXPORT_EXTRA_FILE

if TYPE_CHECKING:
    from senet.int8 import Int8
    from senet.lowprec import Agreement

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


@dataclass(frozen=True)
class Exported:
    """What :func:`export_model` wrote and how closely it matches PyTorch."""

    path: Path
    format: str
    max_abs_diff: float
    max_rel_diff: float  # max |diff| over the largest |logit|
    shapes: list[tuple[int, ...]]  # the inputs it was checked on
    metadata: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # "int8" for a quantized file
    agreement: Agreement | None = None  # an int8 file's agreement with fp32 on held-out inputs


def _shapes(input_size: tuple[int, ...], dynamic_batch: bool, dynamic_size: bool) -> list[tuple[int, ...]]:
    """The example input's shape, then one of another batch size and/or spatial size for dynamic files."""
    c, h, w = input_size
    shapes = [(2, c, h, w)]
    if dynamic_batch or dynamic_size:
        shapes.append((3 if dynamic_batch else 2, c, h + 32 if dynamic_size else h, w + 64 if dynamic_size else w))
    return shapes


def _inputs(shapes: list[tuple[int, ...]], like: torch.Tensor) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(device=like.device, dtype=like.dtype) for s in shapes]


def _check(outputs: list[torch.Tensor], refs: list[torch.Tensor], tolerance: float) -> tuple[float, float]:
    abs_diff = max((o.float() - r.float()).abs().max().item() for o, r in zip(outputs, refs, strict=True))
    scale = max(r.float().abs().max().item() for r in refs)
    rel = abs_diff / scale if scale > 0 else abs_diff
    if not rel <= tolerance:
        raise SenetError(f"the exported model does not compute what PyTorch computes: largest difference "
                         f"{abs_diff:.3g} for logits up to {scale:.3g} ({rel:.2g} relative, tolerance {tolerance:g}); "
                         "nothing was written")
    return abs_diff, rel


def onnx_opsets() -> range:
    """The ONNX opsets the installed exporter really writes: from the opset its operator library
    is written in (torch's ``TORCHLIB_OPSET``, 18 in torch 2.14; below it the exporter writes
    that opset instead) up to the newest the installed ``onnx`` knows (its version converter
    keeps the graph's opset, silently, for any other)."""
    import onnx

    try:
        from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET as low
    except ImportError:  # a private module: where it moves, the opset of torch 2.14
        low = 18
    return range(int(low), onnx.defs.onnx_opset_version() + 1)


def _check_opset(opset: int | None) -> None:
    if opset is None:
        return
    ok = onnx_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in ok:
        raise SenetError(f"--opset {opset} cannot be written: the installed exporter (torch {torch.__version__}) "
                         f"writes ONNX opsets {ok.start} to {ok.stop - 1}")


def _written_opset(program: Any) -> int | None:
    return program.model.opset_imports.get("")


def _onnx(model: nn.Module, tmp: Path, example: torch.Tensor, meta: dict[str, str], dynamic_batch: bool,
          dynamic_size: bool, opset: int | None, optimize: bool) -> None:
    auto = torch.export.Dim.AUTO
    dims = {**({0: auto} if dynamic_batch else {}), **({2: auto, 3: auto} if dynamic_size else {})}
    with quiet() as log:
        try:
            # torch.export first, on its own: the ONNX exporter would otherwise fall back to other
            # capture strategies, and a program that torch.export cannot capture is worth naming
            exported = torch.export.export(model, (example,), dynamic_shapes=({**dims},) if dims else None)
            program = torch.onnx.export(exported, (example,), dynamo=True, optimize=optimize, opset_version=opset,
                                        input_names=["input"], output_names=["output"])
        except Exception as e:  # noqa: BLE001 (torch.export / onnxscript failures have many types)
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SenetError(f"ONNX export failed: {detail[:300]}") from None
    written = _written_opset(program)
    if opset is not None and written != opset:  # the exporter falls back to another opset without failing
        raise SenetError(f"--opset {opset}: the exporter wrote opset {written} instead; nothing was written")
    names = {0: "batch", 2: "height", 3: "width"}
    shape = program.model.graph.inputs[0].shape
    renames = {dim: names[i] for i, dim in enumerate(shape) if i in names and not isinstance(dim, int)}
    if renames:
        program.rename_axes(renames)
    program.model.metadata_props.update(meta)
    del log
    program.save(str(tmp))


def _run_onnx(path: Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    from senet.onnx_runtime import onnx_session, run_session

    session = onnx_session(path)
    return [run_session(session, x.detach().cpu(), len(x)) for x in inputs]


def _torchscript(model: nn.Module, tmp: Path, meta: dict[str, str]) -> None:
    with quiet():
        try:
            scripted = torch.jit.script(model)
        except Exception as e:  # noqa: BLE001
            raise SenetError(f"TorchScript compilation failed: {str(e).strip().splitlines()[0][:300]}") from None
        # into memory first: torch.jit.save's own file writer aborts the process (C++ c10::Error)
        # on a full disk; Python's writes fail with an OSError that names the file
        buf = io.BytesIO()
        torch.jit.save(scripted, buf, _extra_files={EXPORT_EXTRA_FILE: json.dumps(meta)})
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    format: str = "onnx",
    input_size: tuple[int, int, int] | None = None,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    opset: int | None = None,
    optimize: bool | None = None,
    tolerance: float = 1e-4,
    int8: Int8 | None = None,
) -> Exported:
    """Write ``model`` (in eval mode) as ONNX or TorchScript to ``path``, verified (module docstring).

    Args:
        input_size: ``(C, H, W)`` of the example input (default: the model's ``pretrained_cfg``).
        dynamic_batch, dynamic_size: leave the batch size / height and width free in an ONNX file
            (a TorchScript file is never bound to a size); the check then also runs another shape.
        opset: ONNX opset (default: the exporter's), one of :func:`onnx_opsets`; the written
            file's opset is checked to be it.
        optimize: run the ONNX exporter's graph optimisations (constant folding and the like;
            default on).
        tolerance: largest difference allowed, relative to the largest logit.
        int8: quantize the ONNX file to int8 with these calibration and held-out inputs (their
            size is the file's input size); the file is refused below ``int8.min_agreement``
            top-1 agreement with fp32 (:mod:`senet.int8`). The result's
            differences and :attr:`Exported.agreement` are then those on the held-out inputs.

    Raises:
        SenetError: an option that cannot be honoured (an opset the exporter does not write,
            ONNX options for TorchScript, an input size the model cannot run at or too large
            to allocate), a failing export or verification (nothing is left at ``path``).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; allowed: {', '.join(FORMATS)}")
    if format != "onnx":
        for name, value, flag in (("opset", opset, "--opset"), ("optimize", optimize, "--no-optimize")):
            if value is not None:
                raise SenetError(f"{flag} ({name}) applies to ONNX files only, not to {format}")
    _check_opset(opset)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
            math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    path = Path(path)
    if int8 is not None:
        if format != "onnx":
            raise SenetError(f"--int8 applies to ONNX files only, not to {format}")
        if input_size is not None and tuple(input_size) != int8.input_size:
            raise SenetError(f"input_size {tuple(input_size)} is not the size of the int8 calibration inputs "
                             f"{int8.input_size}")
        import tempfile

        from senet.int8 import int8_ready, quantize_checked

        was_training = model.training
        try:
            model.eval()
            with tempfile.TemporaryDirectory(prefix="senet-int8-") as tmp:
                fp32 = export_model(int8_ready(model), Path(tmp) / "fp32.onnx", input_size=int8.input_size,
                                    dynamic_batch=dynamic_batch, dynamic_size=dynamic_size, opset=opset,
                                    optimize=optimize, tolerance=tolerance)
                q = quantize_checked(model, fp32.path, fp32.shapes, path, int8)
        finally:
            model.train(was_training)
        return Exported(path, "onnx", q.max_abs_diff, q.max_rel_diff, q.shapes, q.metadata, precision="int8",
                        agreement=q.agreement)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = tuple(input_size or cfg.get("input_size") or (3, 224, 224))
    if len(input_size) != 3 or not all(isinstance(s, int) and s >= 1 for s in input_size):
        raise ValueError(f"input_size must be (channels, height, width), positive integers, got {input_size}")
    shapes = _shapes(input_size, dynamic_batch, dynamic_size)
    param = next(model.parameters())
    for shape in shapes:
        check_work_size(f"--input-size {input_size[-1]}", shape, param.element_size())
    was_training = model.training
    model.eval()
    meta = file_header(model)
    try:
        check_input_size(model, input_size, "--input-size")
        inputs = _inputs(shapes, param)
        with torch.no_grad():
            try:
                refs = [model(x).cpu() for x in inputs]
            except RuntimeError as e:  # e.g. a number of channels the model does not take
                detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise SenetError(f"the model cannot run on inputs of {' and '.join(map(str, shapes))}: "
                                 f"{detail}") from None
        with atomic_path(path) as tmp:
            if format == "onnx":
                _onnx(model, tmp, inputs[0], meta, dynamic_batch, dynamic_size, opset,
                      True if optimize is None else optimize)
                outputs = _run_onnx(tmp, inputs)
            else:
                _torchscript(model, tmp, meta)
                with quiet():
                    loaded = torch.jit.load(str(tmp), map_location=inputs[0].device)
                with torch.no_grad():
                    outputs = [loaded(x).cpu() for x in inputs]
            abs_diff, rel_diff = _check(outputs, refs, tolerance)
    finally:
        model.train(was_training)
    return Exported(path, format, abs_diff, rel_diff, [tuple(x.shape) for x in inputs], meta)

"""Running senet's ONNX files in onnxruntime on the CPU: the one session of the export check,
the int8 export's calibration and agreement checks and the benchmarks."""

from __future__ import annotations

import os
from typing import Any

import torch

from senet.errors import SenetError


def onnx_session(path: str | os.PathLike[str], threads: int | None = None, *, spin: bool = True) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, default onnxruntime's).
    ``spin=False`` stops its threads busy-waiting for work after each run, which would otherwise
    take the cores from whatever runs next in the process (PyTorch, another session)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SenetError("running an ONNX file needs onnxruntime (pip install 'senet[onnx]')") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_batch(session: Any, wanted: int) -> int:
    """The batch size to feed ``session``: its input's, where fixed, else ``wanted``."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else wanted


def run_session(session: Any, inputs: torch.Tensor, batch: int) -> torch.Tensor:
    """``session``'s outputs for ``inputs``, ``batch`` at a time, or as many as its input's fixed
    batch size, where it has one (a last short batch is then padded and cut)."""
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    batch = session_batch(session, batch)
    outs = []
    for i in range(0, len(inputs), batch):
        x = inputs[i:i + batch]
        n = len(x)
        if isinstance(fixed, int) and n < fixed:
            x = torch.cat([x, x.new_zeros(fixed - n, *x.shape[1:])])
        outs.append(torch.from_numpy(session.run(None, {name: x.float().contiguous().numpy()})[0][:n]))
    return torch.cat(outs)

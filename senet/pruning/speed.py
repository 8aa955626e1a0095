"""The measured CPU speed-up of a pruned network over the unpruned one: inference at several
batch sizes, eager PyTorch and the exported ONNX file under onnxruntime, timed in interleaved
rounds (:mod:`senet.utils.timing`: each round times both networks once, in alternating order,
so that both see the same machine; the speed-up is the median of the per-round ratios
``time(unpruned) / time(pruned)``, with a distribution-free confidence interval of that median).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.utils import timing

#: the least time one measurement of the faster network lasts (several calls averaged)
MIN_MEASUREMENT_S = 0.2


def _timed(fns: dict[str, Callable[[], object]], rounds: int, log: Callable[[str], None] | None) -> dict[str, Any]:
    for fn in fns.values():  # warm-up (allocator, oneDNN primitives, onnxruntime's first run)
        fn()
    inner = timing.calibrate_inner(fns, MIN_MEASUREMENT_S)
    stats = timing.compare(fns, repeats=rounds, inner=inner, warmup=0)  # warmed up above
    r = timing.ratio(stats, "unpruned", "pruned")
    low, high, coverage = r.ci()
    out = {"speedup": r.median, "ci_low": low, "ci_high": high, "ci_coverage": coverage,
           "unpruned_s": stats["unpruned"].median, "pruned_s": stats["pruned"].median, "rounds": rounds,
           "calls_per_round": inner}
    if log is not None:
        log(f"    {r.describe()}")
    return out


def _onnx_sessions(models: dict[str, nn.Module], input_size: tuple[int, int, int], folder: Path) -> dict[str, Any]:
    from senet.export import export_model
    from senet.onnx_runtime import onnx_session

    sessions = {}
    for name, model in models.items():
        path = folder / f"{name}.onnx"
        export_model(model, path, format="onnx", input_size=input_size, dynamic_batch=True)
        sessions[name] = onnx_session(path)
    return sessions


def measure_speedup(
    unpruned: nn.Module,
    pruned: nn.Module,
    input_size: tuple[int, int, int],
    *,
    batches: Sequence[int] = (1, 64),
    rounds: int = 11,
    onnx: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``{"eager_b1": {...}, "onnx_b64": {...}, ...}``: per engine and batch size the speed-up
    (median of per-round ratios), its 95% interval and the median seconds per call of each
    network, on the CPU, with torch's and onnxruntime's default threads. ``onnx`` needs
    onnxruntime (and the ONNX exporter: ``senet export``'s)."""
    models = {"unpruned": unpruned.eval().cpu(), "pruned": pruned.eval().cpu()}
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "input_size": list(input_size),
                           "machine": timing.machine_info()}
    with torch.inference_mode():
        for b in batches:
            x = torch.randn((b, *input_size), generator=torch.Generator().manual_seed(b))
            if log is not None:
                log(f"  eager, batch {b}")
            out[f"eager_b{b}"] = _timed({k: (lambda m=m: m(x)) for k, m in models.items()}, rounds, log)
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            sessions = _onnx_sessions(models, input_size, Path(tmp))
            for b in batches:
                x = torch.randn((b, *input_size), generator=torch.Generator().manual_seed(b)).numpy()
                if log is not None:
                    log(f"  onnxruntime, batch {b}")
                out[f"onnx_b{b}"] = _timed({k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x}))
                                            for k, s in sessions.items()},
                                           rounds, log)
    return out

"""Silence libraries that print progress and warnings of their own (the ONNX exporter,
onnxruntime's quantization tools), keeping what they said for an error message."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """stdout, stderr and warnings of the block go into the yielded buffer."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield out

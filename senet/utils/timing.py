"""Interleaved A/B timing of callables in one process.

The benchmarks (``benchmarks/``, which import it as ``timing``) and ``senet prune``'s speed-up
measurement (:mod:`senet.pruning.speed`) compare two (or more) ways of doing the same work, e.g.
a model with SE blocks against the same model without them. Timing them one after the other is
unreliable on shared or throttling machines: the clock speed, the other tenants and the
allocator's state drift over seconds. :func:`compare` therefore runs the callables in
*rounds*: every round times each callable once (``inner`` calls, averaged), in an order
that rotates from round to round, so that every callable sees the same conditions. The
per-callable medians are reported with their spread, and :func:`ratio` gives the
*paired* ratio: the median of the per-round ratios, which cancels drift between rounds.

Usage::

    from senet.utils.timing import compare, ratio, cuda_sync   # benchmarks: from timing import ...

    stats = compare({"se": lambda: se_model(x), "plain": lambda: model(x)},
                    repeats=9, inner=5, warmup=2, sync=cuda_sync("cuda"))
    print(stats["se"].describe(), ratio(stats, "se", "plain").describe())

The module imports nothing but the standard library; torch is imported only by
:func:`cuda_sync` and :func:`machine_info`, and only when present.
"""

from __future__ import annotations

import datetime as _dt
import gc
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["Stats", "Ratio", "compare", "calibrate_inner", "ratio", "median_ci", "verdict", "cuda_sync",
           "machine_info", "format_seconds", "write_report"]


def _quantile(values: tuple[float, ...], q: float) -> float:
    """Linear-interpolated quantile ``q`` in [0, 1] of ``values`` (numpy's default method)."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = q * (len(data) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median_ci(values: tuple[float, ...], confidence: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free confidence interval of the median: ``(low, high, coverage)``.

    The interval between the ``k``-th smallest and the ``k``-th largest of ``n`` values
    contains the true median with probability ``1 - 2 P(B < k)``, ``B ~ Binomial(n, 1/2)``,
    whatever the distribution of the values (they need only be independent). The widest
    ``k`` whose coverage reaches ``confidence`` is used; with too few values for that
    (fewer than 6 at 95%) the interval is the whole range and ``coverage`` says how much
    less it is worth.
    """
    data = sorted(values)
    n = len(data)
    if n == 0:
        raise ValueError("no values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")

    def coverage(k: int) -> float:  # of [k-th smallest, k-th largest]: 1 - 2 P(B <= k - 1)
        return 1 - 2 * sum(math.comb(n, j) for j in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return data[k - 1], data[n - k], coverage(k)


def verdict(values: tuple[float, ...], target: float, confidence: float = 0.95) -> str:
    """``"PASS"`` if the confidence interval of the median of ``values`` lies at or below
    ``target``, ``"FAIL"`` if it lies above, ``"UNRESOLVED"`` if it straddles the target:
    the rounds are too few or too noisy to tell."""
    low, high, _ = median_ci(values, confidence)
    if high <= target:
        return "PASS"
    if low > target:
        return "FAIL"
    return "UNRESOLVED"


class _Summary:
    """Median, quartiles and range of ``values`` (a tuple attribute of the subclass)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def q1(self) -> float:
        return _quantile(self.values, 0.25)

    @property
    def q3(self) -> float:
        return _quantile(self.values, 0.75)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def ci(self, confidence: float = 0.95) -> tuple[float, float, float]:
        """See :func:`median_ci`."""
        return median_ci(self.values, confidence)

    def summary(self) -> dict[str, Any]:
        low, high, coverage = self.ci()
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.min, "max": self.max,
                "ci95": [low, high], "ci_coverage": coverage, "values": list(self.values)}


@dataclass(frozen=True)
class Stats(_Summary):
    """Timings of one callable: ``values[i]`` is the mean time of one call (seconds) in round ``i``."""

    name: str
    values: tuple[float, ...]
    inner: int

    @property
    def rel_iqr(self) -> float:
        """Interquartile range relative to the median: the run's noise level."""
        return (self.q3 - self.q1) / self.median if self.median > 0 else float("nan")

    def describe(self) -> str:
        return (f"{format_seconds(self.median)} (IQR {format_seconds(self.q1)}-{format_seconds(self.q3)}, "
                f"{len(self.values)}x{self.inner} calls)")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "inner": self.inner, "seconds": self.summary()}


@dataclass(frozen=True)
class Ratio(_Summary):
    """Time of ``num`` over time of ``den``: ``values[i]`` is the ratio within round ``i``.

    :attr:`median` (the paired ratio) is the figure to report. :attr:`of_medians` is the
    ratio of the two medians and :attr:`of_mins` the ratio of the two fastest rounds: on a
    machine shared with other jobs, whose noise only ever adds time, the latter is the
    least disturbed estimate.
    """

    num: str
    den: str
    values: tuple[float, ...]
    of_medians: float
    of_mins: float

    def describe(self) -> str:
        low, high, coverage = self.ci()
        return (f"{self.num}/{self.den} = {self.median:.3f} ({coverage:.0%} CI {low:.3f}-{high:.3f}, "
                f"IQR {self.q1:.3f}-{self.q3:.3f}; ratio of medians {self.of_medians:.3f}, of minima {self.of_mins:.3f})")

    def to_dict(self) -> dict[str, Any]:
        return {"num": self.num, "den": self.den, "of_medians": self.of_medians, "of_mins": self.of_mins,
                "ratio": self.summary()}


def compare(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 7,
    inner: int = 1,
    warmup: int = 1,
    *,
    sync: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Stats]:
    """Time each callable of ``fns`` in ``repeats`` interleaved rounds.

    Args:
        fns: name -> callable taking no arguments (its result is discarded).
        repeats: rounds; each round times every callable once. Round ``r`` starts with the
            ``r``-th callable (mod ``len(fns)``), so each one is first, second ... equally often.
        inner: calls per timed measurement (the recorded value is their mean). Use more
            for fast callables so that each measurement lasts at least ~50 ms.
        warmup: untimed calls of each callable before the first round (also interleaved).
        sync: called before starting and before stopping the clock, e.g.
            ``cuda_sync("cuda")`` so that asynchronous GPU work is counted.
        progress: called with a line of text after each round (e.g. ``print``).
        timer: the clock (seconds); tests pass a fake one.

    Returns:
        name -> :class:`Stats`, in the order of ``fns``.

    The garbage collector is disabled while a measurement runs (as :mod:`timeit` does) and
    run between measurements.
    """
    if not fns:
        raise ValueError("compare() needs at least one callable")
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, inner >= 1, warmup >= 0; got {repeats}, {inner}, {warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    if sync is not None:
        sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    try:
        for r in range(repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                fn = fns[name]
                gc.collect()
                gc.disable()
                if sync is not None:
                    sync()
                start = timer()
                for _ in range(inner):
                    fn()
                if sync is not None:
                    sync()
                elapsed = timer() - start
                if gc_was_enabled:
                    gc.enable()
                times[name].append(elapsed / inner)
            if progress is not None:
                done = ", ".join(f"{n} {format_seconds(times[n][-1])}" for n in names)
                progress(f"  round {r + 1}/{repeats}: {done}")
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Stats(name, tuple(times[name]), inner) for name in names}


def calibrate_inner(
    fns: Mapping[str, Callable[[], object]],
    min_time: float,
    *,
    sync: Callable[[], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    limit: int = 1000,
) -> int:
    """Calls per measurement so that one measurement of the fastest callable lasts >= ``min_time`` s.

    Times one call of each callable (call it after warming up); the result is the same for
    all callables, so that each measurement of each one covers the same number of calls.
    """
    fastest = math.inf
    for fn in fns.values():
        if sync is not None:
            sync()
        start = timer()
        fn()
        if sync is not None:
            sync()
        fastest = min(fastest, timer() - start)
    if fastest <= 0:
        return limit
    return max(1, min(limit, math.ceil(min_time / fastest)))


def ratio(stats: Mapping[str, Stats], num: str, den: str) -> Ratio:
    """The paired time ratio ``num / den`` of two callables timed in the same :func:`compare` call."""
    a, b = stats[num], stats[den]
    if len(a.values) != len(b.values):
        raise ValueError(f"{num} and {den} have different numbers of rounds; time them in one compare() call")
    per_round = tuple(x / y for x, y in zip(a.values, b.values))
    return Ratio(num, den, per_round, a.median / b.median, a.min / b.min)


def cuda_sync(device: Any) -> Callable[[], None] | None:
    """A ``sync`` for :func:`compare`: ``torch.cuda.synchronize`` if ``device`` is a CUDA device, else ``None``."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    return lambda: torch.cuda.synchronize(device)


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where and when a benchmark ran: CPU model, cores, Python/torch versions, GPU, date (UTC)."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def write_report(path: str | Path, text: str) -> None:
    """Write a result file (``--json``, ``--profile``), making its folder: the README's commands
    write under the git-ignored ``runs/``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

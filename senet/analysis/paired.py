"""Paired comparison of two models trained with the same seeds: the mean of the per-seed
differences and its 95% confidence interval from Student's t distribution (the seeds pair the
runs: the same data order, initialisation stream and augmentation draws)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..30; beyond, the
# Cornish-Fisher expansion around the normal quantile (within 1e-4 of the exact value)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the seeds both hold: mean, sample std, 95% CI (``None`` for one pair)."""

    seeds: tuple[int, ...]
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def n(self) -> int:
        return len(self.seeds)

    def text(self, digits: int = 2) -> str:
        if self.ci_low is None or self.ci_high is None:
            return f"{self.mean:+.{digits}f} (one pair: no interval)"
        return f"{self.mean:+.{digits}f} [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> PairedDifference | None:
    """The paired difference ``a[seed] - b[seed]`` over the seeds in both; ``None`` if none."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    mean = sum(d) / len(d)
    if len(d) < 2:
        return PairedDifference(seeds, mean, None, None, None)
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    half = t_quantile_975(len(d) - 1) * std / math.sqrt(len(d))
    return PairedDifference(seeds, mean, std, mean - half, mean + half)

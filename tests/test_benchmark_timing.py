"""The interleaved timing helper (:mod:`senet.utils.timing`, which the benchmarks import as
``timing``; a fake clock: no real timing thresholds)."""

import time

import pytest

from senet.utils import timing


class FakeClock:
    """A clock that only moves when a fake workload says so; records the call sequence."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, costs: list[float]):
        """A callable whose k-th call takes ``costs[k % len(costs)]`` seconds."""
        count = [0]

        def fn() -> None:
            self.calls.append(name)
            self.now += costs[count[0] % len(costs)]
            count[0] += 1

        return fn


def test_rounds_are_interleaved_with_rotating_order_after_warmup():
    clock = FakeClock()
    fns = {n: clock.work(n, [1.0]) for n in "abc"}
    stats = timing.compare(fns, repeats=4, inner=2, warmup=1, timer=clock)
    warm, timed = clock.calls[:3], clock.calls[3:]
    assert warm == ["a", "b", "c"]
    # each measurement is ``inner`` consecutive calls of one callable; the first shifts each round
    measured = timed[::2]
    assert timed[1::2] == measured
    assert measured == list("abc" "bca" "cab" "abc")
    assert list(stats) == ["a", "b", "c"]
    assert all(s.inner == 2 and len(s.values) == 4 for s in stats.values())


def test_values_are_mean_time_per_call_and_median_and_quartiles():
    clock = FakeClock()
    # inner=2: the two calls of round r cost costs[2r] + costs[2r+1]
    slow = clock.work("slow", [3.0, 3.0, 5.0, 5.0, 4.0, 4.0, 100.0, 100.0, 2.0, 2.0])
    stats = timing.compare({"slow": slow}, repeats=5, inner=2, warmup=0, timer=clock)
    s = stats["slow"]
    assert s.values == (3.0, 5.0, 4.0, 100.0, 2.0)
    assert s.median == 4.0  # the outlier round does not move the median
    assert (s.min, s.q1, s.q3, s.max) == (2.0, 3.0, 5.0, 100.0)
    assert s.rel_iqr == pytest.approx(0.5)


def test_ratio_is_paired_per_round_and_cancels_drift():
    clock = FakeClock()
    # the machine slows down 10x halfway; b always costs twice a within a round
    a = clock.work("a", [1.0, 1.0, 10.0, 10.0])
    b = clock.work("b", [2.0, 2.0, 20.0, 20.0])
    stats = timing.compare({"a": a, "b": b}, repeats=4, warmup=0, timer=clock)
    r = timing.ratio(stats, "b", "a")
    assert r.values == (2.0, 2.0, 2.0, 2.0)
    assert r.median == 2.0 and r.q1 == 2.0 and r.q3 == 2.0
    assert r.of_medians == pytest.approx(stats["b"].median / stats["a"].median)
    assert "b/a = 2.000" in r.describe()
    assert r.to_dict()["ratio"]["median"] == 2.0


def test_sync_brackets_every_measurement():
    clock = FakeClock()
    events: list[str] = []
    fns = {"a": clock.work("a", [1.0]), "b": clock.work("b", [1.0])}
    timing.compare(fns, repeats=2, inner=3, warmup=1, timer=clock, sync=lambda: events.append("sync"))
    # once after warm-up, then before and after each of the 4 measurements
    assert events.count("sync") == 1 + 2 * 4


def test_calibrate_inner_reaches_min_time_for_the_fastest():
    clock = FakeClock()
    fns = {"fast": clock.work("fast", [0.01]), "slow": clock.work("slow", [0.2])}
    assert timing.calibrate_inner(fns, 0.25, timer=clock) == 25
    assert timing.calibrate_inner(fns, 0.0, timer=clock) == 1
    assert timing.calibrate_inner(fns, 1e9, timer=clock, limit=50) == 50


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="at least one"):
        timing.compare({})
    with pytest.raises(ValueError, match="repeats"):
        timing.compare({"a": lambda: None}, repeats=0)
    clock = FakeClock()
    one = timing.compare({"a": clock.work("a", [1.0])}, repeats=2, warmup=0, timer=clock)
    other = timing.compare({"b": clock.work("b", [1.0])}, repeats=3, warmup=0, timer=clock)
    with pytest.raises(ValueError, match="one compare"):
        timing.ratio({**one, **other}, "a", "b")


def test_real_clock_orders_sleeps():
    # a real run: only the ordering and a generous ratio band, never an absolute time
    # (wake-up latency L adds to both: (20 + L) / (2 + L) stays above 1.2 up to L = 88 ms)
    stats = timing.compare({"short": lambda: time.sleep(0.002), "long": lambda: time.sleep(0.020)},
                           repeats=5, warmup=1)
    r = timing.ratio(stats, "long", "short")
    assert 1.2 < r.median < 12


def test_machine_info_names_the_machine():
    info = timing.machine_info()
    assert info["cpu"] and info["cpu_count"] >= 1 and "date" in info and "torch" in info


def test_median_ci_uses_binomial_order_statistics():
    # n = 11: [2nd smallest, 2nd largest] covers the median with 1 - 2 * 12/2048 = 98.8%;
    # [3rd, 3rd] would cover only 93.5% < 95%
    low, high, coverage = timing.median_ci(tuple(range(11, 0, -1)))
    assert (low, high) == (2, 10)
    assert coverage == pytest.approx(1 - 2 * 12 / 2048)
    # too few values for 95%: the whole range, with its (lower) coverage said
    assert timing.median_ci((3.0, 1.0, 2.0, 5.0, 4.0)) == (1.0, 5.0, pytest.approx(1 - 2 / 32))
    with pytest.raises(ValueError, match="no values"):
        timing.median_ci(())


def test_verdict_is_unresolved_when_the_interval_straddles_the_target():
    steady = (1.01,) * 11
    assert timing.verdict(steady, 1.02) == "PASS"
    assert timing.verdict(steady, 1.00) == "FAIL"
    # same median (1.01) but spread over 0.96-1.06: cannot tell against 1.02
    noisy = tuple(0.96 + 0.01 * i for i in range(11))
    assert timing.verdict(noisy, 1.02) == "UNRESOLVED"
    r = timing.Ratio("se", "plain", noisy, 1.0, 1.0)
    assert "99% CI 0.970-1.050" in r.describe()  # 11 rounds: the interval's actual coverage is 98.8%
    assert r.to_dict()["ratio"]["ci95"] == [pytest.approx(0.97), pytest.approx(1.05)]

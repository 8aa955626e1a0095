"""How long the first decode of the shared CIFAR-10 archive takes, and a cached reload.

Issue 3 requires the first decode of ``../shared/data/cifar10-jpeg.tar.gz`` to take under
30 s on the 2-core development machine. Into a fresh temporary cache folder (removed
afterwards) this times:

* first load of ``train``: reads the archive once, decodes both splits (60,000 JPEGs) in a
  process pool and writes both tensor caches;
* the ``test`` load after it (a cache hit);
* a reload of both splits from the cache, as every later run does.

    python benchmarks/decode_time.py                      # the shared archive
    python benchmarks/decode_time.py --data PATH --limit 30 --json out.json

Prints seconds per phase and PASS / FAIL against ``--limit``; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _timed(fn):  # noqa: ANN001, ANN202 - tiny helper
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT, help="archive or tree to decode (default: %(default)s)")
    parser.add_argument("--dataset", default="cifar10", help="dataset name passed to load_split")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds allowed for the first decode")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2

    from senet.data import load_split

    cache_dir = Path(tempfile.mkdtemp(prefix="senet-decode-bench-"))
    try:
        load = lambda split: load_split(args.dataset, split, data=args.data, cache_dir=cache_dir)  # noqa: E731
        train, first = _timed(lambda: load("train"))
        test, second = _timed(lambda: load("test"))
        _, reload = _timed(lambda: (load("train"), load("test")))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    n = len(train) + len(test)
    figures = {
        "data": str(args.data),
        "images": n,
        "first_decode_s": round(first, 2),
        "second_split_after_first_s": round(second, 3),
        "cached_reload_both_s": round(reload, 3),
        "first_decode_images_per_s": round(n / first),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "machine": platform.platform(),
        "limit_s": args.limit,
    }
    print(f"data:                      {args.data} ({len(train)} train + {len(test)} test images)")
    print(f"first decode (both splits): {first:7.2f} s  ({n / first:,.0f} images/s, {figures['cpus']} CPUs)")
    print(f"second split (cache hit):   {second:7.3f} s")
    print(f"cached reload, both splits: {reload:7.3f} s")
    verdict = "PASS" if first < args.limit else "FAIL"
    print(f"{verdict}: first decode {first:.1f} s {'<' if first < args.limit else '>='} {args.limit:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({**figures, "pass": verdict == "PASS"}, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training speed on the CPU: candidate settings of a ``senet train`` step, interleaved in one run.

Each candidate is a whole training step as the trainer runs it: the batched augmentation of a
uint8 batch (random crop, flip, normalisation), forward, cross-entropy, backward and the SGD
step with the recipes' momentum and weight decay. Candidates and models are measured in
interleaved rounds (:func:`timing.compare`); the figure is the paired ratio of images/s over the
current default (median over rounds). Also measured: the share of a step spent in the
augmentation, evaluation images/s by batch size, and (``--compile``) Inductor's compiled step.

    python benchmarks/train_speed.py                                   # the three models, ~6 min
    python benchmarks/train_speed.py --models cifar_se_resnet20 --compile --json speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from timing import compare, machine_info, ratio, write_report  # noqa: E402

MODELS = ("cifar_resnet20", "cifar_se_resnet20", "cifar_se_resnet56")
#: name -> (channels_last, SGD implementation)
CANDIDATES = {
    "contiguous": (False, "for-loop"),
    "channels_last": (True, "for-loop"),
    "channels_last+foreach": (True, "foreach"),
    "channels_last+fused": (True, "fused"),
}
DEFAULT = "contiguous"


def make_step(model_name: str, batch: int, channels_last: bool, sgd: str, *, compiled: bool = False,
              seed: int = 0, device: str = "cpu", bf16: bool = False, side: int = 32) -> Callable[[], None]:
    """One training step of ``model_name`` on a fixed uint8 batch, as the trainer runs it
    (``bf16``: the trainer's CUDA autocast)."""
    from senet import create_model

    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, num_classes=10).to(device, memory_format=fmt).train()
    kw = {"foreach": sgd == "foreach", "fused": True} if sgd == "fused" else {"foreach": sgd == "foreach"}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, **kw)
    augment = _augment(channels_last, side)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (batch,), generator=g).to(device)
    forward = torch.compile(model) if compiled else model
    dev = torch.device(device)

    def step() -> None:
        x = augment(images)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x).float(), labels)
        loss.backward()
        opt.step()

    return step


def _augment(channels_last: bool, side: int = 32):
    """The CIFAR recipes' batched augmentation (pad side/8, random crop, flip, normalise)."""
    from senet.data.augment import GpuAugment

    return GpuAugment((0.49, 0.48, 0.45), (0.25, 0.24, 0.26), pad=side // 8, crop=side, channels_last=channels_last)


def make_augment(batch: int, channels_last: bool) -> Callable[[], None]:
    augment = _augment(channels_last)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    return lambda: augment(images)


def make_eval(model_name: str, batch: int, channels_last: bool) -> Callable[[], None]:
    from senet import create_model

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, num_classes=10).to(memory_format=fmt).eval()
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    p.add_argument("--eval-batches", type=int, nargs="+", default=[128, 512, 1000])
    p.add_argument("--se-pair", nargs=2, default=["cifar_resnet20", "cifar_se_resnet20"], metavar=("BASE", "SE"),
                   help="the baseline and SE model timed against each other")
    p.add_argument("--compile", action="store_true", help="also Inductor's compiled step (minutes of compiling)")
    p.add_argument("--profile", metavar="FILE", help="also write torch.profiler's table of a few default "
                   "(channels_last) steps of the first model here: where the time goes")
    p.add_argument("--json", help="write the figures and machine info here")
    args = p.parse_args(argv)
    b = args.batch_size
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results: dict = {"machine": machine_info(), "batch_size": b, "threads": torch.get_num_threads(), "models": {}}

    for name in args.models:
        fns = {c: make_step(name, b, cl, sgd) for c, (cl, sgd) in CANDIDATES.items()}
        if args.compile:
            t = time.perf_counter()
            fns["channels_last+compile"] = compiled = make_step(name, b, True, "foreach", compiled=True)
            compiled()
            results.setdefault("compile_seconds", {})[name] = time.perf_counter() - t
        log(f"{name}: {len(fns)} candidates x {args.repeats} rounds")
        stats = compare(fns, repeats=args.repeats, inner=1, warmup=2)
        rows = {}
        for c, s in stats.items():
            r = ratio(stats, DEFAULT, c)  # time(default) / time(c): the speed-up of c
            rows[c] = {"images_per_s": b / s.median, "step_s": s.median, "speedup": r.median,
                       "speedup_q1": r.q1, "speedup_q3": r.q3}
        results["models"][name] = rows
        print(f"\n{name}, batch {b}, {torch.get_num_threads()} threads: images/s (speed-up over {DEFAULT}, IQR)")
        for c, row in rows.items():
            print(f"  {c:<24} {row['images_per_s']:7.1f} img/s  x{row['speedup']:.3f} "
                  f"({row['speedup_q1']:.3f}-{row['speedup_q3']:.3f})")

    # SE against its baseline, both in one interleaved comparison (the 1.10x target)
    pair = {}
    for fmt, cl in (("channels_last", True), ("nchw", False)):
        pair[f"{args.se_pair[0]} {fmt}"] = make_step(args.se_pair[0], b, cl, "for-loop")
        pair[f"{args.se_pair[1]} {fmt}"] = make_step(args.se_pair[1], b, cl, "for-loop")
    pst = compare(pair, repeats=args.repeats, inner=1, warmup=2)
    results["se_overhead"] = {}
    print(f"\ntime per step, {args.se_pair[1]} / {args.se_pair[0]} (paired, median and IQR):")
    for fmt in ("channels_last", "nchw"):
        r = ratio(pst, f"{args.se_pair[1]} {fmt}", f"{args.se_pair[0]} {fmt}")
        results["se_overhead"][fmt] = {"ratio": r.median, "q1": r.q1, "q3": r.q3}
        print(f"  {fmt:<14} {r.median:.3f} ({r.q1:.3f}-{r.q3:.3f})")

    first = args.models[0]
    aug = compare({"contiguous": make_augment(b, False), "channels_last": make_augment(b, True),
                   "step": make_step(first, b, True, "foreach")}, repeats=args.repeats, inner=3, warmup=2)
    share = aug["channels_last"].median / aug["step"].median
    results["augment"] = {"contiguous_s": aug["contiguous"].median, "channels_last_s": aug["channels_last"].median,
                          "share_of_step": share, "model": first}
    print(f"\naugmentation of a batch of {b}: {1e3 * aug['channels_last'].median:.2f} ms channels_last, "
          f"{1e3 * aug['contiguous'].median:.2f} ms contiguous; {100 * share:.1f}% of a {first} step")

    evals = {f"batch {n}": make_eval(first, n, True) for n in args.eval_batches}
    est = compare(evals, repeats=args.repeats, inner=1, warmup=1)
    results["eval"] = {k: n / est[k].median for k, n in zip(evals, args.eval_batches)}
    print(f"\nevaluation of {first} (channels_last, inference mode): "
          + ", ".join(f"{k}: {v:.0f} img/s" for k, v in results["eval"].items()))
    if args.compile:
        print("\ncompile time of the first step: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in results["compile_seconds"].items()))
    if args.profile:
        step = make_step(first, b, True, "for-loop")
        for _ in range(2):
            step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        write_report(args.profile, f"{first}, batch {b}, channels_last, 5 steps, {torch.get_num_threads()} "
                                   f"threads, {machine_info().get('cpu', '')}\n{table}\n")
        print(f"\nprofile of {first}: {args.profile}")
    if args.json:
        write_report(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

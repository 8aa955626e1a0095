"""How much time SE blocks cost, and how senet's models compare with timm's and torchvision's.

Measures, in one process, interleaved (see ``timing.py``), median of several rounds:

* SE overhead: ``se_resnet50`` / ``resnet50`` (the paper's layout). The paper (section 4,
  "computational complexity") reports 209 / 190 ms = 1.10 for a training step of 256 images on
  8 GPUs and 167 / 164 ms = 1.018 for CPU inference of one 224x224 image.
* senet vs its peers, each pair holding the same weights (checked to give the same logits first):
  senet ``se_resnet50`` / timm ``legacy_seresnet50`` (the released SENet layout), senet
  ``seresnet50`` (timm's name: timm's layout, the stride on the 3x3) / timm ``seresnet50``, and
  senet ``resnet50`` with torchvision's weights (hence its layout) / torchvision ``resnet50``.
  Target <= 1.0 in every mode. The SE overhead of timm's layout is printed for both projects.

Inference is ``model(x)`` in eval mode under ``torch.inference_mode`` (batch 1 and 16 by
default); a training step is forward, cross-entropy, backward and an SGD (momentum 0.9) step
(batch 16). A target is marked PASS when the 95% confidence interval of the median paired ratio
lies at or below it, FAIL when the interval lies above it and UNRESOLVED when it straddles it
(too few or too noisy rounds). The exit status is 0 unless a pair disagrees on the logits.

    python benchmarks/se_overhead.py                     # CPU, and CUDA when present
    python benchmarks/se_overhead.py --device cuda --amp --channels-last --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from timing import (  # noqa: E402
    Ratio, Stats, calibrate_inner, compare, cuda_sync, machine_info, ratio, verdict, write_report,
)

#: ``wall``: elapsed time. ``cpu``: CPU time of this process (all its threads), which does not
#: count the time other jobs hold the cores: steadier on a shared machine, with ``--threads 1``.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}

#: A ratio whose interquartile range exceeds this fraction of it cannot resolve a 2% target.
NOISY = 0.04

PLAIN, SE, TIMM = "resnet50", "se_resnet50", "timm_legacy_seresnet50"
SE_TIMM_LAYOUT, TIMM_SE = "senet_seresnet50", "timm_seresnet50"
PLAIN_TV_LAYOUT, TV = "senet_resnet50_tv", "torchvision_resnet50"
#: senet model -> the peer holding the same weights
PEERS = {SE: TIMM, SE_TIMM_LAYOUT: TIMM_SE, PLAIN_TV_LAYOUT: TV}

#: (numerator, denominator, mode, devices the target applies to, target, paper's figure)
TARGETS: list[tuple[str, str, str, tuple[str, ...], float, str]] = [
    (SE, PLAIN, "inference", ("cpu",), 1.02, "paper 1.018 (CPU, batch 1)"),
    (SE, PLAIN, "train", ("cpu",), 1.03, "paper 1.10 (8 GPUs, batch 256)"),
    *[(ours, peer, mode, ("cpu", "cuda"), 1.0, "") for ours, peer in PEERS.items() for mode in ("inference", "train")],
]


def log(msg: str) -> None:
    print(msg, flush=True)


def build_models(device: torch.device, with_peers: bool, channels_last: bool) -> dict[str, nn.Module]:
    """senet's ``resnet50`` and ``se_resnet50`` and, with ``with_peers``, each peer of
    :data:`PEERS` with the senet model that holds its (random) weights."""
    import senet

    torch.manual_seed(0)
    models: dict[str, nn.Module] = {PLAIN: senet.create_model(PLAIN)}
    if with_peers:
        import timm
        import torchvision

        peers = {TIMM: timm.create_model("legacy_seresnet50"), TIMM_SE: timm.create_model("seresnet50"),
                 TV: torchvision.models.resnet50()}
        names = {SE: "se_resnet50", SE_TIMM_LAYOUT: "seresnet50", PLAIN_TV_LAYOUT: "resnet50"}
        for ours, peer in PEERS.items():
            models[ours] = senet.create_model(names[ours], pretrained=peers[peer].state_dict())
            models[peer] = peers[peer]
    else:
        models[SE] = senet.create_model(SE)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {k: m.to(device=device, memory_format=fmt) for k, m in models.items()}


def check_agreement(models: dict[str, nn.Module], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Max |logit difference| between each senet model and its peer in eval mode (fp32, batch 2)."""
    x = torch.randn(2, 3, 224, 224, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out: dict[str, Any] = {}
    for ours, peer in PEERS.items():
        with torch.inference_mode():
            a = models[ours].eval()(x).float()
            b = models[peer].eval()(x).float()
        diff = (a - b).abs().max().item()
        # cuDNN may use TF32 convolutions: allow more there.
        tol = (1e-4 if device.type == "cpu" else 2e-2) * max(1.0, b.abs().max().item())
        out[f"{ours}/{peer}"] = {"max_abs_diff": diff, "max_abs_logit": b.abs().max().item(), "tolerance": tol,
                                 "ok": diff <= tol}
    return out


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def inference_fns(models: dict[str, nn.Module], x: torch.Tensor, amp: bool) -> dict[str, Callable[[], object]]:
    def make(model: nn.Module) -> Callable[[], object]:
        model.eval()

        def step() -> object:
            with torch.inference_mode(), _autocast(x.device, amp):
                return model(x)

        return step

    return {name: make(m) for name, m in models.items()}


def train_fns(
    models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, amp: bool
) -> dict[str, Callable[[], object]]:
    def make(model: nn.Module) -> Callable[[], object]:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step() -> object:
            with _autocast(x.device, amp):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return step

    return {name: make(m) for name, m in models.items()}


def run_mode(
    mode: str, fns: dict[str, Callable[[], object]], args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, Stats], int]:
    sync = cuda_sync(device)
    log(f"[{device.type}] {mode}: warm-up ({args.warmup} calls each)")
    for _ in range(args.warmup):
        for fn in fns.values():
            fn()
    inner = calibrate_inner(fns, args.min_time, sync=sync, timer=CLOCKS[args.clock])
    repeats = args.repeats if mode == "train" else args.infer_repeats
    log(f"[{device.type}] {mode}: {repeats} rounds of {inner} call(s) each")
    stats = compare(fns, repeats=repeats, inner=inner, warmup=0, sync=sync,
                    progress=log if args.progress else None, timer=CLOCKS[args.clock])
    return stats, inner


def judge(r: Ratio, mode: str, device: torch.device) -> tuple[str, str]:
    """(mark, text) for the target that applies to ``r`` on ``device``, if any."""
    for num, den, m, devices, target, paper in TARGETS:
        if (num, den, m) == (r.num, r.den, mode):
            note = f"; {paper}" if paper else ""
            if device.type not in devices:
                return "", f"(no target on {device.type}{note})"
            mark = verdict(r.values, target)
            why = " (the 95% CI straddles the target: more --repeats or a quieter machine)" if mark == "UNRESOLVED" else ""
            return mark, f"target <= {target:.2f}: {mark}{why}{note}"
    return "", ""


def run_device(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    with_peers = not args.no_timm
    if with_peers:
        try:
            import timm  # noqa: F401
            import torchvision  # noqa: F401
        except ImportError:
            log("timm or torchvision is not installed: skipping senet vs its peers (pip install timm torchvision)")
            with_peers = False
    models = build_models(device, with_peers, args.channels_last)
    result: dict[str, Any] = {"modes": {}}
    if with_peers:
        result["agreement"] = check_agreement(models, device, args.channels_last)
        for pair, agreement in result["agreement"].items():
            log(f"[{device.type}] {pair} logits: max |diff| {agreement['max_abs_diff']:.2e} "
                f"(tolerance {agreement['tolerance']:.1e}): {'agree' if agreement['ok'] else 'DISAGREE'}")
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    pairs = [(SE, PLAIN)]
    if with_peers:
        pairs += [*PEERS.items(), (SE_TIMM_LAYOUT, PLAIN_TV_LAYOUT), (TIMM_SE, TV)]
    runs = [("inference", b) for b in args.infer_batch] + [("train", b) for b in args.train_batch]
    for mode, batch in runs:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, 3, args.size, args.size, generator=gen).to(device, memory_format=fmt)
        if mode == "inference":
            fns = inference_fns(models, x, args.amp)
        else:
            y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
            fns = train_fns(models, x, y, args.amp)
        stats, inner = run_mode(mode, fns, args, device)
        ratios = [ratio(stats, num, den) for num, den in pairs]
        result["modes"][f"{mode}_b{batch}"] = {
            "mode": mode,
            "batch": batch,
            "inner": inner,
            "stats": {k: s.to_dict() for k, s in stats.items()},
            "ratios": [dict(r.to_dict(), target=judge(r, mode, device)[0] or None) for r in ratios],
        }
        log(f"[{device.type}] {mode} (batch {batch}, 3x{args.size}x{args.size}):")
        for s in stats.values():
            log(f"    {s.name:<24} {s.describe()}")
        for r in ratios:
            log(f"    {r.describe()}  {judge(r, mode, device)[1]}")
        spread = max((r.q3 - r.q1) / r.median for r in ratios)
        if spread > NOISY:
            hint = "more --repeats" if args.clock == "cpu" else "--threads 1 --clock cpu"
            log(f"    note: the ratios' interquartile range is {spread:.0%} of their value, more than the "
                f"margins being tested: the machine is busy; rerun when idle, or with {hint}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", nargs="+", default=None,
                   help="devices to run on (default: cpu, and cuda when available)")
    p.add_argument("--repeats", type=int, default=11, help="interleaved rounds of training steps (default 11)")
    p.add_argument("--infer-repeats", type=int, default=None,
                   help="interleaved rounds of inference (default: 3 x --repeats; inference is cheap)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each model first (default 2)")
    p.add_argument("--min-time", type=float, default=0.25,
                   help="seconds one measurement lasts at least; sets the calls per measurement (default 0.25)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--infer-batch", type=int, nargs="*", default=[1, 16],
                   help="inference batch sizes (default 1 16; none: no inference)")
    p.add_argument("--train-batch", type=int, nargs="*", default=[16],
                   help="training-step batch sizes (default 16; none: no training)")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall (default) or cpu: this process's CPU time, for a machine shared with other "
                        "jobs (use with --threads 1; CPU devices only)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--no-timm", action="store_true", help="skip the senet vs timm / torchvision comparisons")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="do not print each round")
    p.add_argument("--json", type=Path, default=None, help="write the results (and machine info) here")
    args = p.parse_args(argv)
    if args.infer_repeats is None:
        args.infer_repeats = 3 * args.repeats
    if args.repeats < 1 or args.infer_repeats < 1 or args.warmup < 0 or args.min_time < 0:
        p.error("need --repeats >= 1, --infer-repeats >= 1, --warmup >= 0, --min-time >= 0")
    if any(b < 1 for b in args.infer_batch + args.train_batch):
        p.error("batch sizes must be >= 1")
    if args.clock == "cpu" and any(torch.device(d).type != "cpu" for d in args.device or ["cpu"]):
        p.error("--clock cpu measures CPU time: use it with --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.clock == "wall"
    devices = args.device or (["cpu"] + (["cuda"] if cuda else []))
    info = machine_info()
    log(f"{info['date']}  {info['cpu']} ({info['cpu_count']} cores), torch {info['torch']} "
        f"({torch.get_num_threads()} threads){', ' + info['gpu'] if 'gpu' in info else ''}")
    log(f"options: clock={args.clock} amp={args.amp} channels_last={args.channels_last} repeats={args.repeats} (inference {args.infer_repeats}) "
        f"warmup={args.warmup} min_time={args.min_time}s")
    results: dict[str, Any] = {"machine": info, "options": {k: (str(v) if isinstance(v, Path) else v)
                                                            for k, v in vars(args).items()}, "devices": {}}
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            log("cuda is not available: skipped")
            continue
        results["devices"][name] = run_device(device, args)
    if args.json is not None:
        write_report(args.json, json.dumps(results, indent=2) + "\n")
        log(f"results written to {args.json}")
    agree = all(a["ok"] for d in results["devices"].values() for a in d.get("agreement", {}).values())
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

"""One GPU session, used well: throughput first, then paired SE / baseline runs that a later
session continues.

A lent GPU comes with about 15 minutes in all and at most 10 minutes a command (see the
README, "A GPU session"). This script is that one command. Nothing is fetched: the data comes
in a carried folder, the package from the working tree.

1. Throughput (bf16 autocast, channels_last, ``torch.compile``): images/s of a training step of
   the CIFAR ResNet-110 and SE-ResNet-110 at batch 128, and of ``senet train``'s ImageNet stream
   pipeline (JPEG decoding by DataLoader workers, random-size crops) for ``se_resnet50`` at 224
   on a synthetic ImageFolder tree it writes.
2. Paired runs: the paper's ``cifar10/se_resnet110`` recipe (164 epochs) and its baseline
   without SE trained the same way (``cifar10-resnet110``), ``--pairs`` seeds each: the runs
   ``senet ablate --study se`` plans (:func:`senet.analysis.ablate.plan_study`), but all
   processes at once on the one GPU. A run folder that is finished is kept, a partial one
   resumed (:func:`senet.analysis.ablate_run.run_state`, as ``ablate`` decides). At the
   deadline the processes are killed (resume from a checkpoint is exact,
   ``tests/test_resume.py``); their run folders are packed into ``state.tar.partNN`` files in
   ``--out`` for the next session's ``--resume-from``.
3. ``results.json`` (throughput, per run: epochs done, last test error, finished or not) and
   ``results.md``, and ``curves.png`` (test error per epoch of every run).

    python benchmarks/gpu_session.py --data .gpu/cifar10-jpeg.tar.gz --out "$OUT" --budget 520
    python benchmarks/gpu_session.py --data .gpu/cifar10-jpeg.tar.gz --out "$OUT" --resume-from .gpu/state
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

PART_BYTES = 15 * 2**20  # what one file back from the device may hold (16 MiB) with a margin
STATE = "state.tar.part"
clock = time.time  # the deadline's clock: tests move it on instead of waiting the budget out


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ------------------------------------------------------------------ 1. throughput
def throughput(models: list[str], batch: int, steps: int, device: str, compiled: bool) -> dict:
    import torch

    from train_speed import make_step

    out = {}
    for name in models:
        step = make_step(name, batch, True, "foreach", compiled=compiled, device=device, bf16=device == "cuda")
        t = time.perf_counter()
        step()
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        first = time.perf_counter() - t
        for _ in range(3):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        per = (time.perf_counter() - t) / steps
        out[name] = {"images_per_s": batch / per, "step_ms": 1e3 * per, "first_step_s": first, "batch": batch,
                     "compiled": compiled, "bf16": device == "cuda", "channels_last": True}
        log(f"throughput {name}: {batch / per:.0f} img/s ({1e3 * per:.1f} ms/step; first step {first:.1f} s)")
    return out


def synthetic_tree(root: Path, classes: int, per_class: int, side: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", max(1, per_class // 4))):
        for c in range(classes):
            folder = root / split / f"c{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side * 5 // 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def senet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "senet", *args]


def stream_throughput(work: Path, model: str, batch: int, steps: int, workers: int, side: int, crop: int,
                      device: str) -> dict:
    """``senet train`` of the ImageNet recipe on a synthetic tree: the whole pipeline's images/s."""
    tree = synthetic_tree(work / "synthetic", classes=8, per_class=max(8, batch * (steps + 2) // 8), side=side)
    out = work / "stream-run"
    cmd = senet_cmd("train", "--recipe", "imagenet/se_resnet50", "--data", str(tree), "--out", str(out),
                    "--no-progress", "--device", device, "--set", f"model.name={model}",
                    "--set", f"data.batch_size={batch}", "--set", f"data.workers={workers}",
                    "--set", f"data.crop={crop}", "--set", f"data.resize={max(crop, side)}",
                    "--set", f"run.max_steps={steps}", "--set", "run.eval_every=1000", "--epochs", "1")
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    from senet.train.rundir import RunDir

    summary = RunDir(out).summary()
    res = {"model": model, "batch": batch, "steps": summary["steps"], "workers": workers, "crop": crop,
           "images_per_s": summary["images_per_s"], "wall_s": time.perf_counter() - t}
    log(f"stream pipeline {model} at {crop}: {res['images_per_s']:.0f} img/s over {res['steps']} steps "
        f"(start-up included)")
    return res


# ------------------------------------------------------------------ 2. paired runs
def unpack(parts_dir: Path, work: Path) -> list[str]:
    parts = sorted(parts_dir.glob(f"{STATE}*"))
    if not parts:
        raise SystemExit(f"--resume-from {parts_dir}: no {STATE}NN files there")
    data = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        tar.extractall(work, filter="data")
    return sorted(p.name for p in (work / "runs").iterdir() if p.is_dir())


def pack(work: Path, out: Path) -> list[Path]:
    from senet.train.rundir import CHECKPOINT, CONFIG, EVENTS, METRICS_CSV, SUMMARY, VERSION, WEIGHTS

    keep = (CONFIG, VERSION, METRICS_CSV, SUMMARY, CHECKPOINT, EVENTS, WEIGHTS)  # not the previous
    buf = io.BytesIO()  # checkpoint: the files back are few and small
    with tarfile.open(fileobj=buf, mode="w:") as tar:
        for run in sorted((work / "runs").iterdir()):
            for name in keep:
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"runs/{run.name}/{name}")
    data = buf.getvalue()
    paths = []
    for i in range(0, max(1, len(data)), PART_BYTES):
        path = out / f"{STATE}{i // PART_BYTES:02d}"
        path.write_bytes(data[i:i + PART_BYTES])
        paths.append(path)
    return paths


def run_name(plan, run) -> str:
    """``cifar10-resnet110-seed0``: a run named as the built-in recipe of its model is (the
    study recipe's folder, the model without its ``cifar_`` prefix), and its seed."""
    group = Path(plan.recipe).parent.name or Path(plan.recipe).stem
    return f"{group}-{run.cell.model.removeprefix('cifar_')}-seed{run.seed}"


def paired_runs(work: Path, plan, deadline: float, device: str) -> list[dict]:
    """Every run of ``plan`` as its own ``senet train`` process, all at once, until they end or
    the deadline: a finished run is kept, a partial one resumed, a fresh one created with the
    plan's configuration first (so that every start is ``senet train --resume``)."""
    from senet.analysis.ablate_run import run_state
    from senet.train.rundir import FINISHED, FRESH, PARTIAL, RunDir

    runs_dir = work / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for run in plan.runs:
        name = run_name(plan, run)
        folder = runs_dir / name
        state = run_state(folder, run.config)
        if state == FINISHED:
            procs.append((name, None, None))
            continue
        if state == FRESH:
            RunDir.create(folder, run.config).release()
        cmd = senet_cmd("train", "--resume", str(folder), "--no-progress", "--device", device)
        logf = open(work / f"{name}.log", "a")
        procs.append((name, subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True),
                      logf))
        log(f"started {name}{' (resumed)' if state == PARTIAL else ''}")
    while any(p is not None and p.poll() is None for _, p, _ in procs) and clock() < deadline:
        time.sleep(1.0)
    status = []
    for name, p, logf in procs:
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # resume from its last checkpoint is exact
            p.wait()
            state = "stopped at the deadline"
        elif p is None:
            state = "finished earlier"
        else:
            state = "finished" if p.returncode == 0 else f"failed (exit {p.returncode})"
        if logf:
            logf.close()
        status.append({"run": name, "state": state, **run_progress(runs_dir / name)})
        log(f"{name}: {state}, {status[-1]['epochs']} epoch(s) done, last test error {status[-1]['test_top1_err']}")
    return status


def run_progress(folder: Path) -> dict:
    from senet.train.rundir import FINISHED, RunDir

    run = RunDir(folder)
    rows = [r for r in run.metrics() if "test_top1_err" in r]
    last = rows[-1] if rows else {}
    return {"epochs": last.get("epoch", 0.0), "test_top1_err": last.get("test_top1_err"),
            "curve": [(r["epoch"], r["test_top1_err"]) for r in rows], "finished": run.state() == FINISHED}


# ------------------------------------------------------------------ 3. report
def report(out: Path, results: dict) -> None:
    lines = [f"# GPU session {results['date']}", "", f"Device: {results['device']}", "", "## Throughput", "",
             "| what | images/s | ms/step | first step (s) |", "|---|---|---|---|"]
    for name, r in results["throughput"].items():
        lines.append(f"| {name} train step, batch {r['batch']}, bf16, channels_last, "
                     f"{'compiled' if r['compiled'] else 'eager'} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | "
                     f"{r['first_step_s']:.1f} |")
    s = results.get("stream") or {}
    if "images_per_s" in s:
        lines.append(f"| {s['model']} `senet train` stream pipeline at {s['crop']}, batch {s['batch']}, "
                     f"{s['workers']} workers | {s['images_per_s']:.0f} | - | - |")
    lines += ["", "## Paired runs", "", "| run | state | epochs | last test top-1 error % |", "|---|---|---|---|"]
    for r in results["runs"]:
        err = f"{100 * r['test_top1_err']:.2f}" if r["test_top1_err"] is not None else "-"
        lines.append(f"| {r['run']} | {r['state']} | {r['epochs']:g} | {err} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    curves = [r for r in results["runs"] if r["curve"]]
    if curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for r in curves:
            xs, ys = zip(*r["curve"])
            ax.plot(xs, [100 * y for y in ys], "-" if "se_" in r["run"] else "--", label=r["run"])
        ax.set(xlabel="epoch", ylabel="test top-1 error (%)", title="paired runs (solid: SE)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the CIFAR-10 archive or folder (carried)")
    p.add_argument("--out", required=True, help="where results and the packed run state go ($OUT)")
    p.add_argument("--resume-from", help="a folder holding an earlier session's state.tar.partNN files")
    p.add_argument("--budget", type=float, default=520.0, help="seconds this script may take in all")
    p.add_argument("--reserve", type=float, default=25.0, help="seconds kept for packing and the report")
    p.add_argument("--device", default="cuda")
    p.add_argument("--recipe", default="cifar10/se_resnet110",
                   help="the SE recipe; its baseline without SE is trained the same way (senet ablate --study se)")
    p.add_argument("--pairs", type=int, default=2, help="seeds of each of the two, all trained at once")
    p.add_argument("--set", dest="overrides", action="append", default=["run.checkpoint_every=100"],
                   help="override for every paired run (senet train --set)")
    p.add_argument("--throughput-models", nargs="*", default=["cifar_resnet110", "cifar_se_resnet110"])
    p.add_argument("--throughput-steps", type=int, default=50)
    p.add_argument("--throughput-batch", type=int, default=128)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--stream-model", default="se_resnet50")
    p.add_argument("--stream", nargs=5, type=int, default=[256, 30, 14, 256, 224],
                   metavar=("BATCH", "STEPS", "WORKERS", "SIDE", "CROP"), help="the stream pipeline check (0 steps: skip it)")
    args = p.parse_args(argv)
    start = clock()
    deadline = start + args.budget - args.reserve
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from senet.analysis.ablate import plan_study
    from timing import machine_info

    # the runs `senet ablate --study se` would train, planned before anything is spent
    plan = plan_study("se", args.recipe, [*args.overrides, {"data": {"path": args.data}}], seeds=args.pairs)

    info = machine_info()
    device = args.device if args.device != "cuda" or torch.cuda.is_available() else "cpu"
    results: dict = {"date": info["date"], "machine": info, "device": torch.cuda.get_device_name() if device == "cuda"
                     else f"cpu ({info.get('cpu', '')})", "throughput": {}, "stream": {}, "runs": []}
    work = Path(tempfile.mkdtemp(prefix="senet-gpu-"))
    resumed = unpack(Path(args.resume_from), work) if args.resume_from else []
    if resumed:
        log(f"resuming {len(resumed)} run(s) from {args.resume_from}: {', '.join(resumed)}")
    torch.backends.cudnn.benchmark = True
    results["throughput"] = throughput(args.throughput_models, args.throughput_batch, args.throughput_steps, device,
                                       compiled=not args.no_compile)
    batch, steps, workers, side, crop = args.stream
    if steps:
        results["stream"] = stream_throughput(work, args.stream_model, batch, steps, workers, side, crop, device)
    log(f"paired runs until {time.strftime('%H:%M:%S', time.localtime(deadline))}")
    results["runs"] = paired_runs(work, plan, deadline, device)
    parts = pack(work, out)
    results["state_parts"] = [p.name for p in parts]
    results["seconds"] = clock() - start
    report(out, results)
    size = sum(p.stat().st_size for p in parts) / 2**20
    log(f"wrote {out / 'results.md'}, {len(parts)} state part(s) ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

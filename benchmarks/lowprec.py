"""Low-precision CPU inference: int8 ONNX and bf16 eager against fp32, speed and accuracy.

Speed (one process, interleaved rounds, see ``timing.py``; medians): for each model and batch
size, the same network as

* ``torch_fp32``: PyTorch eager, fp32, ``torch.inference_mode``, channels_last;
* ``torch_bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)`` (what
  ``senet predict / eval --precision bf16`` run);
* ``onnx_fp32``: the fp32 ONNX file ``senet export`` writes, in onnxruntime;
* ``onnx_int8``: the int8 file ``senet export --int8`` writes (SE gate and scaling in int8);
* ``onnx_int8_se_float``: the int8 file with the SE gate and scaling kept in fp32
  (``Int8(se_gate="float")``).

onnxruntime runs with as many intra-op threads as torch, without busy-waiting between runs
(its spinning threads would otherwise take the cores from the PyTorch rounds that follow:
a first run measured PyTorch fp32 at 2.0 s for one se_resnet50 image that way). Goals (issue 22): bf16 >= 2x and int8
>= 3x the speed of PyTorch fp32 of the same network. Where the time goes: onnxruntime's own
profile of the int8 file (share of time per operator type) and torch's profiler for bf16 (top
operators).

Accuracy (``--run``: a trained CIFAR run): fp32, bf16 and both int8 files on the whole test
split, calibrated on ``--calibration`` images of the train split: top-1 error and agreement
with fp32 (top-1, mean |probability difference|).

The speed models have random weights (speed does not depend on them); their int8 files are
calibrated on random inputs and not refused (``min_agreement=0``).

    python benchmarks/lowprec.py --run /work/runs/prune-base-se_resnet20-e15 \\
        --json docs/results/lowprec.json --csv docs/results/lowprec.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from timing import compare, machine_info, ratio, write_report  # noqa: E402

SPEED_CASES = (("se_resnet50", 224), ("cifar_se_resnet20", 32))
BASE = "torch_fp32"
GOALS = {"torch_bf16": 2.0, "onnx_int8": 3.0}


def log(msg: str) -> None:
    print(msg, flush=True)


def onnx_files(model: torch.nn.Module, side: int, work: Path, calibration: torch.Tensor,
               held_out: torch.Tensor, min_agreement: float) -> dict[str, Any]:
    """The fp32 ONNX file of ``model`` (dynamic batch) and its two int8 files: name -> (path, result)."""
    from senet.export import export_model
    from senet.int8 import Int8, int8_ready, quantize_checked
    from senet.utils.quiet import quiet

    with quiet():
        fp32 = export_model(int8_ready(model), work / "fp32.onnx", input_size=(3, side, side), dynamic_batch=True)
    out: dict[str, Any] = {"onnx_fp32": (fp32.path, None)}
    for name, gate in (("onnx_int8", "int8"), ("onnx_int8_se_float", "float")):
        path = work / f"{name}.onnx"
        q = quantize_checked(model, fp32.path, fp32.shapes, path,
                             Int8(calibration, held_out, min_agreement=min_agreement, se_gate=gate))
        out[name] = (path, q)
    return out


def where_int8_time_goes(path: Path, x: torch.Tensor, threads: int, runs: int = 5) -> dict[str, float]:
    """Share of onnxruntime's node time per operator type, over ``runs`` runs on ``x``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0)
    total = sum(by_op.values()) or 1.0
    return dict(sorted(((k, v / total) for k, v in by_op.items()), key=lambda kv: -kv[1]))


def where_bf16_time_goes(fn: Callable[[], object], top: int = 6) -> dict[str, float]:
    """Share of self CPU time of the top operators of one bf16 call (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    rows = sorted(prof.key_averages(), key=lambda r: -r.self_cpu_time_total)
    total = sum(r.self_cpu_time_total for r in rows) or 1.0
    return {r.key: r.self_cpu_time_total / total for r in rows[:top]}


def speed(args: argparse.Namespace, threads: int) -> list[dict[str, Any]]:
    import senet
    from senet.onnx_runtime import onnx_session

    rows = []
    for name, side in SPEED_CASES:
        torch.manual_seed(0)
        model = senet.create_model(name).eval()
        g = torch.Generator().manual_seed(0)
        calibration = torch.randn(args.speed_calibration, 3, side, side, generator=g)
        held_out = torch.randn(8, 3, side, side, generator=g)
        with tempfile.TemporaryDirectory() as tmp:
            log(f"{name}: exporting fp32 and int8 ONNX files ...")
            files = onnx_files(model, side, Path(tmp), calibration, held_out, 0.0)
            sessions = {k: onnx_session(p, threads=threads, spin=False) for k, (p, _) in files.items()}
            eager = model.to(memory_format=torch.channels_last)
            for batch in args.batch:
                x = torch.randn(batch, 3, side, side, generator=g)
                xcl = x.contiguous(memory_format=torch.channels_last)
                xn = x.numpy()

                def torch_fp32() -> object:
                    with torch.inference_mode():
                        return eager(xcl)

                def torch_bf16() -> object:
                    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
                        return eager(xcl)

                fns: dict[str, Callable[[], object]] = {"torch_fp32": torch_fp32, "torch_bf16": torch_bf16}
                for k, s in sessions.items():
                    fns[k] = (lambda s=s: s.run(None, {s.get_inputs()[0].name: xn}))
                rounds = args.rounds if name != "se_resnet50" or batch == 1 else max(3, args.rounds - 2)
                log(f"{name} at {side}, batch {batch}: {rounds} rounds ...")
                stats = compare(fns, repeats=rounds, inner=1, warmup=1)
                row: dict[str, Any] = {"model": name, "side": side, "batch": batch, "rounds": rounds,
                                       "seconds": {k: st.median for k, st in stats.items()},
                                       "speedup_vs_torch_fp32": {}, "stats": {k: st.to_dict() for k, st in stats.items()}}
                for k in stats:
                    if k != BASE:
                        r = ratio(stats, BASE, k)  # time(fp32) / time(k): how many times faster k is
                        row["speedup_vs_torch_fp32"][k] = r.median
                log("  " + ", ".join(f"{k} {1e3 * st.median:.2f} ms" for k, st in stats.items()))
                log("  speed-up vs torch fp32: " + ", ".join(
                    f"{k} {v:.2f}x" + (f" (goal {GOALS[k]:g}x: {'met' if v >= GOALS[k] else 'missed'})"
                                       if k in GOALS else "") for k, v in row["speedup_vs_torch_fp32"].items()))
                if batch == max(args.batch):
                    row["int8_time_by_op"] = where_int8_time_goes(files["onnx_int8"][0], x, threads)
                    row["bf16_time_by_op"] = where_bf16_time_goes(torch_bf16)
                rows.append(row)
            del sessions
    return rows


def accuracy(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    import senet
    from senet.data import load_split
    from senet.data.transforms import batch_transform, resolve_data_config
    from senet.int8 import Int8
    from senet.lowprec import at_precision, bf16_units, score_against_fp32
    from senet.onnx_runtime import onnx_session, run_session
    from senet.train.evaluate import eval_batches

    run = Path(args.run)
    model = senet.create_model(pretrained=run / "model.safetensors").eval()
    int8 = Int8.from_dataset(model, "cifar10", data=args.data, calibration=args.calibration, held_out=512)
    test = load_split("cifar10", "test", data=args.data)
    cfg = resolve_data_config(model)
    out: dict[str, Any] = {"run": str(run), "calibration_images": args.calibration, "test_images": len(test.labels)}
    with tempfile.TemporaryDirectory() as tmp:
        log(f"{run.name}: int8 files calibrated on {args.calibration} train images ...")
        files = onnx_files(model, cfg.crop, Path(tmp), int8.calibration, int8.held_out, 0.0)
        others: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        if bf16_units("cpu"):
            others["torch_bf16"] = at_precision(model, "bf16", "cpu")
        for k in ("onnx_fp32", "onnx_int8", "onnx_int8_se_float"):
            session = onnx_session(files[k][0], threads=threads, spin=False)
            others[k] = (lambda x, s=session: run_session(s, x, len(x)))
        batches = eval_batches(test.images, test.labels, batch_transform(cfg, tuple(test.images.shape[-2:])),
                               batch_size=250, device="cpu")
        log(f"scoring fp32, {', '.join(others)} on {len(test.labels)} test images ...")
        scored = score_against_fp32(model, batches, others)
    out["results"] = {k: {"top1_err": v.errors["top1_err"], "top5_err": v.errors["top5_err"],
                          **({"agreement": v.agreement.to_json()} if v.agreement else {})} for k, v in scored.items()}
    for k, v in out["results"].items():
        a = v.get("agreement")
        log(f"  {k}: top-1 error {100 * v['top1_err']:.2f}%" +
            (f", top-1 agreement {100 * a['top1']:.2f}%, mean |dp| {a['mean_abs_prob_diff']:.2e}" if a else ""))
    return out


def csv_rows(result: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["kind", "model", "side", "batch", "variant", "median_ms", "speedup_vs_torch_fp32", "top1_err",
                "top1_agreement", "mean_abs_prob_diff"])
    for row in result.get("speed", []):
        for k, sec in row["seconds"].items():
            w.writerow(["speed", row["model"], row["side"], row["batch"], k, f"{1e3 * sec:.3f}",
                        f"{row['speedup_vs_torch_fp32'].get(k, 1.0):.3f}", "", "", ""])
    acc = result.get("accuracy")
    if acc:
        for k, v in acc["results"].items():
            a = v.get("agreement") or {}
            w.writerow(["accuracy", Path(acc["run"]).name, 32, 250, k, "", "", f"{v['top1_err']:.4f}",
                        f"{a['top1']:.4f}" if a else "", f"{a['mean_abs_prob_diff']:.3e}" if a else ""])
    return buf.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a trained CIFAR-10 run folder for the accuracy part")
    p.add_argument("--data", default=None, help="CIFAR-10 (default: searched, see README)")
    p.add_argument("--calibration", type=int, default=256, help="calibration images of the accuracy part")
    p.add_argument("--speed-calibration", type=int, default=16, help="random calibration inputs of the speed part")
    p.add_argument("--batch", type=int, nargs="*", default=[1, 16])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default torch's)")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from senet.lowprec import bf16_units

    result: dict[str, Any] = {"machine": machine_info(), "threads": threads, "bf16_units": bf16_units("cpu")}
    if not result["bf16_units"]:
        log("this CPU has no bf16 units: bf16 is timed as PyTorch emulates it")
    if args.run:
        result["accuracy"] = accuracy(args, threads)
    if not args.no_speed:
        result["speed"] = speed(args, threads)
    if args.json:
        write_report(args.json, json.dumps(result, indent=2) + "\n")
    if args.csv:
        write_report(args.csv, csv_rows(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

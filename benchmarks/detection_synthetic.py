"""Faster R-CNN + FPN with an SE trunk against the same detector with a plain trunk, on a
synthetic detection set (a CPU-sized stand-in for the paper's COCO experiment, section 5.3,
Table 7: only the trunk differs between the rows).

Each (trunk, seed) run builds ``senet.detection.fasterrcnn_fpn(trunk, ...)``, trains it on
``SyntheticShapes`` (coloured rectangles, ellipses and triangles on a plain background; the
class is the shape) with SGD and the paper's "2x" schedule shape scaled to ``--steps`` (linear
warm-up, LR / 10 at 2/3 and at 11/12 of the steps: the 16th and 22nd of 24 epochs), and
evaluates COCO's box AP (``senet.detection.mean_average_precision``: AP@[.5:.95], AP@.5) on a
held-out set every ``--eval-every`` steps. A seed fixes the data, its order and the
initialisation; the trunks of one seed see the same images in the same order. Without
``--weights-backbone`` the trunks start from random weights (with trainable BN, as torchvision
builds a detector without weights); the paper starts from ImageNet weights.

    python benchmarks/detection_synthetic.py                                 # se_resnet18 vs resnet18
    python benchmarks/detection_synthetic.py --steps 600 --seeds 0 1 2 --out runs/det
    python benchmarks/detection_synthetic.py --trunks se_resnet50 resnet50 --device cuda \\
        --weights-backbone se_resnet50=se_resnet50.safetensors --weights-backbone resnet50=true

Writes ``results.json`` (configuration, command, machine, wall time, final AP per run, mean
and spread per trunk), ``losses.csv`` (per step), ``eval.csv`` (AP per evaluation) and
``curves.png`` (training loss and AP@.5 against steps) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import machine_info  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from senet.detection import SyntheticShapes, collate, fasterrcnn_fpn, mean_average_precision  # noqa: E402
from senet.train.rundir import code_version  # noqa: E402

LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up from LR / 1000 (torchvision's detection reference), then the 2x schedule's
    two drops at 16/24 and 22/24 of the steps."""
    if step < args.warmup:
        return args.lr * (0.001 + (1 - 0.001) * step / args.warmup)
    return args.lr * 0.1 ** sum(step >= round(f * args.steps) for f in (16 / 24, 22 / 24))


def build(trunk: str, num_classes: int, args: argparse.Namespace) -> torch.nn.Module:
    weights: Any = args.weights.get(trunk)
    if isinstance(weights, str) and weights.lower() == "true":
        weights = True
    return fasterrcnn_fpn(
        trunk, num_classes, weights_backbone=weights, trainable_layers=args.trainable_layers,
        fpn_channels=args.fpn_channels, min_size=args.size, max_size=args.size,
        # proposals and sampled RoIs for a few shapes per small image, not COCO's 2000 and 512: at 512
        # RoIs and FPN width 128 the box head's FC layers cost more than the trunk on a CPU
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100, box_batch_size_per_image=64,
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: SyntheticShapes, device: torch.device, batch: int) -> dict[str, Any]:
    model.eval()
    predictions, targets = [], []
    for start in range(0, len(data), batch):
        images, target = collate([data[i] for i in range(start, min(start + batch, len(data)))])
        out = model([x.to(device) for x in images])
        predictions += [{k: v.cpu() for k, v in o.items()} for o in out]
        targets += target
    model.train()
    return mean_average_precision(predictions, targets)


def run(trunk: str, seed: int, args: argparse.Namespace, device: torch.device,
        rows: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, Any]:
    train = SyntheticShapes(args.train_images, args.size, seed=1000 + seed)
    val = SyntheticShapes(args.val_images, args.size, seed=10**6 + seed)
    torch.manual_seed(seed)
    model = build(trunk, train.num_classes, args).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    order = torch.Generator().manual_seed(seed)  # the same image order for every trunk
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate, generator=order)
    batches = iter(loader)
    start = time.perf_counter()
    bar = tqdm(range(args.steps), desc=f"{trunk} seed {seed}", unit="step", dynamic_ncols=True,
               disable=args.no_progress)
    result: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for step in bar:
        try:
            images, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, targets = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        parts = model([x.to(device) for x in images], [{k: v.to(device) for k, v in t.items()} for t in targets])
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise SystemExit(f"{trunk} seed {seed}: loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append({"trunk": trunk, "seed": seed, "step": step + 1, "lr": lr_at(step, args), "loss": loss.item(),
                     **{k: parts[k].item() for k in LOSSES}})
        evaluated = (step + 1) % args.eval_every == 0 or step + 1 == args.steps
        if evaluated:
            result = evaluate(model, val, device, args.batch_size)
            evals.append({"trunk": trunk, "seed": seed, "step": step + 1, "map": result["map"],
                          "map_50": result["map_50"], "map_75": result["map_75"]})
            shown["AP50"] = f"{result['map_50']:.3f}"
        if evaluated or step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", **shown)
    bar.close()
    return {"trunk": trunk, "seed": seed, "map": result["map"], "map_50": result["map_50"],
            "map_75": result["map_75"], "per_class": result["per_class"],
            "final_loss": statistics.fmean(r["loss"] for r in rows[-min(20, args.steps):]),
            "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in params), "seconds": time.perf_counter() - start}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for trunk in dict.fromkeys(r["trunk"] for r in runs):
        mine = [r for r in runs if r["trunk"] == trunk]
        out[trunk] = {"seeds": [r["seed"] for r in mine]}
        for key in ("map", "map_50", "map_75"):
            values = [r[key] for r in mine]
            out[trunk][key] = statistics.fmean(values)
            out[trunk][f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
    return out


def plot(rows: list[dict[str, Any]], evals: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    runs = dict.fromkeys((r["trunk"], r["seed"]) for r in rows)
    for n, (trunk, seed) in enumerate(runs):
        colour = f"C{n % 10}"  # one colour per run in both panels
        losses = [r["loss"] for r in rows if (r["trunk"], r["seed"]) == (trunk, seed)]
        k = max(1, len(losses) // 30)  # moving average: single steps are noisy
        smooth = [statistics.fmean(losses[max(0, i - k + 1): i + 1]) for i in range(len(losses))]
        left.plot(range(1, len(losses) + 1), smooth, color=colour, label=f"{trunk} seed {seed}")
        points = [e for e in evals if (e["trunk"], e["seed"]) == (trunk, seed)]
        steps = [e["step"] for e in points]
        right.plot(steps, [e["map_50"] for e in points], "o-", color=colour, label=f"{trunk} seed {seed} AP@.5")
        right.plot(steps, [e["map"] for e in points], "s--", color=colour, label=f"{trunk} seed {seed} AP")
    left.set(xlabel="step", ylabel="training loss (moving average)", title="Faster R-CNN + FPN, synthetic shapes")
    right.set(xlabel="step", ylabel="validation box AP", title="COCO AP@.5 and AP@[.5:.95]", ylim=(0, 1))
    left.legend(fontsize=8)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trunks", nargs="+", default=["se_resnet18", "resnet18"], help="senet model names")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=160, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=128, help="image side (pixels)")
    p.add_argument("--train-images", type=int, default=480)
    p.add_argument("--val-images", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02, help="the paper's detector: 0.02 at batch 16")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: steps / 12)")
    p.add_argument("--eval-every", type=int, default=None, help="default: steps / 4")
    p.add_argument("--fpn-channels", type=int, default=64, help="FPN width (the paper's detector: 256)")
    p.add_argument("--trainable-layers", type=int, default=None, help="trunk stages trained (default: torchvision's)")
    p.add_argument("--weights-backbone", action="append", default=[], metavar="TRUNK=FILE|true",
                   help="ImageNet weights for a trunk (a file, or true for the released ones)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("runs/detection-synthetic"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.warmup = max(1, args.steps // 12) if args.warmup is None else args.warmup
    args.eval_every = max(1, args.steps // 4) if args.eval_every is None else args.eval_every
    args.weights = dict(w.split("=", 1) for w in args.weights_backbone)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    runs = [run(trunk, seed, args, device, rows, evals) for seed in args.seeds for trunk in args.trunks]
    wall = time.perf_counter() - started
    summary = summarise(runs)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {"command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "config": config,
              "machine": machine_info(), "code": code_version(), "wall_seconds": wall, "summary": summary,
              "runs": runs}
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_csv(args.out / "losses.csv", rows)
    write_csv(args.out / "eval.csv", evals)
    plot(rows, evals, args.out / "curves.png")
    for trunk, s in summary.items():
        spread = f" (sd {s['map_50_std']:.3f} / {s['map_std']:.3f})" if s["map_std"] is not None else ""
        print(f"{trunk:>16}: AP@.5 {s['map_50']:.3f}, AP {s['map']:.3f}{spread} over seeds {s['seeds']}")
    print(f"wall {wall:.0f} s; wrote {args.out}/results.json, losses.csv, eval.csv, curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

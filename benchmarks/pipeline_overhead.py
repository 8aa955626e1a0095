"""Does the input pipeline limit training? ``senet train`` against a bare training loop.

Runs the real trainer (:class:`senet.train.Trainer`: data order, batched augmentation, LR
schedule, meters, non-finite check, progress bar, checkpoints) for several short epochs of
real CIFAR-10 data and, after each epoch, a bare loop of the same number of steps on the same
model architecture with pre-made input tensors (forward, cross-entropy, backward, SGD step,
nothing else). Epochs and bare loops alternate, so each round's ratio compares like with like;
the figure is the median of the per-round ratios of images/s (trainer / bare). The issue's
target: at least 0.95.

    python benchmarks/pipeline_overhead.py                       # cifar_resnet20, CPU
    python benchmarks/pipeline_overhead.py --model cifar_se_resnet110 --device cuda --steps 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from timing import cuda_sync, machine_info, write_report  # noqa: E402

from senet.utils.device import DEVICES  # noqa: E402

TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cifar_resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (and per bare loop)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--data", help="CIFAR-10 location (default: searched as by `senet train`)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from senet import create_model
    from senet.train import RunDir, Trainer, resolve

    rounds: list[dict[str, float]] = []
    cfg = resolve("default", [{
        "model": {"name": args.model},
        "data": {"path": args.data, "batch_size": args.batch_size, "train_subset": args.steps * args.batch_size,
                 "test_subset": 500},
        "schedule": {"name": "constant", "epochs": args.rounds + 1, "warmup_epochs": 0},
        "run": {"device": args.device, "eval_every": 10**6},
    }])

    class Measured(Trainer):
        """The trainer, plus a bare loop of the same length after every epoch."""

        def _end_epoch(self) -> None:
            trainer_ips = self.meters["count"] / self.meters["train_seconds"]
            super()._end_epoch()
            if self.epoch == 1:  # the first epoch warms up both
                bare_loop()
                return
            seconds = bare_loop()
            bare_ips = args.steps * args.batch_size / seconds
            rounds.append({"trainer_images_per_s": trainer_ips, "bare_images_per_s": bare_ips,
                           "ratio": trainer_ips / bare_ips})
            print(f"  round {len(rounds)}: senet train {trainer_ips:.1f} img/s, bare loop {bare_ips:.1f} img/s, "
                  f"ratio {trainer_ips / bare_ips:.3f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Measured(cfg, RunDir.create(Path(tmp) / "run", cfg), progress=False, log=lambda s: None)
        device = trainer.device
        sync = cuda_sync(device.type) if device.type == "cuda" else (lambda: None)
        bare = create_model(args.model, num_classes=10).to(device, memory_format=torch.channels_last
                                                           if trainer.channels_last else torch.contiguous_format)
        opt = torch.optim.SGD(bare.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                              nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
        xs = [trainer.source.augment.normalize(trainer.source.train_images[i * args.batch_size:(i + 1) * args.batch_size]
                                        .to(device)) for i in range(args.steps)]
        ys = [trainer.source.train_labels[i * args.batch_size:(i + 1) * args.batch_size] for i in range(args.steps)]

        from senet.train.evaluate import autocast_for

        def bare_loop() -> float:
            bare.train()
            sync()
            start = time.perf_counter()
            for x, y in zip(xs, ys):
                with autocast_for(device, trainer.precision):
                    loss = F.cross_entropy(bare(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync()
            return time.perf_counter() - start

        print(f"{args.model}, batch {args.batch_size}, {args.steps} steps per round, {args.rounds} rounds, "
              f"{device} {trainer.precision}", flush=True)
        trainer.fit()

    ratios = [r["ratio"] for r in rounds]
    med = statistics.median(ratios)
    verdict = "PASS" if med >= TARGET else "FAIL"
    print(f"senet train / bare loop images/s: median {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) "
          f"target >= {TARGET}: {verdict}")
    if args.json:
        write_report(args.json, json.dumps({"machine": machine_info(), "model": args.model,
                                            "batch_size": args.batch_size, "steps": args.steps,
                                            "device": str(device), "rounds": rounds, "median_ratio": med},
                                           indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

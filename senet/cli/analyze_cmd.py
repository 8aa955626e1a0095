"""``senet analyze``: the excitations of every SE block on images of a few classes (paper section 7).

Writes into ``--out`` (default ``<run>/analysis``, or ``analysis/<model>`` for ``--weights``):
``excitations.csv`` / ``.safetensors``, ``importance.csv`` / ``.safetensors``,
``specificity.csv`` (formats: :mod:`senet.analysis.excitation_stats`), ``figure6.png`` and
``figure7.png``, and prints a per-block summary of how class-specific the excitations are.
A class with fewer than ``--per-class`` images in the split is used whole, with a warning.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from senet.cli.model_source import add_source_arguments
from senet.cli.options import add_device, nonnegative_int, positive_int

if TYPE_CHECKING:
    from senet.analysis.excitation import SEBlock

HELP = "record the SE excitations of a run or weight file on chosen classes: CSVs, Fig. 6/7, specificity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p, data_default="the run's, else searched")
    p.add_argument("--classes", help="comma-separated class names or indices (default: all if <= 10, else the first 4)")
    p.add_argument("--per-class", type=positive_int, default=50, help="images per class (default 50)")
    p.add_argument("--channels", type=positive_int, default=50,
                   help="channels sampled per block in the figures (default 50)")
    p.add_argument("--blocks", help="SE blocks of the figures, e.g. SE_4_1,SE_4_2 (default: the last of each stage)")
    p.add_argument("--figure7-class", metavar="CLASS", help="class of figure 7 (default: the first chosen class)")
    p.add_argument("--first", action="store_true", help="take the first images of each class, not a seeded sample")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the image and channel samples (default 0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/analysis or analysis/<model>)")
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one when stderr is a tty)")


def _figure_blocks(spec: str | None, blocks: list[SEBlock]) -> list[SEBlock]:
    """The blocks named by ``--blocks``, by default the last one of each stage (as in Fig. 6)."""
    from senet.analysis.excitation import last_block_per_stage

    if not spec:
        return last_block_per_stage(blocks)
    by_name = {b.name: b for b in blocks}
    chosen = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in by_name:
            raise ValueError(f"unknown SE block {name!r} in --blocks; this model has {', '.join(by_name)}")
        chosen.append(by_name[name])
    if not chosen:
        raise ValueError("--blocks is empty; give SE block names such as SE_4_1")
    return chosen


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings
    from pathlib import Path


    from senet.analysis.excitation import (
        find_se_blocks,
        parse_classes,
        record_excitations,
        sample_channels,
        select_per_class,
    )
    from senet.analysis.excitation_plots import plot_class_means, plot_class_spread
    from senet.analysis.excitation_stats import analyse, summary_table, write_outputs
    from senet.cli.model_source import load_source
    from senet.data import load_split
    from senet.data.transforms import batch_transform, check_eval_sizes, resolve_data_config
    from senet.utils.device import resolve_device

    source = load_source(args)
    name, model, meta = source.name, source.model, source.meta
    dataset, data = source.dataset, source.data
    blocks = find_se_blocks(model)  # fails early for a model without SE
    fig_blocks = _figure_blocks(args.blocks, blocks)
    out = Path(args.out) if args.out else (Path(args.run) / "analysis" if args.run else Path("analysis") / name)

    ds = load_split(dataset, args.split, data=data)
    outputs = model.num_classes or None
    if meta.classes and list(meta.classes) != list(ds.classes):
        print(f"warning: the model was trained on other classes ({', '.join(meta.classes[:5])}, ...) than those of "
              f"{ds.source}; excitations are grouped by the data's classes", file=sys.stderr)
    elif outputs is not None and outputs != len(ds.classes):
        print(f"warning: the model has {outputs} outputs but {ds.source} has {len(ds.classes)} classes",
              file=sys.stderr)
    classes = parse_classes(args.classes, ds.classes)
    fig7 = parse_classes(args.figure7_class, ds.classes)[0] if args.figure7_class else classes[0]
    if fig7 not in classes:
        raise ValueError(f"--figure7-class {ds.classes[fig7]!r} is not among the chosen classes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = select_per_class(ds.labels, classes, args.per_class, seed=None if args.first else args.seed,
                               class_names=ds.classes)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)

    # the preprocessing the weights were trained with (their pretrained config), as eval and predict
    cfg = resolve_data_config(model)
    check_eval_sizes(model, cfg, batch_size=args.batch_size, images=len(idx))
    transform = batch_transform(cfg, ds.images.shape[-2:])
    device = resolve_device(args.device)
    model.to(device)
    exc = record_excitations(
        model, ds.images[idx], ds.labels[idx], transform,
        image_ids=idx, classes=ds.classes, batch_size=args.batch_size, device=device,
        progress=sys.stderr.isatty() and not args.no_progress,
    )
    stats = analyse(exc)
    paths = write_outputs(exc, stats, out)
    picked = {b.name: sample_channels(b.channels, args.channels, args.seed) for b in fig_blocks}
    chosen = ", ".join(ds.classes[c] for c in classes)
    paths["figure6.png"] = plot_class_means(stats, fig_blocks, picked, ds.classes, out / "figure6.png",
                                            title=f"{name}: mean excitation per class (paper Fig. 6)")
    paths["figure7.png"] = plot_class_spread(stats, fig_blocks, picked, fig7, ds.classes, out / "figure7.png")
    print(f"{name} on {ds.source} ({args.split}): {len(exc.labels)} images of {len(classes)} classes ({chosen}), "
          f"{len(blocks)} SE blocks")
    print(summary_table(stats, blocks))
    print(f"wrote {', '.join(sorted(paths))} to {out}")
    return 0

"""Excitations of SE blocks: recording them with forward hooks and the statistics of paper section 7.

Section 7 (Fig. 6, 7) looks at the excitation ``s`` (eq. 3) of SE blocks for images of a few
classes: early blocks excite channels the same way whatever the class, later ones become
class-specific, and the last stage saturates towards 1. This module records ``s`` and
measures that numerically.

**Block names.** ``SE_<stage>_<block>`` as in the paper (``SE_5_2``: second block of
``conv5_x``). The stage is the number the model's own ``se_stages`` keyword uses: for the
ImageNet ResNet family stages 2-5 (``conv2_x`` ... ``conv5_x``, the stem is stage 1); for the
CIFAR families (CIFAR ResNets, WRN, Shake-Shake) stages 2, 3, 4 (the stem is stage 1); for
the other families the ``_common`` rule of :mod:`senet.models` (stage ``s`` holds units whose
output is ``1/2**s`` of the input side). A senet model declares these numbers in its
``feature_info`` (:func:`senet.models.module_stages`), the same ones ``se_stages`` takes. Other
models (e.g. a torchvision ResNet after :func:`senet.add_se`): a block under ``layer<i>`` is in
stage ``i + 1`` (the torchvision/timm ResNet layout), otherwise stage containers are numbered
1, 2 ... in order. The block number counts from 1 within the stage: the index of the block in its
``nn.Sequential`` (``layer3.4.se`` is block 5), or the SE block's rank within the stage where
the blocks carry no index (BN-Inception's ``3c``, ``4a`` ...).

The statistics of the recorded excitations (class-specificity score, channel importance) are in
:mod:`senet.analysis.excitation_stats`.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from senet.errors import SenetError
from senet.layers.se import SqueezeExcite
from senet.models._features import module_stages

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SEBlock:
    """One SE block of a model: its paper name, module path, stage, number in the stage, width."""

    name: str  # "SE_3_2"
    module: str  # "layer2.1.se"
    stage: int
    index: int  # from 1 within the stage
    channels: int


@dataclass
class Excitations:
    """Recorded excitations: ``values[name]`` is float32 ``[N, C]`` (one row per image) for
    each block of ``blocks`` (forward order); ``labels`` and ``image_ids`` (the images'
    indices in their split) are ``[N]``; ``classes`` names the label values."""

    blocks: list[SEBlock]
    values: dict[str, torch.Tensor]
    labels: torch.Tensor
    image_ids: torch.Tensor
    classes: list[str]

    def block(self, name: str) -> SEBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise ValueError(f"no SE block {name!r}; blocks: {', '.join(b.name for b in self.blocks)}")


# ---------------------------------------------------------------- finding the SE blocks


def _structural_stages(paths: list[str]) -> dict[str, int]:
    """Fallback numbering: ``layer<i>`` is stage ``i + 1``; other containers 1, 2 ... in order."""
    stages: dict[str, int] = {}
    containers: list[str] = []
    for path in paths:
        parts = path.split(".")
        head = next((i for i, p in enumerate(parts) if p.isdigit()), len(parts) - 1)
        container = ".".join(parts[:head])
        m = re.fullmatch(r"(?:.*\.)?layer(\d+)", container)
        if m:
            stages[path] = int(m.group(1)) + 1
            continue
        if container not in containers:
            containers.append(container)
        stages[path] = containers.index(container) + 1
    return stages


def _block_numbers(paths: list[str]) -> list[int]:
    """Numbers from 1 of the SE blocks ``paths`` of one stage: the blocks' index in their common
    container where each has one, else their rank."""
    split = [p.split(".") for p in paths]
    if len(split) > 1:
        common = 0
        while all(len(s) > common + 1 for s in split) and len({s[common] for s in split}) == 1:
            common += 1
        nxt = [s[common] for s in split]
        if all(x.isdigit() for x in nxt) and len(set(nxt)) == len(nxt):
            return [int(x) + 1 for x in nxt]
    return list(range(1, len(paths) + 1))


def find_se_blocks(model: nn.Module) -> list[SEBlock]:
    """The SE blocks of ``model`` in module order, named ``SE_<stage>_<block>`` (module docstring).

    Raises:
        SenetError: the model has no :class:`~senet.layers.SqueezeExcite` block.
    """
    modules = [(p, m) for p, m in model.named_modules() if isinstance(m, SqueezeExcite)]
    if not modules:
        name = getattr(getattr(model, "senet_spec", None), "name", type(model).__name__)
        raise SenetError(f"{name} has no SE blocks to analyse; use an SE model (e.g. cifar_se_resnet20, "
                         "se_resnet50) or add SE blocks with senet.add_se")
    paths = [p for p, _ in modules]
    if getattr(model, "feature_info", None):
        stages = module_stages(model)
    else:
        stages = _structural_stages(paths)
    by_stage: dict[int, list[str]] = {}
    for p in paths:
        by_stage.setdefault(stages[p], []).append(p)
    number = {p: n for group in by_stage.values() for p, n in zip(group, _block_numbers(group))}
    width = dict(modules)
    blocks = [SEBlock(f"SE_{stages[p]}_{number[p]}", p, stages[p], number[p], width[p].channels) for p in paths]
    if len({b.name for b in blocks}) != len(blocks):  # two blocks, one name: number by rank instead
        rank = {p: n for group in by_stage.values() for n, p in enumerate(group, 1)}
        blocks = [SEBlock(f"SE_{b.stage}_{rank[b.module]}", b.module, b.stage, rank[b.module], b.channels)
                  for b in blocks]
    return blocks


def last_block_per_stage(blocks: Sequence[SEBlock]) -> list[SEBlock]:
    """The last SE block of each stage (before the next downsampling): the blocks of Fig. 6."""
    last: dict[int, SEBlock] = {}
    for b in blocks:
        if b.stage not in last or b.index > last[b.stage].index:
            last[b.stage] = b
    return [last[s] for s in sorted(last)]


# ---------------------------------------------------------------- recording


@contextlib.contextmanager
def excitation_hooks(
    model: nn.Module, blocks: Sequence[SEBlock] | None = None
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks on the ``gate`` of each SE block; yields ``{name: [s per call]}``.

    Each call appends the gate's output ``s`` (eq. 3) detached, as float32 ``[N, C]`` on the
    CPU; NoSqueeze blocks (Table 16) gate every position, their ``s`` is averaged over the
    positions. The hooks are removed on exit, also after an error.
    """
    blocks = list(blocks) if blocks is not None else find_se_blocks(model)
    modules = dict(model.named_modules())
    store: dict[str, list[torch.Tensor]] = {b.name: [] for b in blocks}
    handles = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            s = output.detach()
            if s.dim() == 4:
                s = s.mean((2, 3))
            store[name].append(s.reshape(s.shape[0], -1).float().cpu())

        return hook

    try:
        for b in blocks:
            handles.append(modules[b.module].gate.register_forward_hook(hook_for(b.name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def _batches(
    images: torch.Tensor | Batches, labels: torch.Tensor | None, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(images, torch.Tensor):
        if labels is None or len(labels) != len(images):
            raise ValueError(f"give one label per image: {len(images)} images, "
                             f"{'no' if labels is None else len(labels)} labels")
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size], labels[start:start + batch_size]
    else:
        if labels is not None:
            raise ValueError("labels come from the batches when images is an iterable of (images, labels)")
        yield from images


@torch.inference_mode()
def record_excitations(
    model: nn.Module,
    images: torch.Tensor | Batches,
    labels: torch.Tensor | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    image_ids: torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    batch_size: int = 100,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Excitations:
    """Run ``model`` in eval mode over ``images`` and record every SE block's excitation ``s``.

    Args:
        images: a tensor ``[N, C, H, W]`` (with ``labels [N]``), or an iterable of
            ``(images, labels)`` batches such as a ``DataLoader``.
        transform: turns a batch on ``device`` into the model's input (e.g.
            :class:`senet.data.Normalize` ``(mean, std)`` for uint8 images);
            ``None`` passes float batches unchanged.
        image_ids: the images' indices in their split (default ``0 .. N-1``).
        classes: names of the label values (default ``"0"``, ``"1"`` ...).
        device: where to run (default: the device of the model's parameters).
        progress: a tqdm bar over the batches.

    The model's train/eval mode (of every submodule) is restored afterwards and no hook is
    left on it. Raises ``SenetError`` if a block's gate does not run exactly once per batch
    (an SE block the forward pass skips, spec section 9).
    """
    blocks = find_se_blocks(model)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    got_labels: list[torch.Tensor] = []
    try:
        with excitation_hooks(model, blocks) as store:
            batches = _batches(images, labels, batch_size)
            if progress:
                import sys

                from tqdm.auto import tqdm

                total = math.ceil(len(images) / batch_size) if isinstance(images, torch.Tensor) else None
                batches = tqdm(batches, total=total, unit="batch", desc="excitations", file=sys.stderr)
            for n_batch, (x, y) in enumerate(batches, 1):
                x = x.to(device, non_blocking=True)
                if transform is not None:
                    x = transform(x)
                elif not x.is_floating_point():
                    raise ValueError(f"images are {x.dtype}; pass a transform that makes the model's float input")
                model(x)
                got_labels.append(torch.as_tensor(y).reshape(-1).cpu().long())
                for name, calls in store.items():
                    if len(calls) != n_batch:
                        raise SenetError(f"SE block {name} ran {len(calls) - n_batch + 1} times for one batch; "
                                         "expected once (is it part of the forward pass?)")
            values = {name: torch.cat(calls) if calls else torch.zeros(0, 0) for name, calls in store.items()}
    finally:
        for m, training in modes.items():
            m.training = training
    all_labels = torch.cat(got_labels) if got_labels else torch.zeros(0, dtype=torch.long)
    n = len(all_labels)
    ids = torch.arange(n) if image_ids is None else torch.as_tensor(image_ids).reshape(-1).long()
    if len(ids) != n:
        raise ValueError(f"{len(ids)} image_ids for {n} images")
    if classes is None:
        classes = [str(i) for i in range(int(all_labels.max()) + 1 if n else 0)]
    return Excitations(blocks, values, all_labels, ids, list(classes))


# ---------------------------------------------------------------- choosing images


def parse_classes(spec: str | Sequence[str | int] | None, class_names: Sequence[str]) -> list[int]:
    """Class indices from names or indices (``"cat,dog"``, ``"3,5"``, ``["cat", 5]``).

    ``None`` means every class when there are at most 10, else the first 4. Raises
    ``ValueError`` naming an unknown or repeated class.
    """
    names = list(class_names)
    if spec is None:
        return list(range(len(names))) if len(names) <= 10 else list(range(min(4, len(names))))
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError("--classes is empty; give class names or indices separated by commas")
    out: list[int] = []
    for item in items:
        text = str(item)
        if text in names:
            idx = names.index(text)
        elif text.lstrip("-").isdigit():
            idx = int(text)
            if not 0 <= idx < len(names):
                raise ValueError(f"class index {idx} is out of range; the data has {len(names)} classes "
                                 f"(0..{len(names) - 1})")
        else:
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise ValueError(f"unknown class {text!r}; classes: {shown}")
        if idx in out:
            raise ValueError(f"class {names[idx]!r} is given twice")
        out.append(idx)
    return out


def select_per_class(
    labels: torch.Tensor,
    classes: Sequence[int],
    per_class: int,
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Indices of ``per_class`` images of each class in ``classes`` (in that order): a seeded
    random choice, or the first ones with ``seed=None``. A class with fewer images gives all it
    has (with a ``UserWarning``); a class with none is a ``ValueError``. ``class_names`` name
    the classes in those messages."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    picks = []
    for c in classes:
        what = repr(class_names[c]) if class_names is not None else str(c)
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) == 0:
            raise ValueError(f"class {what} has no images in this split")
        if len(idx) < per_class:
            warnings.warn(f"class {what} has only {len(idx)} images; using all of them instead of {per_class}",
                          stacklevel=2)
        if seed is not None:
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(c))
            idx = idx[torch.randperm(len(idx), generator=g)][:per_class].sort().values
        picks.append(idx[:per_class])
    return torch.cat(picks)


def sample_channels(channels: int, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` channel indices drawn uniformly without replacement, sorted (all if ``k >= channels``)."""
    if k <= 0 or k >= channels:
        return torch.arange(channels)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(channels, generator=g)[:k].sort().values

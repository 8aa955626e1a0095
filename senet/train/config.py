"""The one configuration schema of a training run: typed dataclasses.

A run's configuration is built in three layers, each stating only its differences from the
one below: the dataclass defaults here, a recipe file (``senet/recipes/**.yaml``, which may
``inherit:`` another recipe), and dotted command-line overrides (``optim.lr=0.05``). Unknown
keys and ill-typed values raise :class:`~senet.errors.ConfigError` naming the valid keys.
Models never read this configuration: the trainer passes ``model.name`` and ``model.kwargs``
to :func:`senet.create_model`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from senet.errors import ConfigError
from senet.utils.device import DEVICES

SCHEDULES = ("multistep", "step", "cosine", "linear", "constant", "plateau")
LOADERS = ("memory", "stream")
LR_SCALINGS = ("none", "linear", "sqrt")
BACKENDS = ("auto", "nccl", "gloo")
WARMUPS = ("linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The most DataLoader processes (``data.workers``) and torch CPU threads (``run.threads``) a run
#: may ask for: far beyond any machine's cores, small enough that a typo (``workers: 40000``)
#: is an error rather than a fork bomb or a thread pool that exhausts memory.
MAX_WORKERS = 256
MAX_THREADS = 1024
#: Settings that only say how a run executes, not what it computes: a run may resume with
#: them changed, and results that differ only in them are the same experiment.
EXECUTION_ONLY = {"run": ("device", "threads", "compile", "accum_steps", "dist_backend", "dist_timeout",
                          "tensorboard", "mlflow"),
                  "data": ("workers", "eval_batch_size")}


@dataclass
class ModelConfig:
    """Which registered model to train: ``create_model(name, num_classes=..., **kwargs)``;
    ``init``: a senet weight file to start from instead of random weights (its network, e.g. a
    pruned one, and its weights: ``create_model(name, pretrained=init, ...)``)."""

    name: str = "cifar_se_resnet20"
    kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass
class DatasetConfig:
    """The ``data:`` section: dataset, batch sizes and augmentation (how a trained model's inputs
    are prepared is its :class:`~senet.preprocess.PretrainedCfg`, recorded with its weights).

    ``loader: memory`` (CIFAR, spec section 5): every image decoded once into memory, padded
    by ``pad``, randomly cropped to ``crop``, flipped, Cutout for the Shake-Shake rows of
    Table 4. ``loader: stream`` (ImageNet, spec section 6): an ImageFolder ``train/`` +
    ``val/`` tree decoded by ``workers`` DataLoader processes, random-size crop to ``crop``
    (area fraction in ``scale``, aspect ratio in ``ratio``) and flip for training, short side
    resized to ``resize`` then a centre crop of ``crop`` for evaluation.
    """

    dataset: str = "cifar10"
    path: str | None = None  # --data; None searches the usual places (senet.data.locate)
    batch_size: int = 128  # the global batch
    eval_batch_size: int = 128  # the fastest on a 2-core CPU (benchmarks/train_speed.py: 2.3x batch 500)
    pad: int = 4
    crop: int = 32
    flip: bool = True
    cutout: int = 0  # side of the Cutout square; 0 = off
    train_subset: int = 0  # use a fixed random subset of this many training images; 0 = all
    test_subset: int = 0
    skip_corrupt: bool = False
    download: bool = True
    loader: str = "memory"
    resize: int = 256  # stream: evaluation resizes the short side to this, then centre-crops
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # stream: random-size crop area
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # stream: its aspect ratio
    workers: int = 4  # stream: DataLoader worker processes per training process
    mean: list[float] | None = None  # None: the training split's own (memory) or ImageNet's (stream)
    std: list[float] | None = None


@dataclass
class OptimConfig:
    """SGD with (Nesterov) momentum, weight decay on every parameter, label smoothing.

    ``lr`` is the learning rate at ``lr_base_batch``: with ``lr_scaling: linear`` (Goyal et
    al.) a run whose global ``data.batch_size`` differs uses ``lr * batch / lr_base_batch``
    (``sqrt``: the square root of that ratio); ``none`` uses ``lr`` as it is.
    ``bn_freeze_epochs``: for the last that many epochs, batch normalisation uses and keeps
    its running statistics and its affine parameters stop training (SENet-154, section 6).
    """

    lr: float = 0.1
    lr_scaling: str = "none"
    lr_base_batch: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    bn_freeze_epochs: int = 0


@dataclass
class ScheduleConfig:
    """Learning rate as a function of the (fractional) epoch; milestones are in epochs.

    ``multistep``: ``lr * gamma**(number of milestones passed)``; ``step``: ``gamma`` every
    ``step_size`` epochs; ``cosine`` / ``linear``: from ``lr`` to ``final_lr`` over the run;
    ``constant``. A warm-up of ``warmup_epochs`` either ramps linearly from ``warmup_lr`` to
    ``lr`` or holds ``warmup_lr`` (``warmup: constant``, the ResNet-110 practice).
    ``plateau``: ``gamma`` each time the test (validation) loss has not improved by a relative
    ``threshold`` for ``patience`` evaluated epochs (the mobile and ablation recipes).
    """

    name: str = "multistep"
    epochs: int = 164
    milestones: list[float] = field(default_factory=lambda: [82.0, 123.0])
    gamma: float = 0.1
    step_size: float = 30.0
    final_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup: str = "linear"
    warmup_lr: float = 0.0
    patience: int = 5
    threshold: float = 1e-4


@dataclass
class RunConfig:
    """How the run executes; none of it changes the mathematics of training on one device.

    Under ``torchrun`` the global batch ``data.batch_size`` is split over the processes and
    each process's share into ``accum_steps`` micro-batches whose gradients are accumulated
    before one optimizer step. ``sync_bn`` makes batch normalisation use statistics of the
    whole global micro-batch (CUDA only).
    """

    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True  # on every device (CPU and CUDA)
    compile: bool = False
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    eval_every: int = 1  # epochs between test evaluations (the last epoch always evaluates)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at the end of each epoch only
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit); for smoke tests
    accum_steps: int = 1
    sync_bn: bool = False
    dist_backend: str = "auto"  # auto: nccl on CUDA, gloo on the CPU
    dist_timeout: float = 600.0  # seconds a collective may wait for a peer
    tensorboard: bool = False  # TensorBoard event files in <run>/tensorboard (senet.train.tracking)
    mlflow: bool | str = False  # true: an MLflow store in the run folder; a URI: that tracking server or store


@dataclass
class Config:
    """A whole run: what the run directory's ``config.yaml`` holds."""

    recipe: str = "default"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DatasetConfig = field(default_factory=DatasetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


_EXP_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (int -> float allowed, nothing else converted silently)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXP_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"section {prefix[:-1]!r}" if prefix else "the top level"
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}' in {where}; valid keys: {', '.join(prefix + n for n in names)}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        tp, value = hints[name], values[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a section (mapping), got {value!r}")
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    d, o, s, r = cfg.data, cfg.optim, cfg.schedule, cfg.run
    need(d.batch_size >= 1 and d.eval_batch_size >= 1, "data.batch_size and data.eval_batch_size must be >= 1")
    need(d.pad >= 0 and d.crop >= 1 and d.cutout >= 0, "data.pad and data.cutout must be >= 0, data.crop >= 1")
    need(d.train_subset >= 0 and d.test_subset >= 0, "data.train_subset and data.test_subset must be >= 0")
    need(d.loader in LOADERS, f"data.loader {d.loader!r} is unknown; choose from {', '.join(LOADERS)}")
    need(d.resize >= d.crop, f"data.resize ({d.resize}) must be >= data.crop ({d.crop})")
    need(len(d.scale) == 2 and 0 < d.scale[0] <= d.scale[1] <= 1, f"data.scale must be [lo, hi] within (0, 1], got {d.scale}")
    need(len(d.ratio) == 2 and 0 < d.ratio[0] <= d.ratio[1], f"data.ratio must be [lo, hi] with 0 < lo <= hi, got {d.ratio}")
    need(0 <= d.workers <= MAX_WORKERS, f"data.workers must be within 0..{MAX_WORKERS}, got {d.workers}")
    for name, stat in (("mean", d.mean), ("std", d.std)):
        need(stat is None or len(stat) == 3, f"data.{name} must be three numbers (R, G, B) or null, got {stat}")
    need(d.std is None or all(v > 0 for v in d.std), f"data.std must be positive, got {d.std}")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    need(not o.nesterov or o.momentum > 0, "optim.nesterov needs optim.momentum > 0")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(0 <= o.label_smoothing < 1, f"optim.label_smoothing must be in [0, 1), got {o.label_smoothing}")
    need(o.lr_scaling in LR_SCALINGS, f"optim.lr_scaling {o.lr_scaling!r} is unknown; choose from {', '.join(LR_SCALINGS)}")
    need(o.lr_scaling == "none" or o.lr_base_batch >= 1,
         f"optim.lr_scaling={o.lr_scaling} needs optim.lr_base_batch, the batch size optim.lr is meant for")
    need(0 <= o.bn_freeze_epochs < s.epochs, "optim.bn_freeze_epochs must be within 0..schedule.epochs - 1")
    need(s.name in SCHEDULES, f"schedule.name {s.name!r} is unknown; choose from {', '.join(SCHEDULES)}")
    need(s.warmup in WARMUPS, f"schedule.warmup {s.warmup!r} is unknown; choose from {', '.join(WARMUPS)}")
    need(s.epochs >= 1, f"schedule.epochs must be >= 1, got {s.epochs}")
    need(0 <= s.warmup_epochs <= s.epochs, "schedule.warmup_epochs must be within 0..schedule.epochs")
    need(all(m > 0 for m in s.milestones), f"schedule.milestones must be positive epochs, got {s.milestones}")
    need(s.milestones == sorted(s.milestones), f"schedule.milestones must be increasing, got {s.milestones}")
    need(s.step_size > 0 and s.gamma > 0, "schedule.step_size and schedule.gamma must be > 0")
    need(s.final_lr >= 0 and s.warmup_lr >= 0, "schedule.final_lr and schedule.warmup_lr must be >= 0")
    need(s.patience >= 1 and s.threshold >= 0, "schedule.patience must be >= 1 and schedule.threshold >= 0")
    need(s.name != "plateau" or r.eval_every == 1, "schedule.name=plateau needs run.eval_every=1 (it watches the test loss)")
    need(r.device in DEVICES, f"run.device {r.device!r} is unknown; choose from {', '.join(DEVICES)}")
    need(r.precision in PRECISIONS, f"run.precision {r.precision!r} is unknown; choose from {', '.join(PRECISIONS)}")
    need(0 <= r.threads <= MAX_THREADS,
         f"run.threads must be within 0..{MAX_THREADS}, got {r.threads} (0 keeps torch's default)")
    need(r.eval_every >= 1, f"run.eval_every must be >= 1, got {r.eval_every}")
    need(r.checkpoint_every >= 0 and r.max_steps >= 0, "run.checkpoint_every and run.max_steps must be >= 0")
    need(r.accum_steps >= 1, f"run.accum_steps must be >= 1, got {r.accum_steps}")
    need(d.batch_size % r.accum_steps == 0,
         f"data.batch_size {d.batch_size} must be divisible by run.accum_steps {r.accum_steps}")
    need(r.dist_backend in BACKENDS, f"run.dist_backend {r.dist_backend!r} is unknown; choose from {', '.join(BACKENDS)}")
    need(r.dist_timeout > 0, f"run.dist_timeout must be > 0 seconds, got {r.dist_timeout}")
    need(not isinstance(r.mlflow, str) or bool(r.mlflow.strip()),
         "run.mlflow must be true, false or an MLflow tracking URI (e.g. http://host:5000)")


def check_work_sizes(cfg: Config, world_size: int = 1) -> None:
    """Refuse batch and image sizes whose tensors would not fit (:mod:`senet.utils.limits`):
    each process's share of the global batch (padded, for the memory loader), an evaluation
    batch and, streaming, an image resized for evaluation. Names the settings."""
    from senet.utils.limits import check_work_size

    d = cfg.data
    side = d.crop + 2 * d.pad if d.loader == "memory" else d.crop
    procs = f", {world_size} processes" if world_size > 1 else ""
    check_work_size(f"data.batch_size {d.batch_size} at data.crop {d.crop} (data.pad {d.pad}{procs})",
                    (max(1, d.batch_size // world_size), 3, side, side))
    check_work_size(f"data.eval_batch_size {d.eval_batch_size} at data.crop {d.crop}",
                    (d.eval_batch_size, 3, d.crop, d.crop))
    if d.loader == "stream":  # evaluation resizes each image's short side first
        check_work_size(f"data.resize {d.resize}", (d.resize, d.resize, 3), 1)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Validate a (merged) mapping into a :class:`Config`."""
    if not isinstance(values, dict):
        raise ConfigError(f"a configuration must be a mapping, got {type(values).__name__}")
    run = values.get("run")
    if isinstance(run, dict) and "channels_last" in run and run["channels_last"] is None:
        # run folders written before this release held null for "channels_last on every device", the default now
        values = {**values, "run": {**run, "channels_last": True}}
    cfg = _build(Config, values, "")
    _check(cfg)
    return cfg


def flat_config(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """``{("optim", "lr"): 0.1, ...}``: the leaves of a config mapping; ``model.kwargs`` stays
    one value (its keys are the model's, not the schema's)."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and not (prefix == ("model",) and key == "kwargs"):
            out.update(flat_config(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def config_differences(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"key: A in the folder, B now"`` for every key whose value differs between two config
    mappings, other than the :data:`EXECUTION_ONLY` ones (the same experiment may run anywhere);
    ``model.kwargs`` compares as a whole. Empty: the same experiment."""
    where_it_runs = {(section, key) for section, keys in EXECUTION_ONLY.items() for key in keys}
    a, b = flat_config(existing), flat_config(wanted)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in where_it_runs or a.get(key) == b.get(key):
            continue
        diffs.append(f"{'.'.join(key)}: {a.get(key)!r} in the folder, {b.get(key)!r} now")
    return diffs


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dictionary merge; ``update`` wins. ``model.kwargs`` merges key by key too."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"optim.lr=0.05"`` -> ``{"optim": {"lr": 0.05}}``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form section.key=value (e.g. optim.lr=0.05)")
    from senet.utils.text import yaml_value

    value = yaml_value(raw, f"override {text!r}")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def with_epochs(values: dict[str, Any], epochs: int) -> dict[str, Any]:
    """Shorten (or lengthen) a schedule to ``epochs`` keeping its shape: milestones, the step
    size and the warm-up scale by ``epochs / schedule.epochs``."""
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    sched = config_from_dict(values).schedule
    f = epochs / sched.epochs
    scaled = {
        "epochs": epochs,
        "milestones": [m * f for m in sched.milestones],
        "step_size": sched.step_size * f,
        "warmup_epochs": sched.warmup_epochs * f,
    }
    return merge(values, {"schedule": scaled})

"""Training and evaluation on CIFAR-size datasets with the paper's recipes (spec section 5).

Typical use::

    from senet.train import RunDir, Trainer, resolve

    cfg = resolve("cifar10/se_resnet110", ["optim.lr=0.05"], epochs=10)
    summary = Trainer(cfg, RunDir.create("runs/x", cfg)).fit()
"""

from senet.train.config import Config, DatasetConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig
from senet.train.evaluate import evaluate
from senet.train.recipes import list_recipes, read_recipe, resolve
from senet.train.rundir import RunDir
from senet.train.schedule import lr_at
from senet.train.trainer import Trainer
from senet.train.watchdog import TrainingDiverged

__all__ = [
    "Config",
    "DatasetConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "RunDir",
    "ScheduleConfig",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "list_recipes",
    "lr_at",
    "read_recipe",
    "resolve",
]

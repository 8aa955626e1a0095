"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) for PyTorch."""

from senet.complexity import Complexity, complexity
from senet.layers import SEConfig, SqueezeExcite
from senet.models import (
    convert_weights,
    create_model,
    infer_model,
    list_models,
    load_weights,
    model_info,
    read_metadata,
    save_weights,
)
from senet.surgery import add_se

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "SEConfig",
    "SqueezeExcite",
    "add_se",
    "complexity",
    "convert_weights",
    "create_model",
    "infer_model",
    "list_models",
    "load_weights",
    "model_info",
    "read_metadata",
    "save_weights",
    "__version__",
]

"""senet: Squeeze-and-Excitation Networks (Hu et al., CVPR 2018 / TPAMI 2019) for PyTorch."""

from senet.complexity import Complexity, complexity
from senet.layers import SEConfig, SqueezeExcite
from senet.models import create_model, list_models, model_info
from senet.surgery import add_se
from senet.weights import load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "SEConfig",
    "SqueezeExcite",
    "add_se",
    "complexity",
    "create_model",
    "list_models",
    "load_weights",
    "model_info",
    "save_weights",
    "__version__",
]

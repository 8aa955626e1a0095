"""Model families. Importing this package registers every model."""

from senet.models import resnet  # noqa: F401
from senet.models.registry import ModelInfo, ModelSpec, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "ModelSpec", "create_model", "list_models", "model_info", "register_model"]

"""Model families. Importing this package registers every model."""

from senet.models import cifar_resnet, resnet, shake_shake, wide_resnet  # noqa: F401
from senet.models import bn_inception, inception_resnet_v2, mobilenet, shufflenet, vgg  # noqa: F401
from senet.models.registry import ModelInfo, ModelSpec, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "ModelSpec", "create_model", "list_models", "model_info", "register_model"]

"""Model families, the one builder, and weights for the models. Importing this package
registers every model."""

from senet.models import cifar_resnet, resnet, shake_shake, wide_resnet  # noqa: F401
from senet.models import bn_inception, inception_resnet_v2, mobilenet, shufflenet, vgg  # noqa: F401
from senet.models._base import SenetModel
from senet.models._builder import Pretrained, create_model, infer_model, load_weights, model_keywords
from senet.models._features import FeatureInfo, FeatureNet, module_stages
from senet.models._pretrained import LoadResult, open_checkpoint, read_metadata
from senet.models._save import convert_weights, push_to_hf_hub, save_for_hf, save_weights
from senet.models.registry import (
    ModelInfo,
    ModelSpec,
    Released,
    families,
    list_aliases,
    list_models,
    model_info,
    register_family,
    register_model,
)
from senet.preprocess import PretrainedCfg

__all__ = [
    "FeatureInfo",
    "FeatureNet",
    "LoadResult",
    "ModelInfo",
    "ModelSpec",
    "Pretrained",
    "PretrainedCfg",
    "Released",
    "SenetModel",
    "convert_weights",
    "create_model",
    "families",
    "infer_model",
    "list_aliases",
    "list_models",
    "load_weights",
    "model_info",
    "model_keywords",
    "module_stages",
    "open_checkpoint",
    "push_to_hf_hub",
    "read_metadata",
    "register_family",
    "register_model",
    "save_for_hf",
    "save_weights",
]

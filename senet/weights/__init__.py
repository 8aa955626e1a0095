"""Weight files: senet-native ``.safetensors``, and the timm / Cadene checkpoints people have.

Nothing here executes code from a file: safetensors, or ``torch.load(weights_only=True)``.
"""

from senet.weights.load import (
    LoadResult,
    WeightsMetadata,
    convert_weights,
    create_pretrained,
    infer_model,
    load_weights,
    read_metadata,
    save_weights,
)

__all__ = [
    "LoadResult",
    "WeightsMetadata",
    "convert_weights",
    "create_pretrained",
    "infer_model",
    "load_weights",
    "read_metadata",
    "save_weights",
]

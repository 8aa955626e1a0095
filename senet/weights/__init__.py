"""Weight files: formats, key maps and metadata (a leaf: nothing here imports a model).

Nothing here executes code from a file: safetensors, or ``torch.load(weights_only=True)``.
Loading weights into models, saving them and inferring a file's model are
:mod:`senet.models` functions (``senet.load_weights``, ``senet.save_weights`` ...).
"""

from senet.weights.io import read_checkpoint, read_safetensors, write_safetensors
from senet.weights.keymap import Foreign, prefix_rules, rename_keys
from senet.weights.metadata import WeightsMetadata

__all__ = [
    "Foreign",
    "WeightsMetadata",
    "prefix_rules",
    "read_checkpoint",
    "read_safetensors",
    "rename_keys",
    "write_safetensors",
]

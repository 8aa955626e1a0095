"""Reading and writing weight files without ever executing code from them.

* ``.safetensors`` files are read with :mod:`safetensors` (a JSON header and raw tensor
  bytes: nothing to execute). The file type is sniffed from its first bytes, not its name.
* Anything else goes through ``torch.load(..., weights_only=True)``, whose unpickler only
  rebuilds tensors and plain containers. A pickle that asks for any other global (for
  example ``os.system``) is refused with a :class:`~senet.errors.WeightsError`. A zip file
  (what ``torch.save`` writes) must match its CRC-32s first: ``torch.load`` does not check them.
* Files are written atomically (:mod:`senet.utils.atomic`), with a SHA-256 of their tensors
  in the metadata (:data:`~senet.utils.integrity.DIGEST_KEY`) that every read checks; a file
  without one (another tool's) is read unverified. Non-finite values are refused on write.
* The header of a model senet exported (ONNX, TorchScript) is read without loading the model
  (:func:`read_exported_header`).
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from senet.errors import WeightsError
from senet.utils.atomic import atomic_path
from senet.utils.finite import nonfinite_names
from senet.utils.integrity import DIGEST_KEY, bad_zip_member, tensors_digest

#: Keys under which training checkpoints keep the model's state dict, in order of preference.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
#: Prefixes added by ``DataParallel`` / ``DistributedDataParallel`` and ``torch.compile``.
STRIP_PREFIXES = ("module.", "_orig_mod.")

# Harmless classes found in real training checkpoints (timm stores its argparse namespace).
_SAFE_GLOBALS = [argparse.Namespace]
_CODE_HINT = re.compile(r"(unsupported global[^\n]*|Unsupported global[^\n]*|Unsupported operand[^\n]*)", re.I)


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header size, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(10)
    return len(head) == 10 and head[8:10] in (b'{"', b"{}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"{path}: no such weight file")
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder, expected a weight file (.safetensors, .pth, .pt, .bin)")


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a ``.safetensors`` file; a corrupt file, or one whose
    tensors do not match the digest senet recorded in it, is a ``WeightsError``. The digest
    is checked and left out of the metadata returned."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError, ...: all mean "this file cannot be read"
        raise WeightsError(f"{path}: cannot read the safetensors file (truncated or corrupt?): {e}") from None
    recorded = metadata.pop(DIGEST_KEY, None)
    if recorded is not None and recorded != tensors_digest(tensors):
        raise WeightsError(f"{path}: damaged: its tensors do not match the SHA-256 recorded when senet wrote it; "
                           "refusing to use it (restore or re-create the file)")
    return tensors, metadata


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """Only the header metadata of a ``.safetensors`` file (no tensor is read)."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
    except Exception as e:
        raise WeightsError(f"{path}: cannot read the safetensors file (truncated or corrupt?): {e}") from None
    metadata.pop(DIGEST_KEY, None)  # checked when the tensors are read
    return metadata


def _code_detail(message: str) -> str:
    m = _CODE_HINT.search(message)
    return m.group(1).strip().rstrip(".") if m else "it needs objects other than tensors and plain containers"


def read_torch(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file.

    A pickle whose unpickling would import or call anything but tensor builders is refused:
    nothing in it runs.
    """
    path = Path(path)
    _check_file(path)
    try:
        damage = bad_zip_member(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
    if damage:
        raise WeightsError(f"{path}: damaged: {damage}; refusing to load it")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol")
            # a file object, not a path: torch.load would hand any "*.safetensors" name to safetensors
            with torch.serialization.safe_globals(_SAFE_GLOBALS), open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} is not a plain tensor checkpoint: refusing to execute code (weights_only=True): "
            f"{_code_detail(str(e))}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: cannot read the checkpoint (truncated or corrupt?): {detail}") from None


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The flat ``name -> tensor`` dict inside ``obj``.

    Accepts a state dict, a training checkpoint keeping it under one of :data:`WRAPPER_KEYS`,
    and strips a ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) prefix.
    """
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise WeightsError(
                f"{source}: no tensors found; a checkpoint must be a state dict or keep one under "
                f"{' / '.join(map(repr, WRAPPER_KEYS))} (top-level keys: {keys})"
            )
    state = dict(obj)
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{source}: entries that are not tensors: {', '.join(bad[:8])}"
                           + (f" ... and {len(bad) - 8} more" if len(bad) > 8 else ""))
    changed = True
    while changed and state:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict and (safetensors) metadata of a weight file of any supported kind."""
    path = Path(path)
    _check_file(path)
    if is_safetensors(path) or path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
        return unwrap_state_dict(tensors, str(path)), metadata
    return unwrap_state_dict(read_torch(path), str(path)), {}


#: The file in a TorchScript archive holding the senet header of a model senet exported.
EXPORT_EXTRA_FILE = "senet.json"
_MAX_HEADER_BYTES = 64 << 20


def read_exported_header(path: str | Path) -> dict[str, str] | None:
    """The string metadata of a model exported to ONNX (its ``metadata_props``) or TorchScript
    (the :data:`EXPORT_EXTRA_FILE` JSON in its archive, read without loading the program);
    ``None`` for any other file."""
    import json
    import zipfile

    path = Path(path)
    _check_file(path)
    if path.suffix == ".onnx":
        try:
            import onnx
        except ImportError:
            raise WeightsError(f"{path}: reading an ONNX file needs onnx (pip install onnx)") from None
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 (protobuf's DecodeError, OSError ...)
            raise WeightsError(f"{path}: not a readable ONNX file: {str(e).strip()[:200]}") from None
        return {p.key: p.value for p in proto.metadata_props}
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((i for i in archive.infolist()
                           if i.filename.split("/", 1)[-1] == f"extra/{EXPORT_EXTRA_FILE}"), None)
            if member is None:
                return None
            if member.file_size > _MAX_HEADER_BYTES:
                raise WeightsError(f"{path}: its {EXPORT_EXTRA_FILE} ({member.file_size:,} bytes) is too large "
                                   "to be a senet header")
            raw = json.loads(archive.read(member).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise WeightsError(f"{path}: cannot read its {EXPORT_EXTRA_FILE}: {str(e).strip()[:200] or type(e).__name__}"
                           ) from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise WeightsError(f"{path}: its {EXPORT_EXTRA_FILE} must map strings to strings")
    return raw


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], *,
                      allow_nonfinite: bool = False) -> Path:
    """Write ``tensors`` and ``metadata`` to ``path`` atomically, recording the tensors'
    SHA-256 under :data:`~senet.utils.integrity.DIGEST_KEY`. Tensors holding NaN or inf are
    refused unless ``allow_nonfinite``; an OS failure is a ``FileSystemError`` naming ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; give the path of the .safetensors file to write")
    if not folder.is_dir():
        raise WeightsError(f"{path}: folder {folder} does not exist" if not folder.exists()
                           else f"{path}: {folder} is not a folder")
    if DIGEST_KEY in metadata:
        raise ValueError(f"metadata key {DIGEST_KEY!r} is reserved for the digest senet computes")
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    bad = [] if allow_nonfinite else nonfinite_names(data)
    if bad:
        raise WeightsError(f"refusing to write {path}: {len(bad)} tensor(s) hold NaN or inf values "
                           f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata={**metadata, DIGEST_KEY: tensors_digest(data)})
    return path

"""Released weights from the Hugging Face Hub (``create_model(name, pretrained=True)``)."""

from __future__ import annotations

from pathlib import Path

from senet.errors import WeightsError
from senet.models.registry import ModelInfo


def download(info: ModelInfo) -> Path:
    """The local path of ``info``'s released weights, fetched into (or found in) the Hugging Face
    cache (``$HF_HOME``; ``HF_HUB_OFFLINE=1`` uses the cache only).

    Raises:
        WeightsError: the model has no released weights, or they cannot be fetched; the message
            names the file to download elsewhere and pass as ``pretrained=PATH``.
    """
    rel = info.released
    if rel is None:
        raise WeightsError(f"{info.name} has no released weights; train it (senet train) or pass "
                           f"pretrained=PATH to a weight file (released: senet.list_models(pretrained=True))")
    instead = (f"download {rel.hf_hub_id}/{rel.filename} from the Hugging Face Hub"
               + (f" (or {rel.url})" if rel.url else "")
               + " where there is internet and pass pretrained=PATH (--weights PATH)")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise WeightsError(f"{info.name}: pretrained=True needs huggingface_hub (pip install huggingface_hub); "
                           f"or {instead}") from None
    from senet import __version__

    try:
        return Path(hf_hub_download(rel.hf_hub_id, rel.filename, library_name="senet", library_version=__version__))
    except Exception as e:  # noqa: BLE001 (offline, missing repo, proxy ...: all mean "not available here")
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsError(f"{info.name}: cannot fetch its released weights ({type(e).__name__}"
                           f"{': ' + first[:160] if first else ''}); {instead}") from None

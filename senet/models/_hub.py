"""Released weights, fetched where timm fetches them (``create_model(name, pretrained=True)``).

As timm's ``load_pretrained``: weights with a Hugging Face Hub repo come from the hub (through
its cache, ``$HF_HOME``); those without one (timm records none for its ``legacy_*`` SENets)
from their release URL into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, as
``torch.hub.load_state_dict_from_url``), the hash prefix in the file name checked. A
``cache_dir`` replaces both caches, as timm's.

Offline, a fetch fails at once: a file in the cache is used without asking the network, then
one request with a short timeout (``HF_HUB_ETAG_TIMEOUT``, 10 s by default) decides, instead of
huggingface_hub's half a minute of retries; ``HF_HUB_OFFLINE=1`` skips the request. The error
is one line naming the file, where to download it and where to put it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from senet.errors import WeightsError, WeightsUnavailable
from senet.models.registry import Released

#: torch.hub's file-name hash: ``resnet50-0676ba61.pth`` -> the sha256 prefix ``0676ba61``
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
URL_TIMEOUT = 10.0


def fetch(what: str, released: Released, cache_dir: str | Path | None = None) -> Path:
    """The local path of ``released`` (the weights ``what`` names), fetched if needed.

    Raises:
        WeightsUnavailable: they cannot be fetched; names the file, where to download it and
            where to put it.
    """
    if released.hf_hub_id:
        also = f" (or {released.url})" if released.url else ""
        try:
            return hub_file(released.hf_hub_id, released.filename, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 (offline, missing repo, proxy ...: all mean "not available here")
            raise WeightsUnavailable(what, reason(e), f"download {released.filename} of "
                                     f"https://huggingface.co/{released.hf_hub_id}{also} where there is "
                                     "internet and pass") from None
    return url_file(what, released.url, cache_dir)


def url_file(what: str, url: str, cache_dir: str | Path | None = None) -> Path:
    """``url``'s file in torch.hub's cache (``cache_dir``), downloaded there once."""
    from senet.utils.download import download_file

    folder = Path(cache_dir) if cache_dir is not None else torch_hub_dir()
    name = os.path.basename(urlparse(url).path)
    dest = folder / name
    if dest.is_file():
        return dest
    prefix = HASH_REGEX.search(name)
    remedy = f"download it where there is internet and put it in {folder}/ (found there from then on) or pass"
    try:
        return download_file(url, dest, hash_name="sha256", expected=prefix.group(1) if prefix else None,
                             timeout=URL_TIMEOUT, error=WeightsError)
    except WeightsError as e:
        raise WeightsUnavailable(what, str(e), remedy) from None


def torch_hub_dir() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps its files: ``<torch.hub.get_dir()>/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_file(repo_id: str, filename: str, *, revision: str | None = None,
             cache_dir: str | Path | None = None) -> Path:
    """``filename`` of the Hugging Face Hub repo ``repo_id``: from the cache without a request,
    else after one request that finds it (offline or under ``HF_HUB_OFFLINE=1``: an error at
    once, not after huggingface_hub's retries). Errors are huggingface_hub's (a missing file:
    its ``EntryNotFoundError``), or a :class:`WeightsError` without huggingface_hub."""
    hf = _huggingface_hub()
    from senet.version import __version__

    common: dict[str, Any] = dict(revision=revision, cache_dir=None if cache_dir is None else str(cache_dir),
                                  library_name="senet", library_version=__version__)
    try:
        return Path(hf.hf_hub_download(repo_id, filename, local_files_only=True, **common))
    except Exception:  # noqa: BLE001 (not in the cache: ask the hub, once)
        pass
    timeout = hf.constants.HF_HUB_ETAG_TIMEOUT
    hf.get_hf_file_metadata(hf.hf_hub_url(repo_id, filename, revision=revision), timeout=timeout)
    return Path(hf.hf_hub_download(repo_id, filename, etag_timeout=timeout, **common))


def is_missing_entry(exc: BaseException) -> bool:
    """Whether ``exc`` (from :func:`hub_file`) says the repo has no such file (not: unreachable)."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError)


def reason(exc: BaseException) -> str:
    """``exc`` as one line: its type and whole message (huggingface_hub's span several lines)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsError("the Hugging Face Hub needs huggingface_hub (pip install huggingface_hub)") from None
    return huggingface_hub

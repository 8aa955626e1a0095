"""Downloading one file: streamed through a temporary sibling, its digest checked before the
final rename, one attempt with a timeout (offline, it fails at once instead of hanging)."""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from senet.errors import SenetError, fs_error
from senet.utils.atomic import atomic_write

log = logging.getLogger(__name__)


def download_file(url: str, dest: Path, *, hash_name: str = "sha256", expected: str | None = None,
                  timeout: float = 30.0, error: type[SenetError] = SenetError) -> Path:
    """Download ``url`` to ``dest`` (atomically; its folder created). With ``expected``, the
    file's ``hash_name`` hex digest must start with it (a whole digest or torch.hub's prefix in
    a file name), else nothing is kept.

    Raises:
        error: the download failed (offline, HTTP error, timeout) or the digest differs; the
            message names the URL.
        FileSystemError: ``dest`` cannot be written.
    """
    log.info("downloading %s to %s", url, dest)

    def fetch(out: BinaryIO) -> None:
        digest = hashlib.new(hash_name, usedforsecurity=False)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, desc=f"downloading {dest.name}", unit="B", unit_scale=True,
                          disable=None) as bar:
                    while block := response.read(1 << 20):
                        digest.update(block)
                        out.write(block)  # a failed write is the disk's fault, not the network's
                        bar.update(len(block))
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise error(f"download of {url} failed ({reason})") from exc
        if expected is not None and not digest.hexdigest().startswith(expected):
            raise error(f"downloaded {url} has {hash_name} {digest.hexdigest()}, not the official {expected}; "
                        "discarded")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fs_error(e, dest.parent, "create the download folder") from None
    atomic_write(dest, fetch)
    return dest

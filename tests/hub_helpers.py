"""Released weights without the internet: a model's weights moved to a local URL, a file put in
a Hugging Face cache folder as huggingface_hub lays it out, a port nothing listens on."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from senet.models import registry

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def released_at(monkeypatch: pytest.MonkeyPatch, model: str, url: str) -> None:
    """Make the released weights of ``model`` (every tag, under any of its names) come from
    ``url`` and not from the hub."""
    original = registry.released_weights

    def moved(name: str) -> registry.Released | None:
        released = original(name)
        if released is not None and registry.model_info(registry.split_tag(name)[0]).name == model:
            released = dataclasses.replace(released, hf_hub_id=None, url=url)
        return released

    monkeypatch.setattr(registry, "released_weights", moved)


def hashed_copy(src: Path, folder: Path, stem: str) -> Path:
    """``src`` copied to ``folder/<stem>-<sha256 prefix><suffix>``, torch.hub's naming."""
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, folder / f"{stem}-{digest}{src.suffix}"))


def put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> None:
    """``files`` (name in the repo -> local file) as a cached snapshot of ``repo_id``'s main branch."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

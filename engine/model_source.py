"""Where a model's files are: a hub id or path as given, or kaon's generated tiny model.

The generated model is made on first use on whichever node needs it (replica or router),
under ``$KAON_CACHE_DIR`` (default ``~/.cache/kaon``); generation is atomic, so replicas
starting together on one node do not trip over each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from kaon.config import TINY_MODEL_SCHEME


def cache_dir() -> Path:
    return Path(os.environ.get("KAON_CACHE_DIR", Path.home() / ".cache" / "kaon"))


def resolve_model_path(source: str) -> str:
    """A path or hub id vLLM and transformers can load."""
    if not source.startswith(TINY_MODEL_SCHEME):
        return source
    from kaon.tiny_model import ensure_tiny_model

    size = source.removeprefix(TINY_MODEL_SCHEME)
    return str(ensure_tiny_model(cache_dir() / "models" / f"kaon-tiny-{size}", size=size))

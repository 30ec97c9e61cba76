"""Shared fixtures: the public interop vectors (read in place via SUITSRV_VECTORS)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

VECTORS_ENV = "SUITSRV_VECTORS"


def vectors_root() -> Path | None:
    """The vectors folder, or None when SUITSRV_VECTORS is unset (interop tests then skip)."""
    value = os.environ.get(VECTORS_ENV)
    return Path(value) if value else None


def suit_index() -> dict[str, Any]:
    """The SUIT vector index; fails loudly when the variable is set but the file is missing."""
    root = vectors_root()
    if root is None:
        return {"keys": {}, "vectors": []}
    with (root / "suit" / "index.json").open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


@pytest.fixture
def suit_vectors() -> Path:
    root = vectors_root()
    if root is None:
        pytest.skip(f"{VECTORS_ENV} is not set")
    path = root / "suit"
    assert path.is_dir(), f"{VECTORS_ENV} is set but {path} is missing"
    return path

"""Shared fixtures: the public interop vectors (read in place via SUITSRV_VECTORS)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

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


# --- long-running property tests: `--examples N` (scripts/fuzz props, docs/fuzzing.md) ---------

EXAMPLES_PROFILE = "suitsrv-examples"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--examples",
        type=int,
        metavar="N",
        help="run every hypothesis property with max_examples=N and no deadline",
    )


def pytest_configure(config: pytest.Config) -> None:
    n = config.getoption("--examples")
    if n is not None:
        if n < 1:
            raise pytest.UsageError("--examples must be at least 1")
        settings.register_profile(EXAMPLES_PROFILE, max_examples=n, deadline=None)
        settings.load_profile(EXAMPLES_PROFILE)


def examples(default: int) -> int:
    """A property's own ``max_examples``, unless ``--examples N`` asked for N everywhere.
    (An explicit ``@settings(max_examples=...)`` would otherwise override the loaded profile.)"""
    if settings.get_current_profile_name() == EXAMPLES_PROFILE:
        return settings.get_profile(EXAMPLES_PROFILE).max_examples
    return default

"""pytest plugin for ``scripts/fuzz props``: keep only the hypothesis property tests.

Loaded with ``-p fuzz.props_plugin``; ``--examples N`` (tests/conftest.py) sets their size.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        func = getattr(item, "obj", None)
        (keep if getattr(func, "is_hypothesis_test", False) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep

"""Shared fixtures: the two engines behind one API (docs/engine_api.md)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

ENGINE_MODULES = {"native": "arenagrad", "reference": "arenagrad.reference"}


def _load(name: str) -> ModuleType:
    """The engine's module; skips while it cannot be imported, but fails in CI, where a skip would hide it."""
    try:
        module = importlib.import_module(ENGINE_MODULES[name])
        module.Value(1.0)
    except (ImportError, AttributeError) as exc:
        reason = f"{name} engine ({ENGINE_MODULES[name]}) unavailable: {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return module


@pytest.fixture(scope="session", params=sorted(ENGINE_MODULES))
def engine(request: pytest.FixtureRequest) -> ModuleType:
    """Each engine in turn (ids "native" and "reference")."""
    return _load(request.param)


@pytest.fixture(scope="session")
def native() -> ModuleType:
    return _load("native")


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    return _load("reference")

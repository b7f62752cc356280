"""Shared fixtures: the two engines behind one API (docs/engine_api.md), and what the tests need installed.

A test whose tool or module is missing skips on a developer's machine, but fails in CI (the environment
variable CI set, as .ci/run runs), where a skip would hide that the suite did not run: CI must install
everything (the [test] extra and Graphviz's `dot`, see .ci/run). As a last guard, a CI session that skipped
anything at all ends with a failing exit status.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sysconfig
from types import ModuleType
from typing import NoReturn

import pytest

ENGINE_MODULES = {"native": "arenagrad", "reference": "arenagrad.reference"}


def in_ci() -> bool:
    """CI=true (as .ci/run and most CI services set it), 1 or yes; CI=false or 0 is not CI."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(reason: str) -> NoReturn:
    """Skips the test (or the whole module, at import time) locally; fails it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI must provide it: see .ci/run and the [test] extra)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_tool(name: str) -> str:
    """The path of the program ``name``; see missing() for what happens without it."""
    scripts = sysconfig.get_path("scripts")  # this interpreter's own, even when its venv is not activated
    path = shutil.which(name, path=os.pathsep.join([scripts, os.environ.get("PATH", os.defpath)]))
    if path is None:
        missing(f"the program {name!r} is not installed")
    return path


def require_module(name: str) -> ModuleType:
    """The module ``name``, imported; see missing() for what happens without it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        error = exc  # reported outside the handler, without the import's traceback chained to it
    missing(f"the module {name!r} cannot be imported: {error}")


@pytest.fixture
def dot_program() -> str:
    """Graphviz's ``dot``; tests use it as ``@pytest.mark.usefixtures("dot_program")``."""
    return require_tool("dot")


def _load(name: str) -> ModuleType:
    """The engine's module; skips while it cannot be imported, but fails in CI, where a skip would hide it."""
    try:
        module = importlib.import_module(ENGINE_MODULES[name])
        module.Value(1.0)
    except (ImportError, AttributeError) as exc:
        missing(f"{name} engine ({ENGINE_MODULES[name]}) unavailable: {exc!r}")
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


# --- no skips in CI ------------------------------------------------------------------------------
# Whatever skipped (a pytest.skip or skipif this file does not know about, a skipped module), a CI run
# must not pass with it: the count of tests that ran would silently shrink.

_skipped: list[str] = []


def _record_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):  # an xfail is reported as skipped, too
        _skipped.append(report.nodeid or "<collection>")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if in_ci() and _skipped:
        terminalreporter.section("skipped in CI", red=True)
        terminalreporter.line(
            f"{len(_skipped)} skipped under CI, where nothing may skip: {', '.join(_skipped)}. "
            "Make them run in CI (what they need goes into .ci/run or the [test] extra).",
            red=True,
        )

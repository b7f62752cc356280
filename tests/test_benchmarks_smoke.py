"""Smoke test of the benchmark suite: it runs end to end on tiny sizes, so it cannot rot unnoticed.

No timing assertions: the figures only have to exist and be positive. Engines the suite cannot import must be
reported as "not installed" (the suite's own design); engines that are importable here must produce figures.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("chain", "wide", "moons", "memory", "bandwidth", "derivatives", "dual", "blobs")
# What a row needs, by the start of its label (first match wins); it is "importable" when all modules are.
ROW_MODULES = (
    ("arenagrad.nn", ("arenagrad._core", "arenagrad.nn")),
    ("arenagrad", ("arenagrad._core",)),
    ("reference", ("arenagrad.reference",)),
    ("micrograd", ("micrograd.engine",)),
    ("torch", ("torch",)),
    # optional (in the [bench] extra, not in [test]): figures when importable, else "not installed"
    ("jax", ("jax",)),
)


def _importable(modules: tuple[str, ...]) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def _row_modules(variant: str) -> tuple[str, ...] | None:
    return next((mods for prefix, mods in ROW_MODULES if variant.startswith(prefix)), None)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out_json, out_md = tmp / "results.json", tmp / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--repeat", "1",
         "--json", str(out_json), "--write-md", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out_json.read_text()), proc.stdout, out_md.read_text()


def test_every_workload_has_results(quick_run: tuple[dict, str, str]) -> None:
    data, stdout, md = quick_run
    seen = {r["workload"] for r in data["results"]}
    assert seen == {*WORKLOADS, "blobs-time"}  # blobs also measures where its time goes
    for w in WORKLOADS:
        assert f"-- {w}: " in stdout, f"no {w} table printed"
        assert f"### {w}: " in md, f"no {w} table in the markdown"
    assert "Targets" in stdout and "## Targets" in md and "## Machine" in md
    assert "## Where the time goes" in md and "it takes just to move those bytes in cache" in md
    assert "## Second derivatives" in md and "Second derivatives:" in stdout
    assert "### Where the time goes (blobs)" in md and "of the matrix product's rate" in md


def test_figures_are_positive_and_engines_honest(quick_run: tuple[dict, str, str]) -> None:
    data, _, _ = quick_run
    ok_rows = 0
    for r in data["results"]:
        assert r["status"] in ("ok", "not installed", "n/a"), r
        if r["status"] == "ok":
            assert r["value"] is not None and r["value"] > 0, r
            assert r["runs"] >= 1, r
            ok_rows += 1
        modules = _row_modules(r["variant"])
        if modules is None:
            continue
        if not _importable(modules):
            assert r["status"] in ("not installed", "n/a"), r
        elif r["status"] == "not installed":
            pytest.fail(f"{modules} are importable but the suite reported them not installed: {r}")
    assert ok_rows > 0


def test_ratio_columns_against_micrograd(quick_run: tuple[dict, str, str]) -> None:
    data, stdout, _ = quick_run
    if not _importable(("micrograd.engine",)):
        assert "micrograd" in json.dumps(data["missing"])
        return
    assert "vs micrograd" in stdout
    assert "baseline" in stdout


def test_second_derivatives_cross_checked(quick_run: tuple[dict, str, str]) -> None:
    """The derivatives workload checks every engine against the others before timing (a disagreement stops
    the run, so the fixture would already have failed); here: the check ran, and ratios are vs arenagrad."""
    data, stdout, _ = quick_run
    rows = [r for r in data["results"] if r["workload"] == "derivatives"]
    assert {r["metric"] for r in rows} == {"Hessian-vector product (ms)", "full Hessian (ms)",
                                           "input Jacobian, every sample (ms)"}
    if not _importable(("arenagrad._core",)):
        return
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["variant"] for r in ok} >= {"arenagrad"}, rows
    if len({r["variant"] for r in ok}) > 1:
        assert all("agrees with" in r["note"] or "reference for the check" in r["note"] for r in ok), ok
        assert "vs arenagrad" in stdout

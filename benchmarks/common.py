"""Shared pieces of the benchmark suite: configuration, results, timing helpers and number formatting."""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent

# Where a result row comes from, so that ratio columns can find their baseline rows.
ROLE_MICROGRAD = "micrograd"
ROLE_TORCH = "torch"
ROLE_TORCH_BATCHED = "torch-batched"


@dataclass
class Config:
    """Sizes and repeat counts of one run; ``quick`` shrinks everything so the suite runs in seconds."""

    quick: bool = False
    repeat: int = 5
    # Slow cases (a single run over slow_threshold_s, and micrograd's deep backward in a subprocess) use
    # slow_repeat runs so the default run stays under ~10 minutes; the runs column states the count.
    slow_repeat: int = 3
    slow_threshold_s: float = 1.0
    chain_ops: int = 100_000
    wide_pairs: int = 100_000
    memory_nodes_hint: int = 100_000
    moons_samples: int = 100
    moons_steps: int = 100
    # torch op by op and the reference engine cost about what micrograd costs per step (~1.5 s): they time
    # a few steps only, so that the default run stays under ~10 minutes (their accuracy is then "n/a");
    # --moons-all-steps runs them for moons_steps too.
    moons_steps_slow: int = 10
    # blobs: make_blobs(blobs_samples, n_features=5, centers=2), full-batch training steps timed per engine
    blobs_samples: int = 10_000
    blobs_steps: int = 30
    seed: int = 1337

    @classmethod
    def make(cls, quick: bool, repeat: int | None) -> Config:
        if quick:
            cfg = cls(
                quick=True,
                repeat=2,
                slow_repeat=1,
                chain_ops=3_000,
                wide_pairs=3_000,
                memory_nodes_hint=3_000,
                moons_samples=16,
                moons_steps=3,
                moons_steps_slow=2,
                blobs_samples=300,
                blobs_steps=3,
            )
        else:
            cfg = cls()
        if repeat is not None:
            cfg.repeat = max(1, repeat)
            cfg.slow_repeat = max(1, min(cfg.slow_repeat, repeat))
        return cfg


@dataclass
class Result:
    """One figure of one variant on one metric (or the reason there is no figure)."""

    workload: str
    metric: str
    variant: str  # the row label, e.g. "arenagrad" or "arenagrad dot"
    value: float | None
    unit: str
    runs: int = 0  # how many measurements the median was taken over
    role: str = ""  # ROLE_* when the row is a baseline for ratio columns
    status: str = "ok"  # "ok", "not installed", "n/a", "error"
    note: str = ""
    lower_is_better: bool = True
    ratios: bool = True  # False for figures such as accuracy that have no meaningful ratio
    best: float | None = None  # the fastest run: on a shared machine, the least disturbed one
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def timing(workload: str, metric: str, variant: str, samples_ns: list[int], per: float, unit: str,
           **kw: Any) -> Result:
    """A Result from raw run times: median (the figure) and min (the 'best' column), each divided by per."""
    return Result(workload, metric, variant, median(samples_ns) / per, unit, runs=len(samples_ns),
                  best=min(samples_ns) / per, **kw)


def reps_for(cfg: Config, first_ns: int) -> int:
    """How many timed runs a measurement gets, from the duration of its untimed warm-up run."""
    return cfg.slow_repeat if first_ns > cfg.slow_threshold_s * 1e9 else cfg.repeat


def untimed(fn: Callable[[], Any]) -> Any:
    """Build something that is not being timed with the GC off: a collector pass over a big micrograd graph
    costs seconds and measures nothing here."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return fn()
    finally:
        if was_enabled:
            gc.enable()


def timed_ns(fn: Callable[[], Any], *, gc_enabled: bool = True) -> tuple[int, Any]:
    """Time one call of fn; the GC is collected first so every run starts from the same collector state."""
    gc.collect()
    was_enabled = gc.isenabled()
    if gc_enabled:
        gc.enable()
    else:
        gc.disable()
    try:
        t0 = time.perf_counter_ns()
        out = fn()
        t1 = time.perf_counter_ns()
    finally:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()
    return t1 - t0, out


def alternating(
    runs: dict[str, Callable[[], Any]], rounds: int
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Each of `runs` timed `rounds` times in alternation (A, B, C, A, B, C, ...) so that machine noise hits
    them alike: every run's times in ns, and what each returned the last time."""
    times: dict[str, list[int]] = {label: [] for label in runs}
    last: dict[str, Any] = {}
    for _ in range(rounds):
        for label, fn in runs.items():
            ns, last[label] = timed_ns(fn)
            times[label].append(ns)
    return times, last


def run_child(args: list[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python -m benchmarks.child ARGS`` and return the JSON object it prints last.

    Used where a measurement must not share this process: micrograd's deep recursive backward (raised
    recursion limit) and memory figures (a fresh heap and arena per engine).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"child exited {proc.returncode}: {' | '.join(tail)}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def fmt_num(x: float) -> str:
    """Three significant figures, with thousands separators for big numbers."""
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    if ax == 0:
        return "0"
    return f"{x:.3g}"


def fmt_ratio(base: float, value: float, lower_is_better: bool, words: tuple[str, str]) -> str:
    """'45x faster' / '3.1x slower' style ratio of value against base."""
    if base <= 0 or value <= 0:
        return ""
    better = base / value if lower_is_better else value / base
    if better >= 1:
        return f"{fmt_num(better)}x {words[0]}"
    return f"{fmt_num(1 / better)}x {words[1]}"

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


# ---- engines taking turns ----------------------------------------------------------------------------------

BLOCK = 5  # timed steps an engine runs in a row, once its turn has started
WARMUP_S = 0.02  # each turn starts with untimed steps until this many seconds have passed (at least one)...
WARMUP_UNDER_S = 0.1  # ... for engines whose step takes less than this many seconds; slower ones get none


@dataclass
class Turns:
    """One engine's part in blocked(): `steps` timed calls step(0), step(1), ... in order, and at the start of
    each of its turns untimed calls of warm(). warm() must do a step's work and leave the engine as it found
    it (a training step with learning rate 0, or one whose result is dropped; for a pure function, the call
    itself), so that how many of them run changes no result."""

    step: Callable[[int], Any]
    steps: int
    warm: Callable[[], Any]
    step_s: float | None = None  # a step's duration (s), when the caller already knows it


@dataclass
class TurnTimes:
    times: dict[str, list[int]]  # every timed step's ns, in step order
    last: dict[str, Any]  # what each engine's last timed step returned
    warmups: dict[str, int]  # how many untimed steps each engine ran


def blocked(runs: dict[str, Turns], *, block: int = BLOCK, warmup_s: float = WARMUP_S) -> TurnTimes:
    """Time several engines' steps taking turns: engine A runs untimed steps for `warmup_s` seconds and then
    `block` timed ones, then engine B does the same, and so on round-robin until each has run its timed steps
    (an engine that is done drops out; when one is left, its turns follow each other without untimed steps).
    Taking turns spreads machine noise over every engine, as strict alternation did; the blocks and their
    untimed starts keep what one engine leaves behind out of the next engine's figures.

    Why (measured on this 2-core machine): PyTorch's OpenMP workers keep spinning on a core after a parallel
    region, ~5-7 ms of CPU after a blobs or a moons torch step (per-thread CPU time from
    /proc/self/task/*/schedstat; XLA's and arenagrad's pools, which spin 100 us, ~0.1 ms), so whatever runs
    next loses a core, which no user of a single library ever sees. With the engines alternating step by step,
    blobs' arenagrad batched replay took 4.3-5.5 ms per step against 3.6-3.8 ms in a process running only
    arenagrad, and jax.jit 7.5-8.5 ms against 5.5 ms without torch; with OMP_WAIT_POLICY=passive, jax.jit's
    first step after torch's was already at its later steps' time. What it costs is time, not steps: after
    torch's turn, jax.jit's blobs steps (~5 ms) took 8-10, 7-7.6, then 5.2-5.7 ms, while in turns of 2 + 5
    steps moons' jax.jit (~0.3 ms a step, the whole turn inside torch's spinning) stayed at 0.33-0.35 ms
    against 0.26-0.27 ms in a run without torch. Untimed steps until 10 ms had passed still left jax.jit's
    first timed blobs step 5-20% slow; with 20 ms, every blobs engine was within ~3% of its figure in a
    process running it alone, no position in a turn slower than the others, and moons' jax.jit at 0.265-0.276
    ms.

    Engines whose step takes WARMUP_UNDER_S or longer get no untimed steps (decided from `step_s`, else from
    their first untimed step): a neighbour spinning for a few ms costs such a step a few per cent at most,
    once per turn, which the median absorbs, while each untimed step would cost as much as a timed one
    (micrograd's, torch 0-dim's and the reference engine's moons steps take ~1 s, and are single-threaded).

    The collector runs once before the first turn and is then left alone, as in a user's training loop. A
    gc.collect() before every step (what timed_ns does, and what the step-by-step alternation did) made every
    step start cold: once torch.optim or torch.func has been imported the heap holds ~100,000 objects more
    than the suite froze, a gc.collect() takes ~45-50 ms of one core, and afterwards jax.jit's blobs steps
    stayed 40% slow for ~30 ms, and the derivatives workload's fast runs took 1.5-6x their back-to-back time
    (jax.jit's Hessian-vector product 0.39 ms against 0.10 ms, arenagrad's hvp_batch 0.33 against 0.21 ms)."""
    times: dict[str, list[int]] = {label: [] for label in runs}
    last: dict[str, Any] = {}
    warmups = {label: 0 for label in runs}
    step_s = {label: r.step_s for label, r in runs.items()}
    previous: str | None = None
    gc.collect()  # once: from here on the collector runs as it would in the user's training loop
    while any(len(times[label]) < r.steps for label, r in runs.items()):
        for label, r in runs.items():
            done = len(times[label])
            if done >= r.steps:
                continue
            if label != previous:  # a switch: the last engine's threads may still hold a core
                start = time.perf_counter_ns()
                while time.perf_counter_ns() - start < warmup_s * 1e9:
                    known = step_s[label]
                    if known is not None and known >= WARMUP_UNDER_S:
                        break
                    t0 = time.perf_counter_ns()
                    r.warm()
                    step_s[label] = (time.perf_counter_ns() - t0) / 1e9
                    warmups[label] += 1
            for i in range(done, min(done + block, r.steps)):
                t0 = time.perf_counter_ns()
                last[label] = r.step(i)
                ns = time.perf_counter_ns() - t0
                times[label].append(ns)
                step_s[label] = ns / 1e9
            previous = label
    return TurnTimes(times, last, warmups)


def turns_text(warmups: int, timed: int, what: str = "steps") -> str:
    """How a row's steps (or runs) were taken, for its note."""
    text = f"median of {timed} {what}, taken in turns of up to {BLOCK}"
    if warmups == 0:
        return text
    return text + f" ({warmups} untimed {what if warmups > 1 else what[:-1]} at the turns' starts)"


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

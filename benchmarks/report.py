"""Tables (console and BENCHMARKS.md), ratios to the baselines, the issue's targets, and machine facts."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

from benchmarks import blobs, chain, derivatives, dual, memory, moons, wide
from benchmarks.common import ROLE_MICROGRAD, ROLE_TORCH, ROLE_TORCH_BATCHED, Result, fmt_num, fmt_ratio

WORKLOAD_ORDER = ("chain", "wide", "moons", "memory", "blobs", "derivatives", "dual")
BASELINES = ((ROLE_MICROGRAD, "vs micrograd"), (ROLE_TORCH, "vs torch 0-dim"),
             (ROLE_TORCH_BATCHED, "vs torch batched"), (derivatives.ROLE_ARENAGRAD, "vs arenagrad"),
             (blobs.ROLE_TORCH_F64, "vs torch float64"))


def _words(r: Result) -> tuple[str, str]:
    return ("less memory", "more memory") if r.unit == "bytes" else ("faster", "slower")


def _value_text(r: Result) -> str:
    if r.status != "ok" or r.value is None:
        return r.status
    return f"{fmt_num(r.value)} {r.unit}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def metric_table(results: list[Result]) -> list[str]:
    """One table for the results of one (workload, metric): value, runs, ratio columns, notes below."""
    baselines = {role: r for role, _ in BASELINES for r in results
                 if r.role == role and r.status == "ok" and r.value is not None}
    cols = [(role, title) for role, title in BASELINES if role in baselines]
    # "best" (fastest run) only where runs were repeated; "figure" where nothing was a median of several.
    with_best = any(r.best is not None and r.runs > 1 for r in results)
    header = ["variant", "median" if any(r.runs > 1 for r in results) else "figure",
              *(["best"] if with_best else []), "runs", *(title for _, title in cols)]
    rows = []
    for r in results:
        cells = [r.variant, _value_text(r)]
        if with_best:
            cells.append(f"{fmt_num(r.best)} {r.unit}" if r.best is not None and r.status == "ok" else "")
        cells.append(str(r.runs) if r.runs else "")
        for role, _ in cols:
            base = baselines[role]
            if r is base:
                cells.append("baseline")
            elif r.status == "ok" and r.value is not None and r.ratios and base.value is not None:
                cells.append(fmt_ratio(base.value, r.value, r.lower_is_better, _words(r)))
            else:
                cells.append("")
        rows.append(cells)
    lines = _table(header, rows)
    notes = [f"- {r.variant}: {r.note}" for r in results if r.note]
    return lines + (["", *notes] if notes else [])


def grouped(results: list[Result]) -> list[tuple[str, str, list[Result]]]:
    order = {w: i for i, w in enumerate(WORKLOAD_ORDER)}
    keys: list[tuple[str, str]] = []
    for r in results:
        if (r.workload, r.metric) not in keys:
            keys.append((r.workload, r.metric))
    keys.sort(key=lambda k: order.get(k[0], len(order)))
    return [(w, m, [r for r in results if r.workload == w and r.metric == m]) for w, m in keys]


def tables_text(results: list[Result], heading: str = "###") -> list[str]:
    out: list[str] = []
    for w, m, rs in grouped(results):
        out += [f"{heading} {w}: {m}", "", *metric_table(rs), ""]
    return out


# ---- targets ---------------------------------------------------------------------------------------------


def find(results: Iterable[Result], workload: str, metric: str, variant: str) -> float | None:
    for r in results:
        if (r.workload, r.metric, r.variant) == (workload, metric, variant) and r.status == "ok":
            return r.value
    return None


@dataclass
class Target:
    text: str
    check: Callable[[list[Result]], tuple[str, str]]  # -> (status, measured)


def _ratio_target(workload: str, metric: str, fast: str, slow: str, need: float) -> Callable[[list[Result]],
                                                                                            tuple[str, str]]:
    def check(rs: list[Result]) -> tuple[str, str]:
        a, b = find(rs, workload, metric, fast), find(rs, workload, metric, slow)
        if a is None or b is None:
            missing = fast if a is None else slow
            return "not measured", f"no {missing} figure in this run"
        ratio = b / a
        return ("met" if ratio >= need else "not met",
                f"{fmt_num(ratio)}x ({fast} {fmt_num(a)}, {slow} {fmt_num(b)})")

    return check


def _backward_target(rs: list[Result]) -> tuple[str, str]:
    c = find(rs, "chain", chain.M_BWD, "arenagrad")
    w = next((r.extra.get("ns_per_node") for r in rs if (r.workload, r.metric, r.variant)
              == ("wide", wide.M_BWD, "arenagrad") and r.status == "ok"), None)
    if c is None:
        return "not measured", "no arenagrad chain backward figure in this run"
    measured = f"chain {fmt_num(c)} ns/node" + (f", wide (plain) {fmt_num(w)} ns/node" if w else "")
    ok = c <= 10 and (w is None or w <= 10)
    return ("met" if ok else "not met"), measured


def _dual_target(rs: list[Result]) -> tuple[str, str]:
    r = find(rs, "dual", dual.M_SPEEDUP, dual.DUAL)
    if r is None:
        return "not measured", "no arenagrad Dual figure in this run"
    return ("met" if r >= 1 else "not met"), f"{fmt_num(r)}x eager Value's speed"


def _jvp_target(rs: list[Result]) -> tuple[str, str]:
    r = find(rs, "dual", dual.M_JVP_COST, dual.JVP)
    if r is None:
        return "not measured", "no Tape.jvp figure in this run"
    return ("met" if r <= 2 else "not met"), f"{fmt_num(r)}x a forward replay's time"


def _second_derivatives_target(rs: list[Result]) -> tuple[str, str]:
    parts = []
    met = True
    for metric, what in ((derivatives.M_HVP, "HVP"), (derivatives.M_HESS, "Hessian")):
        ours = find(rs, derivatives.WORKLOAD, metric, "arenagrad hvp_batch")
        torch_ms = find(rs, derivatives.WORKLOAD, metric, "torch.func")
        jax_ms = find(rs, derivatives.WORKLOAD, metric, "jax.jit")
        if ours is None or torch_ms is None or jax_ms is None:
            return "not measured", f"no {what} figure for arenagrad hvp_batch, torch.func and jax.jit"
        met &= ours < torch_ms and ours < jax_ms
        parts.append(f"{what} {fmt_num(ours)} ms (torch.func {fmt_num(torch_ms)}, jax.jit {fmt_num(jax_ms)})")
    return ("met" if met else "not met"), "; ".join(parts)


def _memory_target(rs: list[Result]) -> tuple[str, str]:
    v = find(rs, "memory", memory.M_WIDE, "arenagrad")
    if v is None:
        return "not measured", "no arenagrad memory figure in this run"
    return ("met" if v <= 100 else "not met"), f"{fmt_num(v)} bytes/node"


def _replay_target(rs: list[Result]) -> tuple[str, str]:
    rep = find(rs, "moons", moons.M_STEP, "arenagrad replay")
    mg = find(rs, "moons", moons.M_STEP, "micrograd")
    tb = find(rs, "moons", moons.M_STEP, "torch batched")
    if rep is None or mg is None or tb is None:
        return "not measured", "needs the 'arenagrad replay', micrograd and torch batched moons rows"
    ok = mg / rep >= 1000 and rep <= 2 * tb
    measured = f"{fmt_num(mg / rep)}x faster than micrograd; {fmt_num(rep / tb)}x torch batched's time"
    return ("met" if ok else "not met"), measured


def _batched_replay_target(rs: list[Result]) -> tuple[str, str]:
    rep = find(rs, "moons", moons.M_STEP, "arenagrad batched replay")
    tb = find(rs, "moons", moons.M_STEP, "torch batched")
    if rep is None or tb is None:
        return "not measured", "needs the 'arenagrad batched replay' and torch batched moons rows"
    measured = f"{fmt_num(rep * 1e3)} ms vs torch batched {fmt_num(tb * 1e3)} ms"
    return ("met" if rep < tb else "not met"), measured


def _blobs_target(rs: list[Result]) -> tuple[str, str]:
    labels = (blobs.AG_LABEL, blobs.TORCH64_LABEL, blobs.TORCH32_LABEL, blobs.JAX_LABEL)
    ag, t64, t32, jx = (find(rs, blobs.WORKLOAD, blobs.M_STEP, label) for label in labels)
    if ag is None or t64 is None or t32 is None or jx is None:
        missing = [label for label, v in zip(labels, (ag, t64, t32, jx)) if v is None]
        return "not measured", f"no blobs step figure for {', '.join(missing)} in this run"
    ok = t64 / ag >= 2 and ag < t32 and ag < jx
    measured = (f"arenagrad {fmt_num(ag)} ms: {fmt_ratio(t64, ag, True, ('faster', 'slower'))} than torch "
                f"float64 ({fmt_num(t64)}), torch float32 {fmt_num(t32)}, jax.jit {fmt_num(jx)}")
    return ("met" if ok else "not met"), measured


def _moons_jax_target(rs: list[Result]) -> tuple[str, str]:
    rep = find(rs, moons.WORKLOAD, moons.M_STEP, moons.BATCHED_REPLAY_LABEL)
    jx = find(rs, moons.WORKLOAD, moons.M_STEP, moons.JAX_LABEL)
    if rep is None or jx is None:
        missing = " and ".join(f"'{label}'" for label, v in ((moons.BATCHED_REPLAY_LABEL, rep),
                                                            (moons.JAX_LABEL, jx)) if v is None)
        return "not measured", f"no {missing} moons step figure in this run"
    measured = (f"{fmt_num(jx / rep)}x (arenagrad batched replay {fmt_num(rep * 1e3)} ms, jax.jit "
                f"{fmt_num(jx * 1e3)} ms)")
    return ("met" if jx / rep >= 2 else "not met"), measured


TARGETS = [
    Target("forward chain ≥20x faster per op than micrograd (default GC for both)",
           _ratio_target("chain", chain.M_FWD_ON, "arenagrad", "micrograd", 20)),
    Target("forward chain ≥5x faster per op than micrograd with GC off for both",
           _ratio_target("chain", chain.M_FWD_OFF, "arenagrad", "micrograd", 5)),
    Target("backward ≤10 ns per node", _backward_target),
    Target("moons step, plain code, ≥30x faster than micrograd",
           _ratio_target("moons", moons.M_STEP, "arenagrad", "micrograd", 30)),
    Target("moons step with arenagrad.nn ≥100x faster than micrograd",
           _ratio_target("moons", moons.M_STEP, "arenagrad.nn", "micrograd", 100)),
    Target("memory ≤100 bytes per node on wide, Python handles included", _memory_target),
    Target("Dual ops at least as fast as eager Value ops (chain, median of per-repeat ratios)", _dual_target),
    Target("Tape.jvp costs at most 2x a forward replay (chain, median of per-repeat ratios)", _jvp_target),
    Target("moons loss: Hessian-vector product and full Hessian faster than torch.func and jax.jit",
           _second_derivatives_target),
    Target("(later) replay moons step ≥1000x faster than micrograd and within 2x of PyTorch batched",
           _replay_target),
    Target("(later) batched replay faster than PyTorch batched", _batched_replay_target),
    Target("blobs step (float64) ≥2x faster than torch float64, and faster than torch float32 and jax.jit "
           "float64", _blobs_target),
    Target("moons batched replay step ≥2x faster than jax.jit's step", _moons_jax_target),
]


def targets_table(results: list[Result]) -> list[str]:
    rows = []
    for t in TARGETS:
        status, measured = t.check(results)
        rows.append([t.text, measured, status])
    return _table(["target", "measured", "status"], rows)


# ---- machine ---------------------------------------------------------------------------------------------


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> list[tuple[str, str]]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    facts = [
        ("CPU", cpu),
        ("cores", f"{usable} usable ({os.cpu_count()} online)"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("numpy", _dist_version("numpy")),
        ("torch", _dist_version("torch")),
        ("micrograd", _dist_version("micrograd")),
        ("scikit-learn", _dist_version("scikit-learn")),
        ("arenagrad", _dist_version("arenagrad")),
    ]
    if "jax" in sys.modules:  # only when this run loaded it (the moons, blobs and derivatives workloads)
        facts.append(("jax", f"{_dist_version('jax')} (jaxlib {_dist_version('jaxlib')})"))
    if "torch" in sys.modules:
        facts.append(("torch threads", str(sys.modules["torch"].get_num_threads())))
    return facts

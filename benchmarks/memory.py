"""`memory`: bytes per graph node, on `wide` (plain ops) and `chain`, each in a fresh subprocess.

A fresh process per engine and graph, so the heap and the arena start empty and no earlier workload's freed
memory is reused. What is counted, per engine:

* Python heap: tracemalloc, the bytes of every Python allocation still alive after the build (objects, dicts,
  sets, closures, handles; leaves included, their float values not when the engine keeps the caller's float).
* arenagrad: plus the arena's own bytes from `_core.arena_stats()` (delta over the build), or the native heap
  delta when that is larger: the arena's accounting does not see every native allocation the engine makes
  per node (the note then shows the part outside the arena).
* torch 0-dim: plus the native heap: glibc `mallinfo2()` delta (TensorImpl, storage, autograd nodes), minus
  the Python blocks over 512 bytes that tracemalloc already counted (pymalloc hands those to malloc).
* Cross-checks, not added in: the native-heap delta for the pure-Python engines (about 0) and the RSS delta
  for every engine, which includes allocator overhead and pymalloc's arena slack.
Not counted anywhere: allocator headers and fragmentation (except in RSS), memory mapped outside malloc.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import ROLE_MICROGRAD, ROLE_TORCH, Config, Result, fmt_num, run_child
from benchmarks.engines import ARENAGRAD, MICROGRAD, TORCH, TORCH_BATCHED, EngineSet
from benchmarks.graphs import chain_iterations

WORKLOAD = "memory"
M_WIDE = "bytes/node, wide (plain ops)"


def native_bytes(stats: dict[str, Any]) -> int:
    return int(stats["bytes"]) + int(stats.get("handle_table_bytes", 0))


M_CHAIN = "bytes/node, chain"
METRICS = (M_WIDE, M_CHAIN)
ROLES = {MICROGRAD: ROLE_MICROGRAD, TORCH: ROLE_TORCH}


def _breakdown(key: str, raw: dict[str, Any]) -> tuple[float, str, dict[str, Any]]:
    nodes = raw["nodes"]
    py = raw["py_bytes"] / nodes
    native_heap = None
    if "malloc_bytes" in raw:
        native_heap = max(0, raw["malloc_bytes"] - raw["py_big_bytes"]) / nodes
    rss = raw["rss_bytes"] / nodes if "rss_bytes" in raw else None
    parts = [f"Python {fmt_num(py)}"]
    extra: dict[str, Any] = {"nodes": nodes, "python_per_node": py, "native_heap_per_node": native_heap,
                             "rss_per_node": rss}
    total = py
    if key == ARENAGRAD:
        before, after = raw.get("arena_before"), raw.get("arena_after")
        if before and after and "bytes" in after:
            # The arena's arrays plus the binding's node -> handle table (8 bytes a slot).
            arena = (native_bytes(after) - native_bytes(before)) / nodes
            live = after.get("live", 0) - before.get("live", 0)
            arena_text = f"arena {fmt_num(arena)}, live +{live:,}"
            extra.update(arena_per_node=arena, arena_live_delta=live)
            if native_heap is not None and native_heap > arena:
                # What malloc handed out during the build is the complete native cost; the arena's own
                # figure is the part of it the engine accounts for.
                total += native_heap
                parts.append(f"native heap {fmt_num(native_heap)} ({arena_text}; "
                             f"{fmt_num(native_heap - arena)} outside the arena's accounting)")
            else:
                total += arena
                parts.append(arena_text.replace(", live", " (live") + ")")
        else:
            parts.append("arena not measured (_core.arena_stats() missing)")
    elif key == TORCH and native_heap is not None:
        total += native_heap
        parts.append(f"native heap {fmt_num(native_heap)}")
    checks = []
    if native_heap is not None and key not in (TORCH, ARENAGRAD):
        checks.append(f"native heap {fmt_num(native_heap)}")
    if rss is not None:
        checks.append(f"RSS {fmt_num(rss)}")
    note = " + ".join(parts) + f" over {nodes:,} nodes"
    if checks:
        note += f"; cross-checks, not added: {', '.join(checks)}"
    return total, note, extra


def run(cfg: Config, es: EngineSet) -> list[Result]:
    results: list[Result] = []
    sizes = {M_WIDE: ("wide", cfg.wide_pairs), M_CHAIN: ("chain", chain_iterations(cfg.chain_ops))}
    for key in es.selected:
        role = ROLES.get(key, "")
        if key == TORCH_BATCHED:
            for m in METRICS:
                results.append(Result(WORKLOAD, m, "torch batched", None, "", status="n/a",
                                      note="no per-scalar graph nodes"))
            continue
        eng = es.get(key)
        label = eng.label if eng else key
        for m in METRICS:
            if eng is None:
                results.append(Result(WORKLOAD, m, label, None, "", role=role, status="not installed",
                                      note=es.missing.get(key, "")))
                continue
            workload, size = sizes[m]
            print(f"  memory: {label} {workload} ...", flush=True)
            try:
                raw = run_child(["memory", "--engine", key, "--workload", workload, "--size", str(size)])
            except (RuntimeError, OSError, ValueError) as exc:
                results.append(Result(WORKLOAD, m, label, None, "bytes", role=role, status="error",
                                      note=str(exc)))
                continue
            total, note, extra = _breakdown(key, raw)
            results.append(Result(WORKLOAD, m, label, total, "bytes", runs=1, role=role, note=note,
                                  extra=extra))
    return results

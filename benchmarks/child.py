"""Subprocess entry point: measurements that must not share the main process.

    python -m benchmarks.child backward --engine micrograd --workload chain --size 33334 --repeat 3
    python -m benchmarks.child memory --engine arenagrad --workload wide --size 100000

Prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from typing import Any

from benchmarks.engines import LOADERS, ScalarEngine
from benchmarks.graphs import build_chain, chain_nodes, wide_data, wide_leaves, wide_plain, wide_plain_nodes


def build(eng: ScalarEngine, workload: str, size: int, data: Any) -> Any:
    if workload == "chain":
        return build_chain(eng, size)
    ws, xs = wide_leaves(eng, *data)
    return wide_plain(ws, xs), ws, xs


def nodes_of(workload: str, size: int) -> int:
    return chain_nodes(size) if workload == "chain" else wide_plain_nodes(size)


def deep_backward(eng: ScalarEngine, workload: str, size: int, repeat: int) -> dict[str, Any]:
    # Depth of the graph in nodes: 3 per chain iteration, 2 per wide pair (the add spine plus a product).
    depth = 3 * size + 10 if workload == "chain" else 2 * size + 10
    limit = max(sys.getrecursionlimit(), 2 * depth + 10_000)
    data = wide_data(size, 1337) if workload == "wide" else None
    result: dict[str, Any] = {}

    def work() -> None:
        sys.setrecursionlimit(limit)
        times = []
        for _ in range(repeat):
            gc.disable()  # the build is not timed; a collector pass over it would only cost time
            graph = build(eng, workload, size, data)
            gc.enable()
            root = graph[0]
            gc.collect()
            t0 = time.perf_counter_ns()
            eng.backward(root)
            t1 = time.perf_counter_ns()
            times.append(t1 - t0)
            del graph, root
        result["times_ns"] = times

    # CPython 3.11+ keeps Python-to-Python calls off the C stack; the big thread stack is for older ones.
    threading.stack_size(512 * 1024 * 1024)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "times_ns" not in result:
        raise SystemExit("backward failed in the worker thread")
    return {"times_ns": result["times_ns"], "recursion_limit": limit, "nodes": nodes_of(workload, size)}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]


def _malloc_in_use() -> int | None:
    """Bytes glibc malloc has handed out (all arenas, mmapped chunks included); None off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    mi = fn()
    return int(mi.uordblks + mi.hblkhd)


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _traced_big_blocks() -> int:
    """Bytes of traced Python blocks over 512 bytes: pymalloc hands those to malloc, so mallinfo sees them."""
    get = getattr(tracemalloc, "_get_traces", None)
    if get is not None:
        return sum(t[1] for t in get() if t[1] > 512)
    return sum(t.size for t in tracemalloc.take_snapshot().traces if t.size > 512)


def memory(eng: ScalarEngine, workload: str, size: int) -> dict[str, Any]:
    data = wide_data(size, 1337) if workload == "wide" else None
    nodes = nodes_of(workload, size)
    gc.collect()
    gc.disable()  # no collection may run mid-build and move the baseline

    # Build 1, without tracemalloc (its own bookkeeping goes through malloc): native heap, arena, RSS.
    stats0 = eng.arena_stats() if eng.arena_stats else None
    m0, r0 = _malloc_in_use(), _rss()
    graph = build(eng, workload, size, data)
    gc.collect()
    m1, r1 = _malloc_in_use(), _rss()
    stats1 = eng.arena_stats() if eng.arena_stats else None
    del graph
    gc.collect()

    # Build 2, with tracemalloc: the Python heap (objects, closures, sets, handles).
    tracemalloc.start()
    graph = build(eng, workload, size, data)
    gc.collect()
    py_bytes = tracemalloc.get_traced_memory()[0]
    py_big = _traced_big_blocks()
    tracemalloc.stop()
    del graph

    out: dict[str, Any] = {"nodes": nodes, "py_bytes": py_bytes, "py_big_bytes": py_big}
    if m0 is not None and m1 is not None:
        out["malloc_bytes"] = m1 - m0
    if r0 is not None and r1 is not None:
        out["rss_bytes"] = r1 - r0
    if stats0 is not None and stats1 is not None:
        out["arena_before"] = {k: stats0[k] for k in ("live", "capacity", "bytes") if k in stats0}
        out["arena_after"] = {k: stats1[k] for k in ("live", "capacity", "bytes") if k in stats1}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="benchmarks.child")
    ap.add_argument("mode", choices=("backward", "memory"))
    ap.add_argument("--engine", required=True, choices=sorted(LOADERS))
    ap.add_argument("--workload", required=True, choices=("chain", "wide"))
    ap.add_argument("--size", type=int, required=True, help="chain iterations or wide pairs")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    eng = LOADERS[args.engine]()
    if args.mode == "backward":
        out = deep_backward(eng, args.workload, args.size, args.repeat)
    else:
        out = memory(eng, args.workload, args.size)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

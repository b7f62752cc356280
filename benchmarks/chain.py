"""`chain`: a long chain x = tanh(x * w + c); forward ns per op (GC on and off), backward ns per node.

A deep chain is the worst case for recursive topological sorts: micrograd's backward raises RecursionError
past ~1,000 nodes. Any engine whose backward hits RecursionError here is measured twice instead: in this
process on the largest chain that survives the default recursion limit, and in a subprocess at full size with
the recursion limit raised (sound on CPython 3.11+, whose Python-to-Python calls do not grow the C stack; the
child also runs on a thread with a 512 MiB stack for older interpreters).
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks.common import (
    ROLE_MICROGRAD,
    ROLE_TORCH,
    Config,
    Result,
    reps_for,
    run_child,
    timed_ns,
    timing,
    untimed,
)
from benchmarks.engines import MICROGRAD, TORCH, TORCH_BATCHED, EngineSet, ScalarEngine
from benchmarks.graphs import build_chain, chain_iterations, chain_nodes

WORKLOAD = "chain"
M_FWD_ON = "forward ns/op (GC on)"
M_FWD_OFF = "forward ns/op (GC off)"
M_BWD = "backward ns/node"
METRICS = (M_FWD_ON, M_FWD_OFF, M_BWD)

ROLES = {MICROGRAD: ROLE_MICROGRAD, TORCH: ROLE_TORCH}


def time_backward(eng: ScalarEngine, n_iter: int, repeat: int) -> list[int]:
    """Backward of a fresh chain per run (the build is not timed)."""
    times = []
    for _ in range(repeat):
        root, leaves = untimed(lambda: build_chain(eng, n_iter))
        ns, _ = timed_ns(lambda root=root: eng.backward(root))
        times.append(ns)
        del root, leaves
    return times


def _largest_surviving_chain(eng: ScalarEngine, n_iter: int) -> int:
    """Largest chain (in iterations) whose backward does not hit RecursionError at the current limit."""
    k = min(n_iter, max(1, (sys.getrecursionlimit() - 50) // 3))
    while k > 1:
        root, _ = build_chain(eng, k)
        try:
            eng.backward(root)
            return k
        except RecursionError:
            k = int(k * 0.9)
    return 1


def run(cfg: Config, es: EngineSet) -> list[Result]:
    results: list[Result] = []
    n_iter = chain_iterations(cfg.chain_ops)
    n_ops = 3 * n_iter
    nodes = chain_nodes(n_iter)
    size_note = f"{n_ops:,} ops, {nodes:,} nodes"

    for key in es.selected:
        if key == TORCH_BATCHED:
            for m in METRICS:
                results.append(Result(WORKLOAD, m, "torch batched", None, "", status="n/a",
                                      note="a sequential chain has nothing to batch"))
            continue
        eng = es.get(key)
        label = eng.label if eng else key
        role = ROLES.get(key, "")
        if eng is None:
            for m in METRICS:
                results.append(Result(WORKLOAD, m, label, None, "", role=role, status="not installed",
                                      note=es.missing.get(key, "")))
            continue
        print(f"  chain: {label} ...", flush=True)

        # Forward: one warm-up (first-touch page faults, arena growth) whose time only picks the number of
        # runs, then GC on and off interleaved so that machine noise hits both alike.
        first, root = timed_ns(lambda e=eng: build_chain(e, n_iter))
        del root
        reps = reps_for(cfg, first)
        on: list[int] = []
        off: list[int] = []
        for _ in range(reps):
            for gc_enabled, bucket in ((True, on), (False, off)):
                ns, out = timed_ns(lambda e=eng: build_chain(e, n_iter), gc_enabled=gc_enabled)
                bucket.append(ns)
                del out
        for m, xs in ((M_FWD_ON, on), (M_FWD_OFF, off)):
            results.append(timing(WORKLOAD, m, label, xs, n_ops, "ns/op", role=role,
                                  note=size_note + (f"; {eng.note}" if eng.note else "")))

        results.extend(_backward_results(cfg, reps, eng, label, role, n_iter, nodes, size_note))
    return results


def _backward_results(cfg: Config, reps: int, eng: ScalarEngine, label: str, role: str, n_iter: int,
                      nodes: int, size_note: str) -> list[Result]:
    try:
        times = time_backward(eng, n_iter, reps)
        return [timing(WORKLOAD, M_BWD, label, times, nodes, "ns/node", role=role,
                       note=size_note)]
    except RecursionError:
        pass
    out: list[Result] = []
    # Full size in a subprocess with the recursion limit raised: this is the row ratios use.
    try:
        child = run_child(["backward", "--engine", eng.key, "--workload", "chain", "--size", str(n_iter),
                           "--repeat", str(cfg.slow_repeat)])
        times = child["times_ns"]
        note = (f"{size_note}; RecursionError at the default limit, so measured in a subprocess with "
                f"sys.setrecursionlimit({child['recursion_limit']:,})")
        out.append(timing(WORKLOAD, M_BWD, label, times, nodes, "ns/node",
                          role=role, note=note))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        out.append(Result(WORKLOAD, M_BWD, label, None, "ns/node", role=role, status="error", note=str(exc)))
    # And in-process, the largest chain that survives the default limit.
    k = _largest_surviving_chain(eng, n_iter)
    times = time_backward(eng, k, cfg.repeat)
    out.append(timing(WORKLOAD, M_BWD, f"{label} (default recursion limit)", times, chain_nodes(k), "ns/node",
                      note=f"largest chain that survives limit {sys.getrecursionlimit()}: "
                           f"{3 * k:,} ops, {chain_nodes(k):,} nodes"))
    return out


def build_for_child(eng: ScalarEngine, size: int) -> Any:
    return build_chain(eng, size)

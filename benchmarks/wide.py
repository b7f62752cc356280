"""`wide`: sum(w_i * x_i) over many pairs, as plain Python ops and as the engines' fused primitives.

Leaves are made before the clock starts in every variant; forward is building the graph, backward is
root.backward() on a fresh graph. Runs with the default GC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.common import (
    ROLE_MICROGRAD,
    ROLE_TORCH,
    ROLE_TORCH_BATCHED,
    Config,
    Result,
    fmt_num,
    median,
    reps_for,
    run_child,
    timed_ns,
    timing,
    untimed,
)
from benchmarks.engines import ARENAGRAD, MICROGRAD, REFERENCE, TORCH, TORCH_BATCHED, EngineSet, ScalarEngine
from benchmarks.graphs import wide_data, wide_leaves, wide_plain, wide_plain_nodes

WORKLOAD = "wide"
M_FWD = "forward ms"
M_BWD = "backward ms"
METRICS = (M_FWD, M_BWD)


@dataclass
class WideVariant:
    """One row: `make_inputs(n_data) -> state` (untimed), `forward(state) -> root` (timed)."""

    label: str
    engine: str
    make_inputs: Callable[[tuple[list[float], list[float]]], Any]
    forward: Callable[[Any], Any]
    backward: Callable[[Any], None]
    nodes: Callable[[int], int | None]  # graph nodes, for ns per node; None where that means nothing
    role: str = ""
    desc: str = ""


def scalar_variants(eng: ScalarEngine) -> list[WideVariant]:
    role = {MICROGRAD: ROLE_MICROGRAD, TORCH: ROLE_TORCH}.get(eng.key, "")

    def inputs(d: tuple[list[float], list[float]]) -> Any:
        return wide_leaves(eng, *d)

    out = [WideVariant(eng.label, eng.key, inputs, lambda st: wide_plain(*st), eng.backward, wide_plain_nodes,
                       role=role, desc="s = s + w*x")]
    if eng.key in (ARENAGRAD, REFERENCE) and eng.sum is not None:
        sum_fn = eng.sum
        out.append(WideVariant(f"{eng.label} sum()", eng.key, inputs,
                               lambda st: sum_fn([w * x for w, x in zip(*st)]), eng.backward,
                               lambda n: 3 * n + 1, desc="sum([w*x ...]): n products, one sum node"))
    if eng.key in (ARENAGRAD, REFERENCE) and eng.dot is not None:
        dot_fn = eng.dot
        out.append(WideVariant(f"{eng.label} dot", eng.key, inputs, lambda st: dot_fn(*st), eng.backward,
                               lambda n: 2 * n + 1, desc="dot(ws, xs): one node"))
    return out


def torch_batched_variant(torch: Any) -> WideVariant:
    def inputs(d: tuple[list[float], list[float]]) -> Any:
        w = torch.tensor(d[0], dtype=torch.float64, requires_grad=True)
        x = torch.tensor(d[1], dtype=torch.float64, requires_grad=True)
        return w, x

    return WideVariant("torch batched", TORCH_BATCHED, inputs, lambda st: torch.dot(*st),
                       lambda r: r.backward(), lambda n: None, role=ROLE_TORCH_BATCHED,
                       desc="torch.dot on two (n,) float64 tensors")


def run(cfg: Config, es: EngineSet) -> list[Result]:
    n = cfg.wide_pairs
    data = wide_data(n, cfg.seed)
    results: list[Result] = []
    for key in es.selected:
        variants: list[WideVariant]
        if key == TORCH_BATCHED:
            if es.torch_batched is None:
                results.extend(_missing("torch batched", ROLE_TORCH_BATCHED, es.missing.get(key, "")))
                continue
            variants = [torch_batched_variant(es.torch_batched)]
        else:
            eng = es.get(key)
            if eng is None:
                role = {MICROGRAD: ROLE_MICROGRAD, TORCH: ROLE_TORCH}.get(key, "")
                results.extend(_missing(key, role, es.missing.get(key, "")))
                continue
            variants = scalar_variants(eng)
        for v in variants:
            print(f"  wide: {v.label} ...", flush=True)
            results.extend(measure(cfg, v, data))
    return results


def _missing(label: str, role: str, why: str) -> list[Result]:
    return [Result(WORKLOAD, m, label, None, "", role=role, status="not installed", note=why)
            for m in METRICS]


def _per_node(times: list[int], nodes: int | None) -> str:
    return f"; {fmt_num(median(times) / nodes)} ns per node over {nodes:,} nodes" if nodes else ""


def _per_node_extra(times: list[int], nodes: int | None) -> dict[str, float]:
    return {"nodes": nodes, "ns_per_node": median(times) / nodes} if nodes else {}


def measure(cfg: Config, v: WideVariant, data: tuple[list[float], list[float]]) -> list[Result]:
    n = len(data[0])
    note = f"{n:,} pairs; {v.desc}"
    leaves = v.make_inputs(data)
    first, root = timed_ns(lambda lv=leaves: v.forward(lv))  # warm-up: its time only picks the run count
    del root
    reps = reps_for(cfg, first)
    fwd = []
    for _ in range(reps):
        ns, root = timed_ns(lambda lv=leaves: v.forward(lv))
        fwd.append(ns)
        del root
    del leaves
    out = [timing(WORKLOAD, M_FWD, v.label, fwd, 1e6, "ms", role=v.role, note=note)]
    nodes = v.nodes(n)
    try:
        bwd = []
        for _ in range(reps):
            st = untimed(lambda: v.make_inputs(data))
            root = untimed(lambda st=st: v.forward(st))
            ns, _ = timed_ns(lambda root=root: v.backward(root))
            bwd.append(ns)
            del root, st
        out.append(timing(WORKLOAD, M_BWD, v.label, bwd, 1e6, "ms", role=v.role,
                          note=note + _per_node(bwd, nodes), extra=_per_node_extra(bwd, nodes)))
    except RecursionError:
        # micrograd's recursive topological sort cannot walk a 2n-deep graph at the default limit.
        try:
            child = run_child(["backward", "--engine", v.engine, "--workload", "wide", "--size", str(n),
                               "--repeat", str(cfg.slow_repeat)])
            bwd = child["times_ns"]
            out.append(timing(WORKLOAD, M_BWD, v.label, bwd, 1e6, "ms", role=v.role,
                              note=note + _per_node(bwd, nodes) + "; RecursionError at the default limit, so "
                                   f"measured in a subprocess with sys.setrecursionlimit("
                                   f"{child['recursion_limit']:,})",
                              extra=_per_node_extra(bwd, nodes)))
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            out.append(Result(WORKLOAD, M_BWD, v.label, None, "ms", role=v.role, status="error",
                              note=str(exc)))
    return out

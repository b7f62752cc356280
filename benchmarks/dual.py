"""`dual`: forward mode with arenagrad.Dual against eager Value ops, per op, on the chain x = tanh(x * w + c).

The same loop runs on Value leaves (each op records a node, as in the chain workload) and on Duals: one seeded
variable (x0; w and c are constants), and three (Dual.variables: the whole gradient in x0, w and c in the same
pass, what the Value graph needs a backward for). Forward ns per op with the default GC. Value and the Duals
alternate within every repeat so machine noise hits them alike, and the speed-up row is the median over
repeats of Value's time over the Dual's in that repeat.

Forward mode on a recorded graph too: the chain recorded once as a Tape (inputs x0, w and c), then per repeat
a forward replay (``Tape.forward``) and one tangent sweep (``Tape.jvp`` along x0), alternating; the cost row
is the median over repeats of the jvp's time over the replay's.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.common import Config, Result, fmt_num, timed_ns, timing
from benchmarks.engines import ARENAGRAD, EngineSet
from benchmarks.graphs import chain_iterations

WORKLOAD = "dual"
M_FWD = "forward ns/op (GC on)"
M_SPEEDUP = "speed-up per op over eager Value (median of per-repeat ratios)"
VALUE = "arenagrad Value"
DUAL = "arenagrad Dual"
DUAL3 = "arenagrad Dual, 3 partials"
M_TAPE = "Tape forward replay and Tape.jvp, ns/op"
M_JVP_COST = "Tape.jvp's time over a forward replay's (median of per-repeat ratios)"
REPLAY = "arenagrad Tape.forward"
JVP = "arenagrad Tape.jvp"
START = (0.5, 0.9, 0.1)  # x0, w, c, as in graphs.build_chain


def chain(x: Any, w: Any, c: Any, n_iter: int) -> Any:
    for _ in range(n_iter):
        x = (x * w + c).tanh()
    return x


def run(cfg: Config, es: EngineSet) -> list[Result]:
    variants = (VALUE, DUAL, DUAL3)
    eng = es.get(ARENAGRAD)
    if eng is None:
        status = "not installed" if ARENAGRAD in es.selected else "n/a"
        note = es.missing.get(ARENAGRAD, "needs --engines arenagrad")
        return [Result(WORKLOAD, M_FWD, v, None, "", status=status, note=note) for v in variants]
    Dual = eng.module.Dual
    Value = eng.module.Value
    leaves = {
        VALUE: lambda: [Value(x) for x in START],
        DUAL: lambda: [Dual(START[0], 1.0), Dual(START[1]), Dual(START[2])],
        DUAL3: lambda: Dual.variables(START),
    }
    n_iter = chain_iterations(cfg.chain_ops)
    n_ops = 3 * n_iter
    print("  dual: Value, Dual, Dual with 3 partials ...", flush=True)
    times: dict[str, list[int]] = {v: [] for v in variants}
    for k in range(cfg.repeat + 1):  # the first round warms up and is not counted
        for v in variants[k % 3:] + variants[: k % 3]:  # rotate which runs first
            ns, out = timed_ns(lambda v=v: chain(*leaves[v](), n_iter))
            del out  # a Value graph is freed outside the clock
            if k:
                times[v].append(ns)
    size_note = f"{n_ops:,} ops"
    results = [
        timing(WORKLOAD, M_FWD, VALUE, times[VALUE], n_ops, "ns/op", note=f"{size_note}; records the graph"),
        timing(WORKLOAD, M_FWD, DUAL, times[DUAL], n_ops, "ns/op", note=f"{size_note}; d/dx0 only"),
        timing(WORKLOAD, M_FWD, DUAL3, times[DUAL3], n_ops, "ns/op",
               note=f"{size_note}; the gradient in x0, w and c, no backward needed"),
    ]
    for v in (DUAL, DUAL3):
        ratios = [a / b for a, b in zip(times[VALUE], times[v])]
        results.append(Result(WORKLOAD, M_SPEEDUP, v, statistics.median(ratios), "x", runs=len(ratios),
                              lower_is_better=False, ratios=False,
                              note=f"per repeat: {', '.join(fmt_num(r) for r in ratios)}"))
    return results + _tape_forward_mode(eng.module, cfg, n_iter, n_ops)


def _tape_forward_mode(ag: Any, cfg: Config, n_iter: int, n_ops: int) -> list[Result]:
    """The chain as a Tape: a forward replay against a jvp along x0, alternating within every repeat."""
    leaves = [ag.Value(x) for x in START]
    tape = ag.Tape(chain(*leaves, n_iter), leaves)
    point = list(START)
    along_x0 = [1.0, 0.0, 0.0]
    print("  dual: Tape.forward and Tape.jvp ...", flush=True)
    calls = {REPLAY: lambda: tape.forward(point), JVP: lambda: tape.jvp(along_x0)}
    times: dict[str, list[int]] = {REPLAY: [], JVP: []}
    for k in range(cfg.repeat + 1):
        for v in (REPLAY, JVP) if k % 2 else (JVP, REPLAY):
            ns, _ = timed_ns(calls[v])
            if k:
                times[v].append(ns)
    note = f"{n_ops:,} ops recorded once; "
    ratios = [j / f for j, f in zip(times[JVP], times[REPLAY])]
    return [
        timing(WORKLOAD, M_TAPE, REPLAY, times[REPLAY], n_ops, "ns/op",
               note=note + "values recomputed in place"),
        timing(WORKLOAD, M_TAPE, JVP, times[JVP], n_ops, "ns/op", note=note + "one tangent sweep along x0"),
        Result(WORKLOAD, M_JVP_COST, JVP, statistics.median(ratios), "x", runs=len(ratios), ratios=False,
               note=f"per repeat: {', '.join(fmt_num(r) for r in ratios)}"),
    ]

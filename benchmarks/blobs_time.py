"""Where the time of the blobs step goes: arenagrad's batched passes against this machine's peak.

Measured in the blobs run (``blobs.run`` calls ``measure`` when arenagrad is among the engines):

* the machine, both cores: float64 matrix-multiply throughput (numpy's BLAS on a 1024x1024 product, which
  uses every core), and copy bandwidth (numpy ``copyto``, bytes read + written, one thread per core, each on
  its own buffer) from DRAM (64 MiB buffers) and in cache (128 KiB buffers);
* arenagrad's ``forward_batch`` and ``backward_batch`` on the blobs tape, alone (median of ``repeat`` runs);
* what those passes must do, counted from the model: the layers' multiply-adds (forward: one per weight and
  sample; backward: two, for the input's and the weight's gradient) and the bytes of the rows that must
  reach memory at least once (forward writes every row; backward reads them and writes a grad row for each).

``analysis()`` turns the figures into the paragraph BENCHMARKS.md prints under the blobs section.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from benchmarks.common import Result, median

WORKLOAD = "blobs-time"
M_PEAK = "machine peak"
M_PASS = "arenagrad pass"


def _best(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _matmul_gflops(repeat: int) -> float:
    import numpy as np

    n = 1024
    a = np.random.default_rng(0).random((n, n))
    b = np.random.default_rng(1).random((n, n))
    a @ b  # warm-up: thread pool, pages
    return 2 * n**3 / _best(lambda: a @ b, repeat) / 1e9


def _copy_gbs(nbytes: int, threads: int, repeat: int) -> float:
    """Bytes read + written per second by `threads` threads, each copying its own buffer (numpy releases the
    GIL in copyto)."""
    import numpy as np

    bufs = [(np.random.default_rng(i).random(nbytes // 8), np.empty(nbytes // 8)) for i in range(threads)]
    inner = max(3, int(2e8 // nbytes))

    def copy(src: np.ndarray, dst: np.ndarray) -> None:
        for _ in range(inner):
            np.copyto(dst, src)

    def once() -> None:
        workers = [threading.Thread(target=copy, args=pair) for pair in bufs]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    once()
    return 2 * nbytes * inner * threads / _best(once, repeat) / 1e9


def measure(forward: Callable[[], object], backward: Callable[[], object], n: int, rows: int,
            stored: Callable[[], int], layers: tuple[int, ...], repeat: int) -> list[Result]:
    """The machine's peaks and arenagrad's two passes; `rows` is the tape's row count (inputs and nodes),
    `stored()` the bytes per sample the tape keeps after a forward pass (Tape.batch_bytes_per_sample)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    print("  blobs: where the time goes ...", flush=True)
    macs = sum(a * b for a, b in zip(layers[:-1], layers[1:])) * n
    # backward: every weight's gradient (a multiply-add per weight and sample), and every layer's inputs'
    # gradients but the first's: the step asks for no gradients of the data (input_grads=False)
    backward_macs = 2 * macs - layers[0] * layers[1] * n
    fwd = []
    for _ in range(max(repeat, 9)):
        t = time.perf_counter_ns()
        forward()
        fwd.append(time.perf_counter_ns() - t)
    per_sample = stored()
    row_bytes = per_sample * n  # written by forward, read back by backward
    bwd = []
    for _ in range(max(repeat, 9)):
        t = time.perf_counter_ns()
        backward()
        bwd.append(time.perf_counter_ns() - t)
    return [
        Result(WORKLOAD, M_PEAK, "float64 matmul, all cores", _matmul_gflops(repeat), "GFlop/s", runs=repeat,
               ratios=False),
        Result(WORKLOAD, M_PEAK, "copy from DRAM, all cores", _copy_gbs(64 << 20, cores, repeat), "GB/s",
               runs=repeat, ratios=False),
        Result(WORKLOAD, M_PEAK, "copy in cache, all cores", _copy_gbs(128 << 10, cores, repeat), "GB/s",
               runs=repeat, ratios=False),
        Result(WORKLOAD, M_PASS, "forward_batch", median(fwd) / 1e6, "ms", runs=len(fwd), ratios=False,
               extra={"flops": 2 * macs, "bytes": row_bytes, "samples": n, "bytes_per_sample": per_sample,
                      "rows": rows}),
        Result(WORKLOAD, M_PASS, "backward_batch", median(bwd) / 1e6, "ms", runs=len(bwd), ratios=False,
               extra={"flops": 2 * backward_macs, "bytes": row_bytes, "samples": n}),
    ]


def analysis(results: list[Result]) -> list[str]:
    """The "Where the time goes" paragraph for blobs, or nothing when it was not measured."""
    got = {r.variant: r for r in results if r.workload == WORKLOAD and r.value is not None}
    needed = ("float64 matmul, all cores", "copy from DRAM, all cores", "copy in cache, all cores",
              "forward_batch", "backward_batch")
    if any(k not in got for k in needed):
        return []
    flops_peak = got[needed[0]].value
    dram = got[needed[1]].value
    cache = got[needed[2]].value
    assert flops_peak is not None and dram is not None and cache is not None
    lines = [
        f"This machine, all cores: {flops_peak:.1f} GFlop/s in a float64 matrix product (numpy's BLAS), "
        f"{dram:.1f} GB/s copying from DRAM and {cache:.1f} GB/s in cache (bytes read + written). "
        f"arenagrad's two passes over the {got['forward_batch'].extra['samples']:,} samples, timed alone:",
        "",
    ]
    worst = 0.0
    for name in ("forward_batch", "backward_batch"):
        r = got[name]
        assert r.value is not None
        flops, nbytes = r.extra["flops"], r.extra["bytes"]
        seconds = r.value / 1e3
        flop_share = flops / seconds / 1e9 / flops_peak
        byte_share = nbytes / seconds / 1e9 / dram
        worst = max(worst, flop_share, byte_share)
        lines.append(
            f"- {name}: {r.value:.3g} ms for {flops / 1e6:.3g} MFlop of the layers' multiply-adds "
            f"({flops / seconds / 1e9:.1f} GFlop/s, {100 * flop_share:.0f}% of the matrix product's rate) "
            f"and at least {nbytes / 1e6:.1f} MB of rows ({nbytes / seconds / 1e9:.1f} GB/s, "
            f"{100 * byte_share:.0f}% of the DRAM copy rate)."
        )
    fwd = got["forward_batch"].extra
    stored_rows = fwd["bytes_per_sample"] // 8
    all_rows = fwd["rows"] + 1  # inputs, nodes, and the row of zeros unary ops read as their second operand
    verdict = (
        "Neither bound is near: "
        if worst < 0.5
        else "One bound is within a factor of two; beyond it, "
    )
    lines += [
        "",
        f"Memory: the tape keeps {fwd['bytes_per_sample']:,} bytes per sample between the passes "
        f"({stored_rows} of its {all_rows} rows: the inputs, the roots, the values some derivative reads "
        f"and a row of zeros); every other row and every gradient lives only while its tile of 256 samples "
        f"runs, in per-thread buffers. Storing every row would take {8 * all_rows:,} bytes per sample.",
        "",
        verdict + "the layer kernels keep blocks of 4 neurons x 8 samples (forward, and the rows' gradients) "
        "and 3 x 4 weights' four-lane sums (backward) in registers, with bias adds folded in; without FMA "
        "contraction (which would change the bits) each multiply-add is two floating-point instructions, "
        "where the matrix product issues one fused multiply-add. The rest is a tile's bookkeeping "
        "(zeroing its gradients, lane sums, the loss's exp and log) and handing work to the second thread "
        "twice a step.",
        "",
    ]
    return lines

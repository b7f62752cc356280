"""Run arenagrad's benchmark suite: every engine side by side in one process.

    python benchmarks/run.py                  # full sizes, ~10 minutes
    python benchmarks/run.py --quick          # tiny sizes, seconds
    python benchmarks/run.py --only chain,wide --engines arenagrad,micrograd --repeat 9
    python benchmarks/run.py --only derivatives --engines arenagrad,torch-batched,jax
    python benchmarks/run.py --only dual --engines arenagrad --repeat 15   # Dual vs eager Value per op
    python benchmarks/run.py --only blobs --engines arenagrad,torch-batched,jax   # the notebooks' experiment
    python benchmarks/run.py --only moons --engines arenagrad,torch-batched,jax --quick
    python benchmarks/run.py --write-md       # also rewrite BENCHMARKS.md

See benchmarks/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    # Run as a script: make the repository root importable so `benchmarks.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bandwidth, blobs, blobs_time, chain, derivatives, dual, memory, moons, report, wide
from benchmarks.common import BLOCK, REPO_ROOT, WARMUP_S, WARMUP_UNDER_S, Config, Result
from benchmarks.engines import ALL_ENGINES, JAX, load_engines

WORKLOADS = {
    "chain": chain.run,
    "wide": wide.run,
    "moons": moons.run,
    "blobs": blobs.run,
    "memory": memory.run,
    "bandwidth": bandwidth.run,
    "derivatives": derivatives.run,
    "dual": dual.run,
}
# The workloads that know the jax engine key; the others never see it (it is not a scalar engine).
JAX_WORKLOADS = ("moons", "derivatives", "blobs")


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        bad = [s for s in items if s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds); figures not representative")
    ap.add_argument("--repeat", type=int, default=None, help="runs per figure, median reported (default 5)")
    ap.add_argument("--only", type=_csv(tuple(WORKLOADS)), default=tuple(WORKLOADS),
                    help=f"comma-separated workloads ({', '.join(WORKLOADS)})")
    ap.add_argument("--engines", type=_csv(ALL_ENGINES), default=ALL_ENGINES,
                    help=f"comma-separated engines ({', '.join(ALL_ENGINES)})")
    ap.add_argument("--moons-steps", type=int, default=None, help="training steps per moons variant")
    ap.add_argument("--moons-all-steps", action="store_true",
                    help="run torch 0-dim and the reference engine for every moons step too (+~4 minutes)")
    ap.add_argument("--torch-threads", type=int, default=None, metavar="N",
                    help="torch.set_num_threads(N) (default: torch's own default, recorded in the report)")
    ap.add_argument("--write-md", nargs="?", const=str(REPO_ROOT / "BENCHMARKS.md"), default=None,
                    metavar="PATH", help="rewrite BENCHMARKS.md (or PATH) with this run's figures")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the raw results as JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.make(args.quick, args.repeat)
    if args.moons_steps is not None:
        cfg.moons_steps = max(1, args.moons_steps)
    if args.moons_all_steps:
        cfg.moons_steps_slow = cfg.moons_steps
    command = "python benchmarks/run.py" + "".join(" " + shlex.quote(a) for a in (sys.argv[1:] if argv is None
                                                                                   else argv))
    t_start = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = _load()

    # jax is imported only when a workload that uses it runs.
    engines = args.engines if any(w in args.only for w in JAX_WORKLOADS) else tuple(
        k for k in args.engines if k != JAX)
    es = load_engines(engines)
    scalar_es = dataclasses.replace(es, selected=tuple(k for k in es.selected if k != JAX))
    if args.torch_threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, args.torch_threads))
    for key in engines:
        print(f"{key}: {es.missing.get(key, 'loaded')}")
    if any(w in args.only for w in ("moons", "blobs")):
        try:
            import sklearn.datasets  # noqa: F401  (imported now so gc.freeze below covers it)
        except ImportError:
            pass
    # Move everything imported so far (torch, sklearn, ...) out of the collector's reach, so that the
    # "GC on" figures do not depend on which other engines this run happened to load.
    gc.collect()
    gc.freeze()

    results: list[Result] = []
    for name in args.only:
        print(f"[{name}]", flush=True)
        results.extend(WORKLOADS[name](cfg, es if name in JAX_WORKLOADS else scalar_es))
    elapsed = time.perf_counter() - t_start
    run_info = RunInfo(command, started, elapsed, load_start, _load())

    lines = render(results, cfg, es.missing, run_info, markdown=False)
    print("\n".join(lines))
    if args.write_md:
        md = render(results, cfg, es.missing, run_info, markdown=True)
        Path(args.write_md).write_text("\n".join(md) + "\n")
        print(f"wrote {args.write_md}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "quick": cfg.quick, "elapsed_s": elapsed,
                                               "missing": es.missing,
                                               "results": [r.to_json() for r in results]}, indent=1))
    return 0


METHOD = f"""\
## How the figures are taken

- Every engine runs in one process (`python benchmarks/run.py`); every figure is the median of several
  runs (the `runs` column): `--repeat` runs (default 5) for chain and wide, every timed training step for
  moons and blobs. Exceptions, run in subprocesses: micrograd's deep backward (below, fewer runs) and
  memory (a fresh process per engine and graph).
- After the engines are imported the suite calls `gc.freeze()`, so the "GC on" figures do not depend on
  which other libraries the run loaded; each timed run of chain, wide and dual starts after a
  `gc.collect()`.
- moons, blobs and derivatives time several libraries against each other: the engines take turns. Each
  turn is untimed steps for {WARMUP_S * 1e3:g} ms (none for engines whose step takes {WARMUP_UNDER_S:g} s
  or more), then {BLOCK} timed steps, then the next engine, round-robin, so that machine noise hits every
  engine alike while no figure includes the steps right after another library's: PyTorch's OpenMP threads
  keep spinning on a core for ~5-7 ms after its step, which no user of one library sees (with the engines
  alternating step by step, blobs' arenagrad step took 4.3-5.5 ms instead of its 3.6-3.8 ms alone, and
  jax.jit's 7.5-8.5 ms instead of 5.5). The untimed training steps use learning rate 0 (JAX's blobs step:
  its result is dropped), so the weights, accuracies and losses are those of the scheduled steps alone.
  The collector runs once before the first turn, then as in a training loop (a `gc.collect()` before every
  step made every step start cold: with torch.optim imported, one takes ~45 ms).
- chain: `x = (x * w + c).tanh()` repeated, with leaves `w` and `c` shared; forward is building the graph,
  timed with the default GC and with `gc.disable()`; backward is `root.backward()` on a fresh graph, per
  node (ops plus the three leaves). micrograd 0.1.0 has no `tanh`: the suite adds one written exactly like
  its `relu` (one node, one closure, `math.tanh`).
- micrograd's recursive topological sort raises RecursionError past ~1,000 nodes. Its backward is therefore
  measured at full size in a subprocess that raises the recursion limit (sound on CPython 3.11, which keeps
  Python-to-Python calls off the C stack; the child also runs on a 512 MiB thread stack), and, for chain,
  also in-process on the largest chain the default limit survives. Ratios use the full-size figure.
- wide: leaves made before the clock starts; plain ops are `s = s + w*x`; `sum()`/`dot` are the engines'
  one-node primitives; torch batched is `torch.dot` on two float64 vectors.
- moons: micrograd's demo with its seed (1337), data (`make_moons(100, noise=0.1)`), initial weights (all
  variants start from the weights micrograd.nn draws), hinge loss + 1e-4 L2, SGD lr 1.0 → 0.1. The step
  time covers inputs, forward, loss, zero_grad, backward and the update. torch 0-dim and the reference
  engine run only a few steps by default (each costs about what micrograd costs; `--moons-all-steps` runs
  them fully), so they have no accuracy figure then. The jax.jit row does torch batched's step as one
  jitted function (forward, loss, gradient, update, accuracy), compiled before timing; its timed step
  includes waiting for the result and converting the loss and accuracy to Python floats.
- blobs (its own section): the notebooks' experiment, `make_blobs(10000, n_features=5, centers=2)`, a
  linear 5-25-25-2 stack, mean cross-entropy, SGD lr 0.01, full batch; every engine from the same float64
  weights. The engines take turns (above), each step timed whole (forward, loss, zero_grad, backward,
  update); each engine's losses at the initial weights and after one step are checked against arenagrad's
  (1e-10 relative; torch float32 1e-5) before timing. JAX's step is jit-compiled before timing.
- derivatives (the "Second derivatives" section): the moons loss as a function of its 337 parameters, at
  the moons initial weights with small nonzero biases; a Hessian-vector product, the full Hessian, and the
  score's Jacobian w.r.t. the inputs of every sample. Engines take turns (above) and are cross-checked
  (to 1e-10 relative) before timing; JAX (float64, CPU) is jit-compiled first, arenagrad (`arenagrad.func`)
  and torch.func rebuild their graphs on every call. Runs per figure: `--repeat` at least, more for fast
  figures (up to ~1 s per engine and figure, at most 41).
- memory: each engine and graph in a fresh subprocess. Python heap via tracemalloc (allocations alive
  after the build, leaves and handles included); native memory via glibc `mallinfo2()` deltas (minus the
  Python blocks malloc also saw) for torch, and for arenagrad `_core.arena_stats()` byte deltas or the
  native heap delta when that is larger (the note shows the part outside the arena's accounting). The
  arena's arrays grow by doubling, so its per-node bytes depend on where the node count falls between
  powers of two. RSS deltas are shown as a cross-check, not added in. Not counted: allocator headers and
  fragmentation (only RSS sees them).
"""


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class RunInfo:
    command: str
    started: datetime.datetime
    elapsed: float
    load_start: float | None  # 1-minute load average: the machine is shared, so say how busy it was
    load_end: float | None

    def load_text(self) -> str:
        if self.load_start is None or self.load_end is None:
            return "load average unknown"
        return f"1-minute load average {self.load_start:.2f} at start, {self.load_end:.2f} at end"


def render(results: list[Result], cfg: Config, missing: dict[str, str], run: RunInfo, *,
           markdown: bool) -> list[str]:
    command, started, elapsed = run.command, run.started, run.elapsed
    lines: list[str] = []
    if markdown:
        lines += ["# Benchmarks", "",
                  "Written by `benchmarks/run.py --write-md`; every figure below was measured in the run "
                  "described here. See `benchmarks/README.md` for the workloads.", ""]
        if cfg.quick:
            lines += ["**Quick run (tiny sizes): these figures are not representative.**", ""]
        lines += [f"- command: `{command}`",
                  f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}, {elapsed:.0f} s in all",
                  f"- machine load: {run.load_text()} (the machine is shared; noise shows as spread between "
                  "runs)",
                  f"- sizes: chain {cfg.chain_ops:,} ops, wide {cfg.wide_pairs:,} pairs, moons "
                  f"{cfg.moons_samples} samples × {cfg.moons_steps} steps, blobs {cfg.blobs_samples:,} "
                  f"samples × {cfg.blobs_steps} steps; repeat {cfg.repeat} "
                  f"(micrograd's deep backward: {cfg.slow_repeat})", ""]
        lines += ["## Machine", "", *report._table(["", ""], [[k, v] for k, v in report.machine_facts()]), ""]
    else:
        lines += ["", "=" * 100, f"{command}   ({elapsed:.0f} s; {run.load_text()})"]
        lines += ["machine: " + "; ".join(f"{k} {v}" for k, v in report.machine_facts()), ""]
    if missing:
        lines += ["## Engines not installed" if markdown else "Engines not installed:", ""]
        lines += [f"- {k}: {v}" for k, v in missing.items()] + [""]
    lines += ["## Targets (from the performance issue)" if markdown else "Targets:", ""]
    lines += [*report.targets_table(results), ""]
    own_sections = (derivatives.WORKLOAD, blobs.WORKLOAD, blobs_time.WORKLOAD)
    general = [r for r in results if r.workload not in own_sections]
    lines += ["## Results" if markdown else "Results:", ""]
    lines += report.tables_text(general, "###" if markdown else "--")
    where = bandwidth.analysis(results)
    if where:
        lines += ["## Where the time goes" if markdown else "Where the time goes:", "", *where, ""]
    exp = blobs.section(results, "###" if markdown else "--", cfg)
    if exp:
        lines += [f"## {blobs.TITLE}" if markdown else f"{blobs.TITLE}:", "", *exp]
    second = derivatives.section(results, "###" if markdown else "--", cfg)
    if second:
        lines += [f"## {derivatives.TITLE}" if markdown else f"{derivatives.TITLE}:", "", *second]
    if markdown:
        lines += [METHOD]
    return lines


if __name__ == "__main__":
    sys.exit(main())

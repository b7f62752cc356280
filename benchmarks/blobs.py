"""`blobs`: the notebooks' experiment: a linear 5-25-25-2 classifier trained full batch on make_blobs.

Data: ``sklearn.datasets.make_blobs(10000, n_features=5, centers=2, random_state=0)`` (--quick: 300 samples).
Model: three linear layers with no activation in between (torch's ``nn.Sequential(Linear(5, 25),
Linear(25, 25), Linear(25, 2))``), cross-entropy loss averaged over the samples, plain SGD with lr 0.01, full
batch. Every engine starts from the same float64 weights, drawn once with numpy (seeded; torch.nn.Linear's
default scale, uniform in +-1/sqrt(fan_in) for weights and biases).

A step is forward + loss + zero_grad + backward + SGD update; the figure is the median over the timed steps.
The engines take turns (common.blocked): engine A runs untimed steps for 20 ms and then five timed ones, then
engine B, and so on round-robin, so that machine noise hits them alike while no engine's figure includes the
steps right after another library's, whose worker threads may still be spinning (torch's OpenMP pool, ~5-7 ms
after its step: with the engines alternating step by step, jax.jit's step took 7.5-8.5 ms instead of 5.5,
arenagrad's 4.3-5.5 ms instead of 3.6-3.8; see blocked()). The untimed steps leave the weights as they were
(``Trainer.warm``: the step with learning rate 0, or for JAX the step with its result dropped), so every
engine trains for exactly the timed steps and the losses are those of a run without them. Rows:

- arenagrad batched replay: ONE sample's loss ``logsumexp(logits) - dot(onehot, logits)`` recorded once as a
  Tape (inputs: the 5 features and the one-hot label; parameters: Values shared by every sample, each neuron
  ``arenagrad.dot(w_row, x) + b``); a step is ``forward_batch`` of the (n, 7) rows, ``ParamGroup.zero_grad``,
  ``backward_batch(1/n, input_grads=False)`` and ``ParamGroup.sgd_step``.
- torch float64 / torch float32: the nn.Sequential on the (n, 5) tensor, ``F.cross_entropy``,
  ``torch.optim.SGD``; torch's default thread count (recorded in the note). Ratios are against torch float64.
- jax.jit float64: a jitted step (``value_and_grad`` of the mean cross-entropy, then ``p - lr * g``),
  compiled before the clock starts; optional (a "not installed" row when jax does not import).

Before anything is timed, every engine runs two steps from the initial weights and both losses (at the
initial weights, and after one update: that one checks the gradients and the update too) must agree with
arenagrad's to 1e-10 relative (torch float32: 1e-5), or the run stops with LossesDisagree. arenagrad's
batched per-sample losses and per-sample gradients are also checked against an eager arenagrad evaluation of
the same samples. The engines are then reset to the initial weights and timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import blobs_time
from benchmarks.common import BLOCK, WARMUP_S, Config, Result, Turns, blocked, timing, turns_text
from benchmarks.engines import ARENAGRAD, JAX, TORCH_BATCHED, EngineSet, NotAvailable, jax_cpu_float64

WORKLOAD = "blobs"
TITLE = "blobs: the notebooks' experiment"
M_STEP = "ms per training step"
M_LOSS = "loss after training"
METRICS = (M_STEP, M_LOSS)
LAYERS = (5, 25, 25, 2)
LR = 0.01
RANDOM_STATE = 0  # make_blobs(..., random_state=0)
RTOL = 1e-10  # |loss - reference| / |reference| allowed for float64 engines
RTOL_F32 = 1e-5  # ... and for torch float32
EAGER_SAMPLES = 16  # samples of arenagrad's batched replay checked against eager evaluation

# The row every ratio in this workload is taken against (report.BASELINES turns it into "vs torch float64").
ROLE_TORCH_F64 = "torch-float64"
AG_LABEL = "arenagrad batched replay"
TORCH64_LABEL = "torch float64"
TORCH32_LABEL = "torch float32"
JAX_LABEL = "jax.jit float64"


class LossesDisagree(AssertionError):
    """Two engines computed different losses from the same weights: their timings would not be comparable."""


@dataclass
class BlobsData:
    X: np.ndarray  # (n, 5) float64
    y: np.ndarray  # (n,) int64, 0 or 1
    init: list[tuple[np.ndarray, np.ndarray]]  # per layer: W (out, in), b (out,), float64

    @property
    def n(self) -> int:
        return len(self.X)


def n_params(layers: tuple[int, ...] = LAYERS) -> int:
    return sum((nin + 1) * nout for nin, nout in zip(layers[:-1], layers[1:]))


def make_data(cfg: Config) -> BlobsData:
    from sklearn.datasets import make_blobs

    X, y = make_blobs(cfg.blobs_samples, n_features=LAYERS[0], centers=LAYERS[-1], random_state=RANDOM_STATE)
    rng = np.random.default_rng(cfg.seed)
    init = []
    for nin, nout in zip(LAYERS[:-1], LAYERS[1:]):
        bound = 1.0 / np.sqrt(nin)  # torch.nn.Linear's default init scale
        init.append((rng.uniform(-bound, bound, (nout, nin)), rng.uniform(-bound, bound, nout)))
    return BlobsData(np.ascontiguousarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64), init)


@dataclass
class Trainer:
    """One engine's training loop: step() is what is timed; evaluate() and reset() are not."""

    label: str
    step: Callable[[], float]  # one training step; returns the loss its forward computed
    warm: Callable[[], object]  # a step's whole work that leaves the weights as they were (untimed)
    evaluate: Callable[[], tuple[float, float]]  # (loss, accuracy) at the current weights
    reset: Callable[[], None]  # back to the initial weights
    role: str = ""
    rtol: float = RTOL
    note: str = ""
    checks: Callable[[], str] | None = None  # engine-specific extra checks (untimed), raise on failure
    # arenagrad only: its forward and backward passes alone, the tape's row count and its stored bytes per
    # sample after a forward pass (blobs_time)
    passes: tuple[Callable[[], object], Callable[[], object], int, Callable[[], int]] | None = None


@dataclass
class Missing:
    label: str
    status: str
    note: str
    role: str = ""


# ---- arenagrad: one sample's loss recorded once, replayed for the whole batch ------------------------------


def make_arenagrad(data: BlobsData, es: EngineSet) -> Trainer:
    eng = es.get(ARENAGRAD)
    if eng is None:
        raise NotAvailable(es.missing.get(ARENAGRAD, "not installed"))
    ag = eng.module
    missing = [name for name, ok in (("Tape", hasattr(ag, "Tape")), ("ParamGroup", hasattr(ag, "ParamGroup")),
                                     ("logsumexp", hasattr(ag, "logsumexp")))
               if not ok]
    if missing or not hasattr(ag.Tape, "backward_batch"):
        raise NotAvailable(f"this arenagrad lacks {', '.join(missing) or 'Tape.backward_batch'}", "n/a")

    layers = [([[ag.Value(float(w)) for w in row] for row in W], [ag.Value(float(v)) for v in b])
              for W, b in data.init]
    params = [p for Ws, bs in layers for row, b in zip(Ws, bs) for p in (*row, b)]

    def sample_loss(x: list[Any], onehot: list[Any]) -> tuple[Any, list[Any]]:
        h = x
        for Ws, bs in layers:
            h = [ag.dot(row, h) + b for row, b in zip(Ws, bs)]
        return ag.logsumexp(h) - ag.dot(onehot, h), h

    xs = [ag.Value(0.0) for _ in range(LAYERS[0])]
    onehot = [ag.Value(1.0), ag.Value(0.0)]
    loss, logits = sample_loss(xs, onehot)
    tape = ag.Tape(loss, [*xs, *onehot])
    group = ag.ParamGroup(params)
    init = np.array(group.data, dtype=np.float64)
    labels = np.eye(LAYERS[-1])[data.y]
    batch = np.ascontiguousarray(np.hstack([data.X, labels]))
    inv_n = 1.0 / data.n

    def step(lr: float = LR) -> float:
        loss = float(tape.forward_batch(batch).mean())
        group.zero_grad()
        tape.backward_batch(inv_n, input_grads=False)
        group.sgd_step(lr=lr)
        return loss

    def evaluate() -> tuple[float, float]:
        loss = float(tape.forward_batch(batch).mean())
        out = np.column_stack([tape.batch_values(v) for v in logits])
        return loss, float(np.mean(out.argmax(axis=1) == data.y))

    def reset() -> None:
        group.data = init
        group.zero_grad()

    def eager_check() -> str:
        """Per-sample losses (and gradients, when backward_batch has reduce='none') of the batched replay
        against eager arenagrad on the same samples, at the current weights; raises past 1e-12 relative."""
        idx = np.unique(np.linspace(0, data.n - 1, min(EAGER_SAMPLES, data.n)).astype(int))
        batched = np.asarray(tape.forward_batch(batch), dtype=np.float64)[idx]
        per_sample = None
        try:
            per_sample = np.asarray(tape.backward_batch(1.0, reduce="none", params=params))[idx]
        except TypeError:
            pass
        eager = np.empty(len(idx))
        eager_g = np.empty((len(idx), len(params)))
        for j, i in enumerate(idx):
            lv, _ = sample_loss([ag.Value(float(v)) for v in data.X[i]],
                                [ag.Value(float(v)) for v in labels[i]])
            eager[j] = lv.data
            if per_sample is not None:
                group.zero_grad()
                lv.backward()
                eager_g[j] = group.grad
        group.zero_grad()
        d = float(np.max(np.abs(batched - eager)) / np.max(np.abs(eager)))
        if not d <= 1e-12:
            raise LossesDisagree(f"{AG_LABEL}: forward_batch's per-sample losses differ from eager "
                                 f"arenagrad's on the same samples (max relative difference {d:.3g})")
        text = (f"per-sample losses {'bit for bit' if d == 0 else f'to {d:.1g}'} equal to eager arenagrad's "
                f"on {len(idx)} samples")
        if per_sample is not None:
            dg = float(np.max(np.abs(per_sample - eager_g)) / max(float(np.max(np.abs(eager_g))), 1e-300))
            if not dg <= 1e-12:
                raise LossesDisagree(f"{AG_LABEL}: backward_batch's per-sample gradients differ from eager "
                                     f"arenagrad's backward (max relative difference {dg:.3g})")
            text += f", per-sample gradients {'bit for bit' if dg == 0 else f'to {dg:.1g}'}"
        return text

    passes = (lambda: tape.forward_batch(batch), lambda: tape.backward_batch(inv_n, input_grads=False),
              tape.num_nodes + len(tape.inputs), lambda: tape.batch_bytes_per_sample)
    return Trainer(AG_LABEL, step, lambda: step(0.0), evaluate, reset, checks=eager_check, passes=passes,
                   note=f"one sample's loss recorded once ({tape.num_nodes:,} nodes, {len(params)} "
                        f"parameters), samples as rows: forward_batch + zero_grad + "
                        f"backward_batch(1/n, input_grads=False) + "
                        "sgd_step")


# ---- torch: nn.Sequential on the whole batch ---------------------------------------------------------------


def make_torch(dtype_name: str) -> Callable[[BlobsData, EngineSet], Trainer]:
    def make(data: BlobsData, es: EngineSet) -> Trainer:
        torch = es.torch_batched
        if torch is None:
            raise NotAvailable(es.missing.get(TORCH_BATCHED, "not installed"))
        dt = getattr(torch, dtype_name)
        model = torch.nn.Sequential(*(torch.nn.Linear(nin, nout, dtype=dt)
                                      for nin, nout in zip(LAYERS[:-1], LAYERS[1:])))

        def reset() -> None:
            with torch.no_grad():
                for lin, (W, b) in zip(model, data.init):
                    lin.weight.copy_(torch.from_numpy(W))
                    lin.bias.copy_(torch.from_numpy(b))
            opt.zero_grad()

        opt = torch.optim.SGD(model.parameters(), lr=LR)
        reset()
        Xt = torch.tensor(data.X, dtype=dt)
        yt = torch.tensor(data.y, dtype=torch.int64)
        cross_entropy = torch.nn.functional.cross_entropy

        def step() -> float:
            loss = cross_entropy(model(Xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return float(loss.item())

        def warm() -> float:
            group = opt.param_groups[0]
            group["lr"] = 0.0  # the update runs, p - 0 * grad, and leaves p as it was
            try:
                return step()
            finally:
                group["lr"] = LR

        def evaluate() -> tuple[float, float]:
            with torch.no_grad():
                out = model(Xt)
                acc = (out.argmax(1) == yt).double().mean()
                return float(cross_entropy(out, yt).item()), float(acc.item())

        f64 = dtype_name == "float64"
        return Trainer(TORCH64_LABEL if f64 else TORCH32_LABEL, step, warm, evaluate, reset,
                       role=ROLE_TORCH_F64 if f64 else "", rtol=RTOL if f64 else RTOL_F32,
                       note=f"nn.Sequential of 3 Linear ({dtype_name}), F.cross_entropy, optim.SGD; torch "
                            f"{torch.__version__}, {torch.get_num_threads()} threads")

    return make


# ---- JAX: a jitted step, float64 on the CPU ----------------------------------------------------------------


def make_jax(data: BlobsData, es: EngineSet) -> Trainer:
    jax, dev = jax_cpu_float64(es)
    jnp = jax.numpy

    def put(a: np.ndarray) -> Any:
        return jax.device_put(jnp.asarray(a), dev)

    X, y = put(data.X), put(data.y)
    init = tuple((put(W), put(b)) for W, b in data.init)

    def logits_fn(params: Any, X: Any) -> Any:
        h = X
        for W, b in params:
            h = h @ W.T + b
        return h

    def loss_fn(params: Any, X: Any, y: Any) -> Any:
        out = logits_fn(params, X)
        picked = jnp.take_along_axis(out, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(out, axis=1) - picked)

    def train_step(params: Any, X: Any, y: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads), loss

    t0 = time.perf_counter()
    compiled = jax.jit(train_step).lower(init, X, y).compile()  # trace + XLA compile, before any timing
    compile_ms = (time.perf_counter() - t0) * 1e3
    evaluate_jit = jax.jit(lambda p, X, y: (loss_fn(p, X, y), jnp.mean(logits_fn(p, X).argmax(axis=1) == y)))
    state = [init]

    def step(keep: bool = True) -> float:
        params, loss = compiled(state[0], X, y)
        jax.block_until_ready((params, loss))
        if keep:
            state[0] = params
        return float(loss)

    def evaluate() -> tuple[float, float]:
        loss, acc = evaluate_jit(state[0], X, y)
        return float(loss), float(acc)

    def reset() -> None:
        state[0] = init

    return Trainer(JAX_LABEL, step, lambda: step(keep=False), evaluate, reset,
                   note=f"jit(value_and_grad(mean cross-entropy)) then p - lr*g; jax "
                        f"{getattr(jax, '__version__', '?')} on {dev.platform}, float64; compiled before "
                        f"timing ({compile_ms:.0f} ms)")


@dataclass
class BlobsVariant:
    label: str
    engine: str  # the --engines key it belongs to
    make: Callable[[BlobsData, EngineSet], Trainer]
    role: str = ""


def variants() -> list[BlobsVariant]:
    """Rows of the blobs tables, in order."""
    return [
        BlobsVariant(AG_LABEL, ARENAGRAD, make_arenagrad),
        BlobsVariant(TORCH64_LABEL, TORCH_BATCHED, make_torch("float64"), role=ROLE_TORCH_F64),
        BlobsVariant(TORCH32_LABEL, TORCH_BATCHED, make_torch("float32")),
        BlobsVariant(JAX_LABEL, JAX, make_jax),
    ]


# ---- measuring ---------------------------------------------------------------------------------------------


def _rel(a: float, ref: float) -> float:
    return abs(a - ref) / max(abs(ref), np.finfo(float).tiny)


def cross_check(trainers: list[Trainer]) -> dict[str, str]:
    """Two steps from the initial weights on every engine; both losses against the reference engine's (the
    first float64 one: arenagrad when it runs). Raises LossesDisagree past each engine's tolerance. Leaves
    every engine back at the initial weights."""
    losses: dict[str, tuple[float, float]] = {}
    notes: dict[str, str] = {}
    for t in trainers:
        print(f"  blobs: {t.label} (warm-up and cross-check) ...", flush=True)
        if t.checks is not None:
            notes[t.label] = t.checks()
        first, second = t.step(), t.step()
        if not (np.isfinite(first) and np.isfinite(second)):
            raise LossesDisagree(f"{t.label}: non-finite loss ({first}, {second})")
        losses[t.label] = (first, second)
        t.reset()
    ref = next((t for t in trainers if t.rtol == RTOL), None)
    if ref is None or len(trainers) < 2:
        return {label: "; ".join(s for s in (notes.get(label, ""), "losses not cross-checked (no other "
                                             "engine in this run)") if s) for label in losses}
    worst = 0.0
    for t in trainers:
        if t is ref:
            continue
        d = max(_rel(a, b) for a, b in zip(losses[t.label], losses[ref.label]))
        if not d <= t.rtol:
            raise LossesDisagree(f"{t.label} and {ref.label} disagree on the loss (initial weights, after "
                                 f"one step): {losses[t.label]} vs {losses[ref.label]}, relative {d:.3g} > "
                                 f"{t.rtol:g}")
        worst = max(worst, d) if t.rtol == RTOL else worst
        agrees = f"loss after one step agrees with {ref.label}'s to {d:.1g}"
        notes[t.label] = "; ".join(s for s in (notes.get(t.label, ""), agrees) if s)
    notes[ref.label] = "; ".join(s for s in (notes.get(ref.label, ""),
                                             f"reference for the loss check (largest float64 difference "
                                             f"{worst:.1g})") if s)
    return notes


def run(cfg: Config, es: EngineSet) -> list[Result]:
    try:
        data = make_data(cfg)
    except ImportError as exc:
        return [Result(WORKLOAD, m, "all", None, "", status="error", note=f"scikit-learn missing: {exc}")
                for m in METRICS]
    rows: list[Trainer | Missing] = []
    for v in variants():
        if v.engine not in es.selected:
            continue
        try:
            rows.append(v.make(data, es))
        except NotAvailable as exc:
            rows.append(Missing(v.label, exc.status, str(exc), v.role))
    trainers = [r for r in rows if isinstance(r, Trainer)]
    check_notes = cross_check(trainers)

    n_steps = cfg.blobs_steps
    if trainers:
        print(f"  blobs: {len(trainers)} engines x {n_steps} steps, taking turns ...", flush=True)
    got = blocked({t.label: Turns(step=lambda k, step=t.step: step(), steps=n_steps, warm=t.warm)
                   for t in trainers})
    times, last = got.times, got.last
    final = {t.label: t.evaluate() for t in trainers}
    ref_loss = final[trainers[0].label][0] if trainers else float("nan")

    results: list[Result] = []
    size = f"{data.n:,} samples"
    for r in rows:
        if isinstance(r, Missing):
            results += [Result(WORKLOAD, m, r.label, None, "", role=r.role, status=r.status, note=r.note)
                        for m in METRICS]
            continue
        loss, acc = final[r.label]
        note = "; ".join(s for s in (r.note, check_notes.get(r.label, "")) if s)
        results.append(timing(WORKLOAD, M_STEP, r.label, times[r.label], 1e6, "ms", role=r.role,
                              note=f"{turns_text(got.warmups[r.label], n_steps)}, {size}; {note}; training "
                                   f"accuracy {100 * acc:.2f}% after {n_steps} steps"))
        agree = ("" if r is trainers[0] else
                 f"; differs from {trainers[0].label}'s by {_rel(loss, ref_loss):.1g} (relative)")
        results.append(Result(WORKLOAD, M_LOSS, r.label, loss, "nats", runs=1, role=r.role, ratios=False,
                              note=f"mean cross-entropy at the weights after {n_steps} steps (the last "
                                   f"step's own forward gave {last[r.label]:.6g}){agree}; training accuracy "
                                   f"{100 * acc:.2f}%",
                              extra={"accuracy": acc, "last_step_loss": last[r.label]}))
    order = {m: i for i, m in enumerate(METRICS)}
    results.sort(key=lambda res: order[res.metric])  # stable: rows keep their engine order
    ag_trainer = next((t for t in trainers if t.passes is not None), None)
    if ag_trainer is not None and ag_trainer.passes is not None:
        forward, backward, n_rows, stored = ag_trainer.passes
        results += blobs_time.measure(forward, backward, data.n, n_rows, stored, LAYERS, cfg.repeat)
    return results


def section(results: list[Result], heading: str, cfg: Config) -> list[str]:
    """BENCHMARKS.md's blobs section (console: the same text): intro, then one table per metric. Empty when
    this run did not measure blobs."""
    from benchmarks import report

    mine = [r for r in results if r.workload == WORKLOAD]
    if not mine:
        return []
    where = blobs_time.analysis(results)
    intro = [
        f"`make_blobs({cfg.blobs_samples}, n_features={LAYERS[0]}, centers={LAYERS[-1]}, "
        f"random_state={RANDOM_STATE})`; a linear {'-'.join(map(str, LAYERS))} stack with no activations "
        f"({n_params()} parameters), mean cross-entropy, SGD lr {LR:g}, full batch, {cfg.blobs_steps} steps. "
        "A step is forward + loss + zero_grad + backward + update; each figure is the median over the timed "
        f"steps. The engines take turns: untimed steps for {WARMUP_S * 1e3:g} ms (they leave the weights "
        f"as they were), then {BLOCK} timed ones, then the next engine, so that no figure includes the steps "
        "right after another library's, whose threads may still be spinning. Every engine starts from the "
        "same float64 weights; "
        f"before timing, each one's losses at the initial weights and after one step were checked against "
        f"arenagrad's (≤ {RTOL:g} relative; float32: {RTOL_F32:g}; the notes name the reference engine). "
        "JAX is jit-compiled before timing. "
        "Ratios are against torch float64.",
        "",
    ]
    time_goes = [f"{heading} Where the time goes (blobs)", "", *where] if where else []
    return intro + report.tables_text(mine, heading) + time_goes

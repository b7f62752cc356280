"""`derivatives`: second derivatives of the moons loss, and the MLP's input Jacobian, engine against engine.

The function is the moons workload's (benchmarks/moons.py): MLP 2-16-16-1 with ReLU hidden layers (337
parameters), hinge loss ``relu(1 - y*score)`` averaged over the samples plus 1e-4 times the sum of squared
parameters, on ``make_moons(100, noise=0.1)`` with seed 1337. The parameters are one flat vector in
micrograd's order (layer by layer, neuron by neuron: its weights, then its bias): the moons workload's
initial weights (the ones micrograd.nn draws after ``random.seed(1337)``) with small nonzero biases drawn
from the same seed, so that the point is generic (no pre-activation at a ReLU kink: checked).

Three figures, each the median of runs in which the engines take turns (common.blocked: untimed runs for
20 ms, none for runs of 0.1 s or more, then five timed ones, then the next engine, round-robin), so that
machine noise hits them alike while no engine's figure includes the runs right after another library's,
whose worker threads may still be spinning (torch.func's OpenMP pool; see blocked()). The collector is not
run before each timed run: with torch.func imported a collection takes ~50 ms and left the next run cold
(jax.jit's Hessian-vector product 0.39 ms after one, 0.10 ms back to back):

1. one Hessian-vector product ``H(p) @ v`` (v: a fixed standard normal vector);
2. the full 337x337 Hessian;
3. the Jacobian of the MLP's score with respect to its inputs, for every sample (100 x 2).

Engines: arenagrad through ``arenagrad.func`` (scalar code, the graph rebuilt per call, as torch.func
rebuilds its own); arenagrad replay (the gradient recorded once as a Tape of 337 roots, then replayed:
``forward`` + ``jvp``, and for the Hessian ``forward_batch`` + ``jvp_batch``; for the Jacobian, one sample's
score graph replayed with ``forward_batch`` + ``backward_batch``); arenagrad hvp_batch (one sample's loss
recorded once, samples as rows, its backward pass run in dual numbers: ``hvp_batch`` with ``v`` on the
parameters, and for the Hessian the identity, 337 directions in one call); ``torch.func`` on the float64
batched model (``jvp(grad(f))``, ``hessian(f)``, ``vmap(jacrev(score))``); JAX in float64 on the CPU,
``jax.jit``-compiled before the clock starts. Before anything is timed, every engine's results are checked
against each other: they must agree to 1e-10 (max |difference| / max |value|), or the run stops with
ValuesDisagree.

Run alone:  python benchmarks/derivatives.py [--quick] [--repeat N] [--engines arenagrad,torch-batched,jax]
In the suite, ``run(cfg, engines)`` gives the rows of BENCHMARKS.md's "Second derivatives" section.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

if __package__ in (None, ""):
    # Run as a script: make the repository root importable so `benchmarks.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import moons
from benchmarks.common import (
    BLOCK,
    WARMUP_S,
    WARMUP_UNDER_S,
    Config,
    Result,
    Turns,
    blocked,
    timed_ns,
    timing,
    turns_text,
)
from benchmarks.engines import ARENAGRAD, JAX, TORCH_BATCHED, EngineSet, NotAvailable, jax_cpu_float64

WORKLOAD = "derivatives"
M_HVP = "Hessian-vector product (ms)"
M_HESS = "full Hessian (ms)"
M_JAC = "input Jacobian, every sample (ms)"
METRICS = (M_HVP, M_HESS, M_JAC)
TITLE = "Second derivatives"

# The row every ratio in this section is taken against (report.BASELINES turns it into "vs arenagrad").
ROLE_ARENAGRAD = "arenagrad"
RTOL = 1e-10  # max |difference| / max |value| allowed between any two engines
BIAS_SCALE = 0.1  # biases drawn uniformly from [-BIAS_SCALE, BIAS_SCALE]
# Timed runs per figure: cfg.repeat at least, and more for fast figures, up to about TIME_BUDGET_S per
# engine and figure (but never more than MAX_RUNS); --quick uses cfg.repeat only.
TIME_BUDGET_S = 1.0
MAX_RUNS = 41

LAYERS = moons.LAYERS
ALPHA = moons.ALPHA


class ValuesDisagree(AssertionError):
    """Two engines computed different derivatives: every figure of this workload would be meaningless."""


# ---- the problem -------------------------------------------------------------------------------------------


@dataclass
class Problem:
    X: np.ndarray  # (n, 2) inputs
    y: np.ndarray  # (n,) labels, -1.0 or 1.0
    p: np.ndarray  # (337,) parameters, micrograd's order
    v: np.ndarray  # (337,) the HVP direction
    activation: str = "relu"

    @property
    def n_params(self) -> int:
        return len(self.p)


def n_params(layers: tuple[int, ...] = LAYERS) -> int:
    return sum((nin + 1) * nout for nin, nout in zip(layers[:-1], layers[1:]))


def make_problem(cfg: Config, activation: str = "relu") -> Problem:
    data = moons.make_data(cfg)  # the moons workload's data and initial weights
    rng = random.Random(cfg.seed + 1)
    flat: list[float] = []
    for layer in data.init:
        for ws in layer:
            flat.extend(ws)
            flat.append(rng.uniform(-BIAS_SCALE, BIAS_SCALE))
    p = np.array(flat, dtype=np.float64)
    v = np.random.default_rng(cfg.seed).standard_normal(len(p))
    prob = Problem(np.array(data.X, dtype=np.float64), np.array(data.y, dtype=np.float64), p, v, activation)
    _check_smooth(prob)
    return prob


def _layers(p: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) per layer from the flat vector: W has shape (out, in)."""
    out, off = [], 0
    for nin, nout in zip(LAYERS[:-1], LAYERS[1:]):
        block = p[off:off + nout * (nin + 1)].reshape(nout, nin + 1)
        out.append((block[:, :nin], block[:, nin]))
        off += nout * (nin + 1)
    return out


def _check_smooth(prob: Problem) -> None:
    """The loss must be twice differentiable at p: no ReLU (hidden or hinge) exactly at its kink, or engines
    could legitimately disagree on which side's derivative to take."""
    h = prob.X
    pre: list[np.ndarray] = []
    for i, (W, b) in enumerate(_layers(prob.p)):
        z = h @ W.T + b
        if i < len(LAYERS) - 2:
            if prob.activation == "relu":
                pre.append(z)
            h = np.maximum(z, 0.0) if prob.activation == "relu" else getattr(np, prob.activation)(z)
        else:
            pre.append(1.0 - prob.y * z[:, 0])  # the hinge
    closest = min(float(np.abs(z).min()) for z in pre)
    if closest < 1e-9:
        raise RuntimeError(f"a ReLU input is {closest:.2g} from its kink at this parameter vector")


# ---- engines -----------------------------------------------------------------------------------------------
# An Impl computes one figure: `run()` is what is timed; `result(out)` turns its output into a numpy array
# (untimed, for the cross-check).


@dataclass
class Impl:
    label: str
    run: Callable[[], Any]
    result: Callable[[Any], np.ndarray] = np.asarray
    role: str = ""
    note: str = ""


@dataclass
class Unavailable:
    label: str
    status: str  # "not installed" or "n/a"
    note: str
    role: str = ""


Row = Union[Impl, Unavailable]


@dataclass
class EngineRows:
    """What one engine contributes to each metric."""

    rows: dict[str, list[Row]] = field(default_factory=dict)


def _all_unavailable(label: str, status: str, note: str, role: str = "",
                     metrics: tuple[str, ...] = METRICS) -> EngineRows:
    return EngineRows({m: [Unavailable(label, status, note, role)] for m in metrics})


# -- arenagrad: scalar code through arenagrad.func --------------------------------------------------------


def ag_mlp(ag: Any, params: Any, x: Any, activation: str) -> Any:
    """The MLP in scalar code, one fused dot per neuron (as arenagrad.nn's Neuron): params and x are each
    a list of Values or of floats (the derivative is taken w.r.t. whichever are Values)."""
    h, off = list(x), 0
    last = len(LAYERS) - 2
    for i, (nin, nout) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        outs = []
        for _ in range(nout):
            a = ag.dot(params[off:off + nin], h) + params[off + nin]
            off += nin + 1
            outs.append(a if i == last else getattr(a, activation)())
        h = outs
    return h[0]


def ag_loss_fn(ag: Any, prob: Problem) -> Callable[[list[Any]], Any]:
    """f(params) -> loss Value, for arenagrad.func (inputs are plain floats: constants)."""
    rows = prob.X.tolist()
    ys = prob.y.tolist()
    inv_n = 1.0 / len(rows)

    def f(ps: list[Any]) -> Any:
        scores = [ag_mlp(ag, ps, x, prob.activation) for x in rows]
        data_loss = ag.sum([(1.0 - y * s).relu() for y, s in zip(ys, scores)]) * inv_n
        return data_loss + ALPHA * ag.dot(ps, ps)

    return f


def tape_supports_several_roots(ag: Any) -> str | None:
    """None when arenagrad.Tape can record several roots (a gradient) and jvp returns one tangent per root;
    else why not (the replay rows then say n/a)."""
    tape_cls = getattr(ag, "Tape", None)
    if tape_cls is None:
        return "this arenagrad has no Tape"
    try:
        a = ag.Value(2.0)
        tape = tape_cls([a * a, a * 3.0], [a])
        tape.forward([2.0])
        out = np.asarray(tape.jvp([1.0]), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return f"arenagrad.Tape takes one root ({type(exc).__name__}: {exc})"
    if out.shape != (2,) or not np.allclose(out, [4.0, 3.0]):
        return f"Tape.jvp with two roots returned {out!r}, not one tangent per root"
    return None


def arenagrad_replay(ag: Any, prob: Problem) -> dict[str, list[Row]]:
    """The gradient recorded once (``grad(loss, params, create_graph=True)``) as a tape with one root per
    parameter (recording is not timed). An HVP is then one forward replay at p plus one jvp along v; the
    Hessian one forward plus one jvp per basis vector, or (batched replay, with Tape.jvp_batch) one
    forward_batch of p in every row plus one jvp_batch of the identity. Only used when
    tape_supports_several_roots(ag) is None."""
    params = [ag.Value(float(x)) for x in prob.p]
    g = ag.grad(ag_loss_fn(ag, prob)(params), params, create_graph=True)
    tape = ag.Tape(g, params)
    p, v = prob.p, prob.v
    k = len(p)
    basis = np.eye(k)
    size = f"tape of {tape.num_nodes:,} nodes (f's graph and its gradient's)"

    def hvp() -> Any:
        tape.forward(p)
        return tape.jvp(v)

    def hessian() -> Any:
        tape.forward(p)
        return np.array([tape.jvp(e) for e in basis]).T  # columns H e_j (H is symmetric anyway)

    rows: dict[str, list[Row]] = {
        M_HVP: [Impl("arenagrad replay", hvp,
                     note=f"gradient recorded once; {size}; timed: forward(p) + jvp(v)")],
        M_HESS: [Impl("arenagrad replay", hessian,
                      note=f"gradient recorded once; {size}; timed: forward(p) + {k} jvp calls")],
    }
    if hasattr(tape, "jvp_batch"):
        tiled = np.ascontiguousarray(np.broadcast_to(p, (k, k)))

        def hessian_batched() -> Any:
            tape.forward_batch(tiled)
            return tape.jvp_batch(basis).T  # row s: the roots' tangents along e_s, i.e. H e_s

        rows[M_HESS].append(Impl(
            "arenagrad batched replay", hessian_batched,
            note=f"the same tape; timed: forward_batch of p in {k} rows + jvp_batch(identity), "
                 f"{k} rows per node (about {2 * 8 * k * tape.num_nodes / 2**20:,.0f} MiB of values and "
                 "tangents)"))
    return rows


def arenagrad_rows(es: EngineSet, prob: Problem) -> EngineRows:
    eng = es.get(ARENAGRAD)
    if eng is None:
        return _all_unavailable("arenagrad", "not installed", es.missing.get(ARENAGRAD, "not installed"),
                                ROLE_ARENAGRAD)
    ag = eng.module
    func = getattr(ag, "func", None)
    out = EngineRows({m: [] for m in METRICS})
    if func is None:
        for m in METRICS:
            out.rows[m].append(Unavailable("arenagrad", "not installed",
                                           "this arenagrad has no arenagrad.func", ROLE_ARENAGRAD))
    else:
        f = ag_loss_fn(ag, prob)
        p, v = prob.p, prob.v
        out.rows[M_HVP].append(Impl("arenagrad", lambda: func.hvp(f, p, v), role=ROLE_ARENAGRAD,
                                    note="arenagrad.func.hvp(f, p, v): f's graph, its gradient graph "
                                         "(create_graph), one tangent pass"))
        hess = func.hessian(f)
        out.rows[M_HESS].append(Impl("arenagrad", lambda: hess(p), role=ROLE_ARENAGRAD,
                                     note="arenagrad.func.hessian(f)(p): forward over reverse, one tangent "
                                          "pass over the gradient graph per parameter"))
        params = _floats(p)
        X = prob.X

        def score_fn(xs: list[Any]) -> Any:
            return ag_mlp(ag, params, xs, prob.activation)

        g = func.grad(score_fn)
        out.rows[M_JAC].append(Impl("arenagrad", lambda: [g(x) for x in X], role=ROLE_ARENAGRAD,
                                    note="arenagrad.func.grad(score)(x) for each sample (parameters as "
                                         "constants)"))

    # Replay of the recorded gradient: needs a Tape with several roots.
    why = tape_supports_several_roots(ag)
    if why is not None:
        for m in (M_HVP, M_HESS):
            out.rows[m].append(Unavailable("arenagrad replay", "n/a", why))
    else:
        for m, rows in arenagrad_replay(ag, prob).items():
            out.rows[m].extend(rows)

    out.rows[M_JAC].append(_arenagrad_batched_jacobian(ag, prob))
    if why is None and hasattr(ag.Tape, "jvp_batch"):
        for m, row in _arenagrad_per_sample(ag, prob).items():
            out.rows[m].append(row)
    if hasattr(ag.Tape, "hvp_batch"):
        for m, row in _arenagrad_hvp_batch(ag, prob).items():
            out.rows[m].append(row)
    return out


def _sample_term(ag: Any, prob: Problem) -> tuple[list[Any], Any, list[Any], Any]:
    """One sample's share of the loss, for the batched engines: its inputs (x1, x2), its label, the
    parameters (Values at prob.p) and the term (hinge / n + the L2 penalty / n)."""
    x = [ag.Value(0.0), ag.Value(0.0)]
    label = ag.Value(1.0)
    params = [ag.Value(float(v)) for v in prob.p]
    inv_n = 1.0 / len(prob.X)
    score = ag_mlp(ag, params, x, prob.activation)
    term = (1.0 - label * score).relu() * inv_n + ALPHA * inv_n * ag.dot(params, params)
    return x, label, params, term


def _arenagrad_hvp_batch(ag: Any, prob: Problem) -> dict[str, Row]:
    """One sample's loss term recorded once (no gradient graph), inputs the sample, the parameters shared
    leaves; Tape.hvp_batch runs its backward pass in dual numbers for every sample (forward over reverse)
    with the tangent v on the parameters, and sums the derivatives of their gradients over the samples.
    The Hessian is one call with the identity as the parameters' tangents: 337 directions side by side in
    the lanes of one sweep."""
    x, label, params, term = _sample_term(ag, prob)
    tape = ag.Tape(term, [*x, label])
    rows = np.ascontiguousarray(np.hstack([prob.X, prob.y[:, None]]))
    identity = np.eye(len(params))

    def hvp() -> Any:
        tape.forward_batch(rows)
        return tape.hvp_batch(params=params, param_tangents=prob.v)[1]

    def hessian() -> Any:
        tape.forward_batch(rows)
        return tape.hvp_batch(params=params, param_tangents=identity)[1]

    note = (f"one sample's loss recorded once ({tape.num_nodes:,} nodes, no gradient graph), samples as "
            "rows; timed: forward_batch + hvp_batch(params=..., param_tangents=")
    return {
        M_HVP: Impl("arenagrad hvp_batch", hvp, note=note + "v), its backward pass in dual numbers"),
        M_HESS: Impl("arenagrad hvp_batch", hessian,
                     note=note + f"identity), {len(params)} directions in the lanes of one dual sweep"),
    }


def _arenagrad_per_sample(ag: Any, prob: Problem) -> dict[str, Row]:
    """One sample's loss term recorded once with its gradient w.r.t. the parameters (create_graph), as a
    tape whose inputs are the sample (x1, x2, y) and the parameters; every sample is then a row of one
    batched replay, so each op is a loop over the 100 samples. An HVP is forward_batch + one jvp_batch with
    v on the parameters' columns, summed over the samples; the Hessian one jvp_batch per parameter."""
    x, label, params, term = _sample_term(ag, prob)
    tape = ag.Tape(ag.grad(term, params, create_graph=True), [*x, label, *params])
    n, k = len(prob.X), len(prob.p)
    rows = np.ascontiguousarray(np.hstack([prob.X, prob.y[:, None], np.broadcast_to(prob.p, (n, k))]))
    along_v = np.zeros((n, 3 + k))
    along_v[:, 3:] = prob.v
    basis = np.zeros((n, 3 + k))
    note = f"one sample's gradient recorded once ({tape.num_nodes:,} nodes), samples as rows"

    def hvp() -> Any:
        tape.forward_batch(rows)
        return tape.jvp_batch(along_v).sum(axis=0)

    def hessian() -> Any:
        tape.forward_batch(rows)
        cols = np.empty((k, k))
        for j in range(k):
            basis[:, 3 + j] = 1.0
            cols[:, j] = tape.jvp_batch(basis).sum(axis=0)
            basis[:, 3 + j] = 0.0
        return cols

    return {
        M_HVP: Impl("arenagrad per-sample replay", hvp, note=note + "; timed: forward_batch + jvp_batch"),
        M_HESS: Impl("arenagrad per-sample replay", hessian,
                     note=note + f"; timed: forward_batch + {k} jvp_batch calls"),
    }


def _floats(p: np.ndarray) -> list[float]:
    return [float(x) for x in p]


def _arenagrad_batched_jacobian(ag: Any, prob: Problem) -> Row:
    """One sample's score graph recorded once (inputs x1, x2; parameters constants), run for every sample per
    native call: forward_batch, then backward_batch returns d(score)/d(inputs), shape (n, 2)."""
    if not hasattr(ag, "Tape") or not hasattr(ag.Tape, "backward_batch"):
        return Unavailable("arenagrad batched replay", "n/a", "this arenagrad has no Tape.backward_batch")
    xs = [ag.Value(0.0), ag.Value(0.0)]
    tape = ag.Tape(ag_mlp(ag, _floats(prob.p), xs, prob.activation), xs)
    X = np.ascontiguousarray(prob.X)

    def jac() -> Any:
        tape.forward_batch(X)
        return tape.backward_batch()

    return Impl("arenagrad batched replay", jac,
                note="Tape.forward_batch + backward_batch of one sample's recorded score graph")


# -- PyTorch: torch.func on the float64 batched model --------------------------------------------------------


def torch_rows(es: EngineSet, prob: Problem) -> EngineRows:
    torch = es.torch_batched
    label = "torch.func"
    if torch is None:
        return _all_unavailable(label, "not installed", es.missing.get(TORCH_BATCHED, "not installed"))
    tf = torch.func
    f64 = torch.float64
    X = torch.tensor(prob.X, dtype=f64)
    y = torch.tensor(prob.y, dtype=f64)
    p = torch.tensor(prob.p, dtype=f64)
    v = torch.tensor(prob.v, dtype=f64)
    act = torch.relu if prob.activation == "relu" else getattr(torch, prob.activation)
    last = len(LAYERS) - 2

    def mlp(p: Any, x: Any) -> Any:
        off = 0
        h = x
        for i, (nin, nout) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
            block = p[off:off + nout * (nin + 1)].reshape(nout, nin + 1)
            off += nout * (nin + 1)
            h = h @ block[:, :nin].T + block[:, nin]
            if i < last:
                h = act(h)
        return h[..., 0]

    def loss(p: Any) -> Any:
        return torch.relu(1 - y * mlp(p, X)).mean() + ALPHA * (p * p).sum()

    grad_f = tf.grad(loss)
    hess_f = tf.hessian(loss)
    jac_f = tf.vmap(tf.jacrev(lambda x: mlp(p, x)))
    t = f"torch {torch.__version__}, {torch.get_num_threads()} threads"

    def with_numpy(out: Any) -> np.ndarray:
        return np.asarray(out.detach().numpy())

    return EngineRows({
        M_HVP: [Impl(label, lambda: tf.jvp(grad_f, (p,), (v,))[1], with_numpy,
                     note=f"torch.func.jvp(torch.func.grad(f), (p,), (v,)); {t}")],
        M_HESS: [Impl(label, lambda: hess_f(p), with_numpy, note=f"torch.func.hessian(f)(p); {t}")],
        M_JAC: [Impl(label, lambda: jac_f(X), with_numpy,
                     note=f"torch.func.vmap(torch.func.jacrev(score))(X); {t}")],
    })


# -- JAX: float64 on the CPU, jit-compiled ----------------------------------------------------------------


def jax_rows(es: EngineSet, prob: Problem) -> EngineRows:
    label = "jax.jit"
    try:
        jax, dev = jax_cpu_float64(es)
    except NotAvailable as exc:
        return _all_unavailable(label, exc.status, str(exc))
    jnp = jax.numpy
    act = jax.nn.relu if prob.activation == "relu" else getattr(jnp, prob.activation)
    last = len(LAYERS) - 2

    def mlp(p: Any, x: Any) -> Any:
        off = 0
        h = x
        for i, (nin, nout) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
            block = p[off:off + nout * (nin + 1)].reshape(nout, nin + 1)
            off += nout * (nin + 1)
            h = h @ block[:, :nin].T + block[:, nin]
            if i < last:
                h = act(h)
        return h[..., 0]

    def loss(p: Any, X: Any, y: Any) -> Any:
        return jax.nn.relu(1 - y * mlp(p, X)).mean() + ALPHA * jnp.dot(p, p)

    hvp = jax.jit(lambda p, v, X, y: jax.jvp(lambda q: jax.grad(loss)(q, X, y), (p,), (v,))[1])
    hess = jax.jit(jax.hessian(loss))
    jac = jax.jit(jax.vmap(jax.grad(mlp, argnums=1), in_axes=(None, 0)))
    p, v, X, y = (jax.device_put(jnp.asarray(a, dtype=jnp.float64), dev)
                  for a in (prob.p, prob.v, prob.X, prob.y))

    compile_ms: dict[str, float] = {}

    def compiled(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        t0 = time.perf_counter()
        fn().block_until_ready()  # trace + XLA compile + one run, before the clock starts
        compile_ms[name] = (time.perf_counter() - t0) * 1e3
        return fn

    run_hvp = compiled(M_HVP, lambda: hvp(p, v, X, y).block_until_ready())
    run_hess = compiled(M_HESS, lambda: hess(p, X, y).block_until_ready())
    run_jac = compiled(M_JAC, lambda: jac(p, X).block_until_ready())
    t = f"jax {getattr(jax, '__version__', '?')} on {dev.platform}, float64"
    def note(what: str, metric: str) -> str:
        return f"{what}; {t}; compiled before timing ({compile_ms[metric]:.0f} ms)"

    return EngineRows({
        M_HVP: [Impl(label, run_hvp, note=note("jit(jvp(grad(f), (p,), (v,)))", M_HVP))],
        M_HESS: [Impl(label, run_hess, note=note("jit(hessian(f))", M_HESS))],
        M_JAC: [Impl(label, run_jac, note=note("jit(vmap(grad(score)))", M_JAC))],
    })


# ---- measuring ---------------------------------------------------------------------------------------------


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), np.finfo(float).tiny)
    return float(np.max(np.abs(a - b))) / scale


def cross_check(metric: str, outputs: dict[str, np.ndarray], expect_shape: tuple[int, ...]) -> dict[str, str]:
    """Every engine's array against the first one's; raises ValuesDisagree past RTOL. A note per label."""
    notes: dict[str, str] = {}
    labels = list(outputs)
    for label in labels:
        if outputs[label].shape != expect_shape:
            raise ValuesDisagree(f"{metric}: {label} returned shape {outputs[label].shape}, "
                                 f"not {expect_shape}")
        if not np.all(np.isfinite(outputs[label])):
            raise ValuesDisagree(f"{metric}: {label} returned non-finite values")
    if len(labels) < 2:
        return {label: "not cross-checked (no other engine in this run)" for label in labels}
    ref = labels[0]
    worst = 0.0
    for label in labels[1:]:
        d = _rel_diff(outputs[ref], outputs[label])
        worst = max(worst, d)
        if not d <= RTOL:
            raise ValuesDisagree(f"{metric}: {label} and {ref} disagree: max |difference| / max |value| = "
                                 f"{d:.3g} > {RTOL:g}")
        notes[label] = f"agrees with {ref} to {d:.1g}"
    notes[ref] = f"reference for the check (largest difference {worst:.1g})"
    return notes


def _runs(cfg: Config, slowest_ns: int) -> int:
    if cfg.quick:
        return cfg.repeat
    fit = int(TIME_BUDGET_S * 1e9 / max(slowest_ns, 1))
    n = max(cfg.repeat, min(MAX_RUNS, fit))
    return n | 1  # odd, so the median is one run


def measure_metric(cfg: Config, metric: str, rows: list[Row], expect_shape: tuple[int, ...],
                   checks: dict[str, np.ndarray] | None = None) -> tuple[list[Result], dict[str, np.ndarray]]:
    """Warm every engine up (its result is cross-checked), then time them taking turns."""
    impls = [r for r in rows if isinstance(r, Impl)]
    outputs: dict[str, np.ndarray] = {}
    warm: dict[str, int] = {}
    for impl in impls:
        print(f"  derivatives: {metric}: {impl.label} (warm-up and check) ...", flush=True)
        ns, out = timed_ns(impl.run)
        warm[impl.label] = ns
        outputs[impl.label] = np.asarray(impl.result(out), dtype=np.float64).reshape(expect_shape)
    check_notes = cross_check(metric, outputs, expect_shape)
    if checks:
        for label, want in checks.items():
            if label in outputs:
                d = _rel_diff(outputs[label], want)
                if not d <= RTOL:
                    raise ValuesDisagree(f"{metric}: {label} is inconsistent with its own other figure "
                                         f"(relative difference {d:.3g})")
    reps = _runs(cfg, max(warm.values(), default=0))
    if impls:
        print(f"  derivatives: {metric}: {len(impls)} engines x {reps} runs, taking turns ...", flush=True)
    got = blocked({impl.label: Turns(step=lambda k, run=impl.run: run(), steps=reps, warm=impl.run,
                                     step_s=warm[impl.label] / 1e9) for impl in impls})
    results: list[Result] = []
    for r in rows:
        if isinstance(r, Impl):
            note = "; ".join(s for s in (r.note, check_notes.get(r.label, ""),
                                         turns_text(got.warmups[r.label], reps, "runs")) if s)
            res = timing(WORKLOAD, metric, r.label, got.times[r.label], 1e6, "ms", role=r.role, note=note)
            res.extra["warmup_ms"] = warm[r.label] / 1e6
            results.append(res)
        else:
            results.append(Result(WORKLOAD, metric, r.label, None, "ms", role=r.role, status=r.status,
                                  note=r.note))
    return results, outputs


def run(cfg: Config, es: EngineSet, activation: str = "relu") -> list[Result]:
    prob = make_problem(cfg, activation)
    n, k = len(prob.X), prob.n_params
    per_engine: list[EngineRows] = []
    if ARENAGRAD in es.selected:
        per_engine.append(arenagrad_rows(es, prob))
    if TORCH_BATCHED in es.selected:
        per_engine.append(torch_rows(es, prob))
    if JAX in es.selected:
        per_engine.append(jax_rows(es, prob))
    shapes = {M_HVP: (k,), M_HESS: (k, k), M_JAC: (n, LAYERS[0])}
    results: list[Result] = []
    hessians: dict[str, np.ndarray] = {}
    for metric in (M_HESS, M_HVP, M_JAC):  # the Hessian first: H @ v then checks each engine's HVP too
        rows = [r for e in per_engine for r in e.rows.get(metric, [])]
        checks = ({label: H @ prob.v for label, H in hessians.items()} if metric == M_HVP else None)
        rs, outputs = measure_metric(cfg, metric, rows, shapes[metric], checks)
        if metric == M_HESS:
            hessians = outputs
        results.extend(rs)
    order = {m: i for i, m in enumerate(METRICS)}
    results.sort(key=lambda r: order[r.metric])  # stable: rows keep their engine order
    return results


def section(results: list[Result], heading: str, cfg: Config) -> list[str]:
    """BENCHMARKS.md's "Second derivatives" section (console: the same text): intro, then one table per
    metric. Empty when this run measured no derivatives."""
    from benchmarks import report

    mine = [r for r in results if r.workload == WORKLOAD]
    if not mine:
        return []
    k = n_params()
    intro = [
        f"The moons loss (MLP {'-'.join(map(str, LAYERS))}, ReLU, hinge + {ALPHA:g} L2; {k} parameters, "
        f"{cfg.moons_samples} samples) at a fixed parameter vector: one Hessian-vector product, the full "
        f"{k}×{k} Hessian, and the Jacobian of the score w.r.t. the inputs for every sample "
        f"({cfg.moons_samples}×{LAYERS[0]}). Engines take turns (untimed runs for {WARMUP_S * 1e3:g} ms, "
        f"none for runs of {WARMUP_UNDER_S:g} s or more, then {BLOCK} timed ones), so that no figure "
        "includes the runs right after another library's, whose threads may still be spinning; each figure "
        "is a median. Every "
        f"engine's results were checked against the others' before timing (max |difference| / max |value| "
        f"≤ {RTOL:g}). JAX is jit-compiled before timing; arenagrad and torch.func rebuild their graphs on "
        "every call. Ratios are against arenagrad (`arenagrad.func`).",
        "",
    ]
    return intro + report.tables_text(mine, heading)


# ---- command line ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from benchmarks import report
    from benchmarks.engines import load_engines

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 samples, few runs: checks it works")
    ap.add_argument("--repeat", type=int, default=None, help="minimum runs per figure (default 5)")
    ap.add_argument("--engines", default=f"{ARENAGRAD},{TORCH_BATCHED},{JAX}",
                    help="comma-separated: arenagrad, torch-batched (torch.func), jax")
    ap.add_argument("--torch-threads", type=int, default=None, metavar="N",
                    help="torch.set_num_threads(N) (default: torch's own default)")
    ap.add_argument("--activation", choices=("relu", "tanh"), default="relu",
                    help="hidden activation (default relu, as moons; tanh gives a dense smooth Hessian)")
    args = ap.parse_args(argv)
    cfg = Config.make(args.quick, args.repeat)
    selected = tuple(s.strip() for s in args.engines.split(",") if s.strip())
    bad = [s for s in selected if s not in (ARENAGRAD, TORCH_BATCHED, JAX)]
    if bad:
        ap.error(f"unknown engines {bad}")
    load = os.getloadavg()[0]
    es = load_engines(selected)
    if args.torch_threads is not None and es.torch_batched is not None:
        es.torch_batched.set_num_threads(max(1, args.torch_threads))
    for key in selected:
        print(f"{key}: {es.missing.get(key, 'loaded')}")
    # As run.py: everything imported so far (torch, jax, sklearn) out of the collector's reach, so that GC
    # passes during the timed runs do not walk those modules' objects.
    import sklearn.datasets  # noqa: F401  (make_problem's; imported now so that the freeze covers it)

    gc.collect()
    gc.freeze()
    results = run(cfg, es, args.activation)
    print()
    print(f"{TITLE} (activation {args.activation}; 1-minute load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end)")
    print("machine: " + "; ".join(f"{k} {v}" for k, v in report.machine_facts()))
    print()
    print("\n".join(section(results, "--", cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

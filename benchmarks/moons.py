"""`moons`: micrograd's demo, one full-batch training step, and the accuracy the training reaches.

Same data (make_moons(n_samples=100, noise=0.1), seed 1337 as in micrograd's demo.ipynb), same initial weights
(drawn as micrograd.nn.MLP draws them after random.seed(1337)), same loss (hinge + 1e-4 L2), same schedule
(SGD, lr = 1.0 - 0.9*k/100 at step k, from learning_rate()) for every variant. Each step is timed whole:
building the inputs, forward, loss, zero_grad, backward and the update; the figure is the median over the
steps run. The GC stays on, as in the demo.

The variants take turns (common.blocked): each runs untimed steps for 20 ms and then five timed ones, then
the next variant, round-robin, so that machine noise spreads over all of them and no row's figure includes
the steps right after another library's, whose worker threads may still be spinning (torch batched's OpenMP
pool spins ~5 ms after its step, longer than a whole turn of jax.jit's steps; see blocked()). The untimed
steps are training steps with learning rate 0: the same work, but the weights stay where they were, so every
variant trains for exactly its scheduled steps and its accuracy and loss are those of the demo's loop.
Variants whose step takes 0.1 s or more (micrograd, torch 0-dim and the reference engine: single-threaded,
~1 s a step) run one untimed step in all, which tells blocked() they are that slow.

A variant is a `make(data, engines) -> step` factory, where `step(lr) -> (loss, accuracy)` runs one training
step with learning rate lr; adding one (e.g. an "arenagrad replay" trainer) is one function and one
MoonsVariant in `variants()`. A factory that learns something worth printing only when it builds the step
(the jax.jit row's compile time) returns a NotedStep, whose note joins the row's.

The jax.jit row (engine key jax, optional) does torch batched's work in one jitted function: forward over
the whole batch, hinge mean + 1e-4 * the squares of every parameter (weights and biases), the gradient, the
SGD update and the accuracy; it is compiled before the clock starts, and each timed step waits for the
result and converts the loss and accuracy to Python floats (as torch's `.item()` does).
"""

from __future__ import annotations

import importlib
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks.common import (
    ROLE_MICROGRAD,
    ROLE_TORCH,
    ROLE_TORCH_BATCHED,
    Config,
    Result,
    Turns,
    blocked,
    timing,
    turns_text,
)
from benchmarks.engines import (
    ARENAGRAD,
    JAX,
    MICROGRAD,
    REFERENCE,
    TORCH,
    TORCH_BATCHED,
    EngineSet,
    NotAvailable,
    ScalarEngine,
    jax_cpu_float64,
)

WORKLOAD = "moons"
M_STEP = "seconds/step"
M_ACC = "accuracy after training"
METRICS = (M_STEP, M_ACC)
LAYERS = (2, 16, 16, 1)
ALPHA = 1e-4
# Row labels the targets look for (report.TARGETS).
BATCHED_REPLAY_LABEL = "arenagrad batched replay"
JAX_LABEL = "jax.jit"

Step = Callable[[float], tuple[float, float]]  # step(lr) -> (loss, accuracy of this step's forward)


def learning_rate(k: int) -> float:
    """The demo's schedule: training step k (0-based) of 100."""
    return 1.0 - 0.9 * k / 100


@dataclass
class NotedStep:
    """A step plus a note known only once the step is built (e.g. a compile time); rows() appends it to
    the row's note."""

    step: Step
    note: str

    def __call__(self, lr: float) -> tuple[float, float]:
        return self.step(lr)


@dataclass
class MoonsData:
    X: list[list[float]]
    y: list[int]  # -1 or 1, as the demo's y*2 - 1
    init: list[list[list[float]]]  # init[layer][neuron] = weights; biases start at 0
    seed: int


@dataclass
class MoonsVariant:
    label: str
    engine: str  # the --engines key it belongs to
    make: Callable[[MoonsData, EngineSet], Step]
    role: str = ""
    desc: str = ""
    steps: Callable[[Config], int] = lambda cfg: cfg.moons_steps


def make_data(cfg: Config) -> MoonsData:
    from sklearn.datasets import make_moons

    # random_state=1337 draws what the demo's np.random.seed(1337) + make_moons() draws
    X, y = make_moons(n_samples=cfg.moons_samples, noise=0.1, random_state=cfg.seed)
    rng = random.Random(cfg.seed)
    init = [[[rng.uniform(-1, 1) for _ in range(nin)] for _ in range(nout)]
            for nin, nout in zip(LAYERS[:-1], LAYERS[1:])]
    return MoonsData(X=X.tolist(), y=[int(v) * 2 - 1 for v in y], init=init, seed=cfg.seed)


# ---- plain micrograd code, for any Value class -------------------------------------------------------------


class PlainNeuron:
    """micrograd.nn.Neuron, with the Value class (leaf factory) passed in."""

    def __init__(self, leaf: Callable[[float], Any], ws: list[float], nonlin: bool) -> None:
        self.w = [leaf(w) for w in ws]
        self.b = leaf(0.0)
        self.nonlin = nonlin

    def __call__(self, x: list[Any]) -> Any:
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Any]:
        return [*self.w, self.b]


class PlainLayer:
    def __init__(self, leaf: Callable[[float], Any], ws: list[list[float]], nonlin: bool) -> None:
        self.neurons = [PlainNeuron(leaf, w, nonlin) for w in ws]

    def __call__(self, x: list[Any]) -> Any:
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Any]:
        return [p for n in self.neurons for p in n.parameters()]


class PlainMLP:
    def __init__(self, leaf: Callable[[float], Any], init: list[list[list[float]]]) -> None:
        self.layers = [PlainLayer(leaf, ws, nonlin=i != len(init) - 1) for i, ws in enumerate(init)]

    def __call__(self, x: list[Any]) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Any]:
        return [p for layer in self.layers for p in layer.parameters()]


def demo_step(model: Any, eng: ScalarEngine, data: MoonsData, *, fused: bool = False) -> Step:
    """The demo's loss() and training loop body. fused=True uses the engine's one-node sum and dot."""
    X, y = data.X, data.y
    const, value = eng.const, eng.value

    def loss() -> tuple[Any, float]:
        inputs = [list(map(const, xrow)) for xrow in X]
        scores = list(map(model, inputs))
        losses = [(1 + -yi * scorei).relu() for yi, scorei in zip(y, scores)]
        if fused:
            assert eng.sum is not None and eng.dot is not None
            params = model.parameters()
            data_loss = eng.sum(losses) * (1.0 / len(losses))
            reg_loss = ALPHA * eng.dot(params, params)
        else:
            data_loss = sum(losses) * (1.0 / len(losses))
            reg_loss = ALPHA * sum(p * p for p in model.parameters())
        total_loss = data_loss + reg_loss
        accuracy = [(yi > 0) == (value(scorei) > 0) for yi, scorei in zip(y, scores)]
        return total_loss, sum(accuracy) / len(accuracy)

    def step(lr: float) -> tuple[float, float]:
        total_loss, acc = loss()
        eng.zero_grad(model.parameters())
        eng.backward(total_loss)
        eng.sgd(model.parameters(), lr)
        return value(total_loss), acc

    return step


def _engine(es: EngineSet, key: str) -> ScalarEngine:
    eng = es.get(key)
    if eng is None:
        raise NotAvailable(es.missing.get(key, "not installed"))
    return eng


def make_plain(key: str) -> Callable[[MoonsData, EngineSet], Step]:
    def make(data: MoonsData, es: EngineSet) -> Step:
        eng = _engine(es, key)
        return demo_step(PlainMLP(eng.leaf, data.init), eng, data)

    return make


def make_micrograd(data: MoonsData, es: EngineSet) -> Step:
    eng = _engine(es, MICROGRAD)
    nn = importlib.import_module("micrograd.nn")
    random.seed(data.seed)  # micrograd.nn draws from the global generator, as in the demo
    model = nn.MLP(LAYERS[0], list(LAYERS[1:]))
    got = [[[p.data for p in n.w] for n in layer.neurons] for layer in model.layers]
    if got != data.init:  # the comparison is only fair if every engine starts from the same weights
        raise RuntimeError("micrograd's initial weights differ from the suite's")
    return demo_step(model, eng, data)


def _set_init(model: Any, init: list[list[list[float]]]) -> bool:
    """Copy the shared initial weights into a micrograd-shaped model (layers[i].neurons[j].w / .b)."""
    try:
        layers = model.layers
        if len(layers) != len(init):
            return False
        for layer, ws in zip(layers, init):
            if len(layer.neurons) != len(ws):
                return False
            for neuron, w in zip(layer.neurons, ws):
                if len(neuron.w) != len(w):
                    return False
                for p, v in zip(neuron.w, w):
                    p.data = v
                neuron.b.data = 0.0
        return True
    except AttributeError:
        return False


def make_arenagrad_nn(key: str) -> Callable[[MoonsData, EngineSet], Step]:
    def make(data: MoonsData, es: EngineSet) -> Step:
        eng = _engine(es, key)
        try:
            nn = importlib.import_module("arenagrad.nn")
        except ImportError as exc:
            raise NotAvailable(f"arenagrad.nn not installed ({exc})") from exc
        kwargs: dict[str, Any] = {"activation": "relu", "seed": data.seed}
        if key != ARENAGRAD:
            kwargs["engine"] = eng.module
        model = nn.MLP(LAYERS[0], list(LAYERS[1:]), **kwargs)
        if not _set_init(model, data.init):
            raise RuntimeError("arenagrad.nn.MLP is not micrograd-shaped; cannot load the shared init")
        return demo_step(model, eng, data, fused=True)

    return make


def _replay_model(data: MoonsData, es: EngineSet) -> tuple[Any, Any]:
    """arenagrad and an arenagrad.nn.MLP holding the shared initial weights, for the replay trainers."""
    _engine(es, ARENAGRAD)
    ag = importlib.import_module("arenagrad")
    if not hasattr(ag, "Tape"):
        raise NotAvailable("this arenagrad has no Tape (native replay)")
    model = ag.nn.MLP(LAYERS[0], list(LAYERS[1:]), activation="relu", seed=data.seed)
    if not _set_init(model, data.init):
        raise RuntimeError("arenagrad.nn.MLP is not micrograd-shaped; cannot load the shared init")
    return ag, model


def make_arenagrad_replay(data: MoonsData, es: EngineSet) -> Step:
    """The whole full-batch loss graph recorded once, with the data as tape inputs; each step replays
    forward and backward natively and updates with the native SGD (arenagrad.ParamGroup)."""
    ag, model = _replay_model(data, es)
    xs = [[ag.Value(0.0), ag.Value(0.0)] for _ in data.X]
    ys = [ag.Value(0.0) for _ in data.y]
    scores = [model(x) for x in xs]
    data_loss = ag.sum([(1.0 - y * s).relu() for y, s in zip(ys, scores)]) * (1.0 / len(scores))
    params = model.parameters()
    tape = ag.Tape(data_loss + ALPHA * ag.dot(params, params), [v for row in xs for v in row] + ys)
    group = ag.ParamGroup(params)
    feed = [v for row in data.X for v in row] + [float(y) for y in data.y]

    def step(lr: float) -> tuple[float, float]:
        group.zero_grad()
        loss = tape.forward(feed)
        tape.backward()
        group.sgd_step(lr=lr)
        acc = sum((s.data > 0) == (y > 0) for s, y in zip(scores, data.y)) / len(data.y)
        return loss, acc

    return step


def make_arenagrad_batched_replay(data: MoonsData, es: EngineSet) -> Step:
    """One sample's loss graph recorded once and evaluated for all 100 samples per native call
    (batch-minor rows), plus the L2 penalty as a second tape; native SGD."""
    ag, model = _replay_model(data, es)
    import numpy as np

    x1, x2, y = ag.Value(0.0), ag.Value(0.0), ag.Value(1.0)
    score = model([x1, x2])
    per_sample = ag.Tape((1.0 - y * score).relu(), [x1, x2, y])
    params = model.parameters()
    penalty = ag.Tape(ALPHA * ag.dot(params, params))
    group = ag.ParamGroup(params)
    batch = np.column_stack([np.asarray(data.X, dtype=float), np.asarray(data.y, dtype=float)])
    labels = batch[:, 2] > 0

    def step(lr: float) -> tuple[float, float]:
        group.zero_grad()
        loss = float(per_sample.forward_batch(batch).mean()) + penalty.forward()
        per_sample.backward_batch(1.0 / len(batch), input_grads=False)
        penalty.backward()
        group.sgd_step(lr=lr)
        acc = float(np.mean((per_sample.batch_values(score) > 0) == labels))
        return loss, acc

    return step


def make_torch_batched(data: MoonsData, es: EngineSet) -> Step:
    torch = es.torch_batched
    if torch is None:
        raise NotAvailable(es.missing.get(TORCH_BATCHED, "not installed"))
    f64 = torch.float64
    mods: list[Any] = []
    for i, (nin, nout) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        lin = torch.nn.Linear(nin, nout, dtype=f64)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(data.init[i], dtype=f64))
            lin.bias.zero_()
        mods.append(lin)
        if i < len(LAYERS) - 2:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    params = list(model.parameters())
    Xt = torch.tensor(data.X, dtype=f64)
    yt = torch.tensor(data.y, dtype=f64)

    def step(lr: float) -> tuple[float, float]:
        scores = model(Xt).squeeze(1)
        data_loss = torch.relu(1 - yt * scores).mean()
        reg_loss = ALPHA * sum((p * p).sum() for p in params)
        total_loss = data_loss + reg_loss
        acc = ((yt > 0) == (scores > 0)).to(f64).mean().item()
        for p in params:
            p.grad = None
        total_loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        return total_loss.item(), acc

    return step


def make_jax(data: MoonsData, es: EngineSet) -> Step:
    """torch batched's step written the way a JAX user writes it: forward, loss, gradient, SGD update and
    accuracy (the count of correct samples) in ONE jitted function, compiled before the clock starts;
    parameters a pytree of float64 device arrays (per layer: W (out, in), b (out,)), from the shared init with
    zero biases."""
    jax, dev = jax_cpu_float64(es)
    import numpy as np

    jnp = jax.numpy

    def put(a: Any) -> Any:
        return jax.device_put(jnp.asarray(np.asarray(a, dtype=np.float64)), dev)

    X, y = put(data.X), put(data.y)
    params = [(put(ws), put(np.zeros(len(ws)))) for ws in data.init]
    last = len(params) - 1

    def loss_fn(params: Any, X: Any, y: Any) -> tuple[Any, Any]:
        h = X
        for i, (W, b) in enumerate(params):
            h = h @ W.T + b
            if i < last:
                h = jax.nn.relu(h)
        scores = h[:, 0]
        data_loss = jax.nn.relu(1 - y * scores).mean()
        reg_loss = ALPHA * sum(jnp.sum(p * p) for p in jax.tree_util.tree_leaves(params))
        return data_loss + reg_loss, scores

    def train_step(params: Any, X: Any, y: Any, lr: float) -> tuple[Any, Any, Any]:
        (loss, scores), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, X, y)
        # The count of correct samples; the step divides it by n as the other rows do (jnp.mean of bools is
        # float32, and XLA turns a float64 "/ n" into "* (1/n)": 0.8200000000000001 instead of 0.82).
        correct = jnp.sum((y > 0) == (scores > 0))
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss, correct

    t0 = time.perf_counter()
    compiled = jax.jit(train_step).lower(params, X, y, 1.0).compile()  # trace + XLA compile, untimed
    compile_ms = (time.perf_counter() - t0) * 1e3
    state = [params]
    n = len(data.y)

    def step(lr: float) -> tuple[float, float]:
        new, loss, correct = compiled(state[0], X, y, lr)
        jax.block_until_ready((new, loss, correct))
        state[0] = new
        return float(loss), int(correct) / n

    return NotedStep(step, f"jit(value_and_grad + SGD update + correct count) in one call; jax "
                           f"{getattr(jax, '__version__', '?')} on {dev.platform}, float64; compiled before "
                           f"timing ({compile_ms:.0f} ms)")


def variants() -> list[MoonsVariant]:
    """Rows of the moons table, in order. Append a MoonsVariant here to add one (see benchmarks/README.md)."""
    return [
        MoonsVariant("arenagrad", ARENAGRAD, make_plain(ARENAGRAD),
                     desc="plain micrograd code (scalar ops) on arenagrad.Value"),
        MoonsVariant("arenagrad.nn", ARENAGRAD, make_arenagrad_nn(ARENAGRAD),
                     desc="arenagrad.nn.MLP (dot neurons), loss via arenagrad.sum and arenagrad.dot"),
        MoonsVariant("arenagrad replay", ARENAGRAD, make_arenagrad_replay,
                     desc="Tape: the full-batch graph recorded once, replayed natively; native SGD"),
        MoonsVariant(BATCHED_REPLAY_LABEL, ARENAGRAD, make_arenagrad_batched_replay,
                     desc="Tape.forward_batch: one sample's graph run for all 100 at once; native SGD"),
        MoonsVariant("reference", REFERENCE, make_plain(REFERENCE),
                     desc="plain micrograd code on arenagrad.reference.Value",
                     steps=lambda cfg: min(cfg.moons_steps, cfg.moons_steps_slow)),
        MoonsVariant("micrograd", MICROGRAD, make_micrograd, role=ROLE_MICROGRAD,
                     desc="micrograd.nn.MLP and the demo's loss"),
        MoonsVariant("torch 0-dim", TORCH, make_plain(TORCH), role=ROLE_TORCH,
                     desc="plain micrograd code on 0-dim float64 tensors",
                     steps=lambda cfg: min(cfg.moons_steps, cfg.moons_steps_slow)),
        MoonsVariant("torch batched", TORCH_BATCHED, make_torch_batched, role=ROLE_TORCH_BATCHED,
                     desc="float64 nn.Sequential on the (n, 2) tensor"),
        MoonsVariant(JAX_LABEL, JAX, make_jax,
                     desc="float64 MLP on the (n, 2) array, the whole step one jitted function"),
    ]


def run(cfg: Config, es: EngineSet, extra_variants: list[MoonsVariant] | None = None) -> list[Result]:
    try:
        data = make_data(cfg)
    except ImportError as exc:
        return [Result(WORKLOAD, m, "all", None, "", status="error", note=f"scikit-learn missing: {exc}")
                for m in METRICS]
    built: list[tuple[MoonsVariant, Step | list[Result]]] = [
        (v, build(v, data, es)) for v in [*variants(), *(extra_variants or [])] if v.engine in es.selected]
    turns = {v.label: Turns(step=lambda k, s=step: s(learning_rate(k)), steps=v.steps(cfg),
                            warm=lambda s=step: s(0.0))  # lr 0: a whole step that leaves the weights be
             for v, step in built if not isinstance(step, list)}
    if turns:
        print(f"  moons: {', '.join(f'{label} ({t.steps})' for label, t in turns.items())} steps, "
              "taking turns ...", flush=True)
    got = blocked(turns)
    results: list[Result] = []
    for v, step in built:
        results.extend(step if isinstance(step, list) else
                       rows(cfg, v, data, step, got.times[v.label], got.last[v.label], got.warmups[v.label]))
    return results


def build(v: MoonsVariant, data: MoonsData, es: EngineSet) -> Step | list[Result]:
    """The variant's step, or its rows saying why there is none."""
    try:
        return v.make(data, es)
    except NotAvailable as exc:
        return [Result(WORKLOAD, m, v.label, None, "", role=v.role, status=exc.status, note=str(exc))
                for m in METRICS]
    except (RuntimeError, TypeError, ValueError) as exc:
        return [Result(WORKLOAD, m, v.label, None, "", role=v.role, status="error",
                       note=f"{type(exc).__name__}: {exc}") for m in METRICS]


def rows(cfg: Config, v: MoonsVariant, data: MoonsData, step: Step, times: list[int],
         last: tuple[float, float], warmups: int) -> list[Result]:
    """The variant's two rows from its timed steps and what the last one returned."""
    n_steps = len(times)
    loss, acc = last
    note = f"{len(data.X)} samples; {v.desc}" + (f"; {step.note}" if isinstance(step, NotedStep) else "")
    out = [timing(WORKLOAD, M_STEP, v.label, times, 1e9, "s", role=v.role,
                  note=f"{turns_text(warmups, n_steps)}; {note}")]
    if n_steps >= cfg.moons_steps:
        out.append(Result(WORKLOAD, M_ACC, v.label, 100.0 * acc, "%", runs=1, role=v.role, ratios=False,
                          lower_is_better=False,
                          note=f"at step {n_steps} (as the demo prints it); loss {loss:.4f}"))
    else:
        out.append(Result(WORKLOAD, M_ACC, v.label, None, "%", role=v.role, status="n/a",
                          note=f"timed {n_steps} steps only (accuracy {100 * acc:.0f}% at step {n_steps})"))
    return out

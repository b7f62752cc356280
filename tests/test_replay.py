"""Native replay (Tape) and bulk parameter updates (ParamGroup)."""

from __future__ import annotations

import gc
import math
import random

import numpy as np
import pytest
from conftest import require_module

import arenagrad
from arenagrad import ParamGroup, Tape, Value, arena_stats


def model(x1: Value, x2: Value, w: list[Value]) -> Value:
    """Every kind of op, with relu and abs whose derivative flips as inputs cross zero."""
    h = (arenagrad.dot(w[:2], [x1, x2]) + w[2]).relu()
    g = arenagrad.sum([h * w[3], x1 * x2, abs(x1 - w[4]), w[5]])  # w[5]: a parameter summed directly
    return (g.tanh() + (x2**2) / (1.0 + abs(x1)) - (x1 * 0.5).sigmoid() * w[4] ** w[5]).exp().log() + x2.sin()


def fresh_weights() -> list[Value]:
    return [Value(v) for v in (0.5, -1.0, 0.2, 1.5, 0.7, 2.0)]


def eager(x1v: float, x2v: float, w: list[Value]) -> tuple[float, list[float]]:
    for p in w:
        p.grad = 0.0
    x1, x2 = Value(x1v), Value(x2v)
    out = model(x1, x2, w)
    out.backward()
    return out.data, [p.grad for p in w] + [x1.grad, x2.grad]


SAMPLES = [(1.0, 2.0), (3.0, -1.0), (-2.0, 0.5), (0.0, 0.0), (0.7, -0.35), (-1.5, -2.5)]


def test_scalar_replay_equals_eager_evaluation_bit_for_bit() -> None:
    w = fresh_weights()
    x1, x2 = Value(1.0), Value(2.0)
    tape = Tape(model(x1, x2, w), [x1, x2])
    for sample in SAMPLES * 2:
        for p in [*w, x1, x2]:
            p.grad = 0.0
        value = tape.forward(sample)
        tape.backward()
        replayed = [p.grad for p in w] + [x1.grad, x2.grad]
        assert (value, replayed) == eager(*sample, w)


def test_replay_sees_parameter_updates_and_relu_switching_sides() -> None:
    w = fresh_weights()
    x1, x2 = Value(1.0), Value(2.0)
    tape = Tape(model(x1, x2, w), [x1, x2])
    relu_was = set()
    for step in range(20):
        for p in [*w, x1, x2]:
            p.grad = 0.0
        tape.forward([1.0, 2.0])
        tape.backward()
        replay_grads = [p.grad for p in w]
        _, eager_grads = eager(1.0, 2.0, w)
        assert replay_grads == eager_grads[: len(w)]
        relu_was.add(w[0].data * 1.0 + w[1].data * 2.0 + w[2].data > 0)
        w[2].data += 1.0 if step < 10 else -1.0  # pushes the relu's input across zero and back
    assert relu_was == {True, False}


def test_batched_replay_matches_per_sample_replay() -> None:
    w = fresh_weights()
    x1, x2 = Value(1.0), Value(2.0)
    tape = Tape(model(x1, x2, w), [x1, x2])
    x = np.array(SAMPLES, dtype=float)
    for p in w:
        p.grad = 0.0
    seed = np.linspace(0.5, 1.5, len(SAMPLES))
    outs = tape.forward_batch(x)
    input_grads = tape.backward_batch(seed)
    batched_param_grads = [p.grad for p in w]

    expected_param_grads = np.zeros(len(w))
    for i, sample in enumerate(SAMPLES):
        value, grads = eager(*sample, w)
        assert outs[i] == value  # same rules in the same order: bit for bit
        assert input_grads[i].tolist() == pytest.approx([seed[i] * g for g in grads[len(w) :]], rel=1e-15)
        expected_param_grads += seed[i] * np.array(grads[: len(w)])
    assert batched_param_grads == pytest.approx(expected_param_grads.tolist(), rel=1e-12, abs=1e-15)
    h_node = next(iter(next(iter(tape.root._prev))._prev))  # any inner node will do
    assert tape.batch_values(h_node).shape == (len(SAMPLES),)


def test_batched_replay_reports_the_failing_sample_and_recovers() -> None:
    x = Value(1.0)
    tape = Tape(x.log() + 1.0, [x])
    with pytest.raises(ValueError, match=r"sample 2: math domain error: log\(-1.0\)"):
        tape.forward_batch(np.array([[1.0], [2.0], [-1.0]]))
    with pytest.raises(ValueError, match="forward_batch"):
        tape.backward_batch()
    assert tape.forward_batch(np.array([[1.0], [math.e]])).tolist() == [1.0, 2.0]
    assert tape.backward_batch().tolist() == [[1.0], [1.0 / math.e]]


def test_scalar_replay_errors_keep_python_exception_types() -> None:
    x = Value(2.0)
    tape = Tape(1.0 / x + x.sqrt() + (x * 300).exp(), [x])
    with pytest.raises(ZeroDivisionError, match="while replaying"):
        tape.forward([0.0])
    with pytest.raises(ValueError, match="sqrt"):
        tape.forward([-1.0])
    with pytest.raises(OverflowError, match="exp"):
        tape.forward([10.0])
    assert tape.forward([1.0]) == 1.0 + 1.0 + math.exp(300.0)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda a, b, r: Tape(a), ValueError, "cannot record a leaf"),
        (lambda a, b, r: Tape(r, [a * 2]), ValueError, "result of an op"),
        (lambda a, b, r: Tape(r, [Value(3.0)]), ValueError, "not a leaf of the recorded graph"),
        (lambda a, b, r: Tape(r, [a, a]), ValueError, "given twice"),
        (lambda a, b, r: Tape(r, [a, 2.0]), TypeError, "must be an arenagrad.Value"),
        (lambda a, b, r: Tape("root"), TypeError, "must be an arenagrad.Value"),
        (lambda a, b, r: Tape(r, [a]).forward([1.0, 2.0]), ValueError, "expects 1 input values, got 2"),
        (lambda a, b, r: Tape(r, [a]).forward(), ValueError, "expects 1 input values, got 0"),
        (lambda a, b, r: Tape(r, [a]).forward([[1.0]]), TypeError, "1-d sequence"),
        (lambda a, b, r: Tape(r, [a]).forward(["x"]), TypeError, "expects real numbers"),
        (lambda a, b, r: Tape(r, [a, b]).forward_batch(np.zeros((4, 3))), ValueError, r"shape \(batch, 2\)"),
        (lambda a, b, r: Tape(r, [a, b]).forward_batch(np.zeros((0, 2))), ValueError, "batch >= 1"),
        (lambda a, b, r: Tape(r, [a]).backward_batch(), ValueError, "forward_batch"),
        (lambda a, b, r: Tape(r, [a]).batch_values(a), ValueError, "no batch values"),
    ],
)
def test_misuse_gets_a_clear_error(make, error, message) -> None:  # type: ignore[no-untyped-def]
    a, b = Value(1.0), Value(2.0)
    root = a * b + 1.0
    gc.collect()  # cyclic garbage of earlier tests must not be collected mid-test
    before = arena_stats()["live"]
    with pytest.raises(error, match=message):
        make(a, b, root)
    assert arena_stats()["live"] == before


def test_backward_batch_checks_its_seed() -> None:
    a = Value(1.0)
    tape = Tape(a * a, [a])
    tape.forward_batch(np.array([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="2 seeds"):
        tape.backward_batch(np.ones(3))
    assert tape.backward_batch(0.5).tolist() == [[1.0], [2.0]]


def test_a_tape_owns_its_graph_and_frees_it_when_dropped() -> None:
    gc.collect()  # cyclic garbage of earlier tests must not be collected mid-test
    baseline = arena_stats()["live"]
    x = Value(3.0)
    tape = Tape(((x * 2.0).tanh() + x**2).relu(), [x])
    del x  # the tape alone keeps the graph alive now
    assert tape.forward([0.5]) == pytest.approx(math.tanh(1.0) + 0.25, rel=1e-15)
    tape.backward()
    (x_again,) = tape.inputs
    assert x_again.grad == pytest.approx(2 * (1 - math.tanh(1.0) ** 2) + 1.0, rel=1e-15)
    del tape, x_again
    assert arena_stats()["live"] == baseline


def moons_like_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, size=(n, 2))
    y = np.where(x[:, 0] * x[:, 1] > 0, 1.0, -1.0)
    return x, y


def test_a_training_step_over_a_batched_tape_matches_eager_training() -> None:
    rng = random.Random(1)
    x_data, y_data = moons_like_data(16, seed=3)

    def make_params() -> list[Value]:
        r = random.Random(rng.random())
        return [Value(r.uniform(-1, 1)) for _ in range(4 * 2 + 4 + 4 + 1)]

    def score(params: list[Value], x: list[Value]) -> Value:
        hidden = [(arenagrad.dot(params[2 * j : 2 * j + 2], x) + params[8 + j]).relu() for j in range(4)]
        return arenagrad.dot(params[12:16], hidden) + params[16]

    eager_params = make_params()
    replay_params = [Value(p.data) for p in eager_params]
    xin, yin = [Value(0.0), Value(0.0)], Value(1.0)
    tape = Tape((1.0 - yin * score(replay_params, xin)).relu(), [*xin, yin])
    group = ParamGroup(replay_params)
    batch = np.column_stack([x_data, y_data])
    for _ in range(15):
        losses = [
            (1.0 - float(y) * score(eager_params, list(map(Value, x)))).relu() for x, y in zip(x_data, y_data)
        ]
        loss = arenagrad.sum(losses) * (1.0 / len(losses))
        for p in eager_params:
            p.grad = 0.0
        loss.backward()
        for p in eager_params:
            p.data -= 0.1 * p.grad

        group.zero_grad()
        per_sample = tape.forward_batch(batch)
        tape.backward_batch(1.0 / len(batch))
        group.sgd_step(lr=0.1)
        assert per_sample.mean() == pytest.approx(loss.data, rel=1e-12, abs=1e-15)
    assert group.data.tolist() == pytest.approx([p.data for p in eager_params], rel=1e-12, abs=1e-15)


def test_param_group_reads_and_writes_in_bulk() -> None:
    params = [Value(float(i)) for i in range(5)]
    group = ParamGroup(params)
    assert len(group) == 5
    group.data = np.arange(5.0) * 2
    assert [p.data for p in params] == [0.0, 2.0, 4.0, 6.0, 8.0]
    (arenagrad.sum(params) * 3.0).backward()
    assert group.grad.tolist() == [3.0] * 5
    group.zero_grad()
    assert [p.grad for p in params] == [0.0] * 5
    with pytest.raises(ValueError, match="expects 5 values"):
        group.data = [1.0, 2.0]
    with pytest.raises(TypeError, match=r"params\[1\] must be an arenagrad.Value"):
        ParamGroup([params[0], 1.0])


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "sgd", "lr": 0.1},
        {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0.1},
        {"kind": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True},
        {"kind": "adam", "lr": 0.01},
        {"kind": "adam", "lr": 0.02, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1},
    ],
)
def test_native_optimizer_steps_match_torch(config: dict[str, object]) -> None:
    torch = require_module("torch")
    settings = dict(config)
    kind = settings.pop("kind")
    rng = np.random.default_rng(0)
    start = rng.uniform(-1, 1, size=6)
    targets = rng.uniform(-1, 1, size=6)

    params = [Value(float(v)) for v in start]
    group = ParamGroup(params)
    tensor = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    if kind == "sgd":
        optimizer = torch.optim.SGD([tensor], **settings)
    else:
        betas = (settings.pop("beta1", 0.9), settings.pop("beta2", 0.999))
        optimizer = torch.optim.Adam([tensor], betas=betas, **settings)
    target_tensor = torch.tensor(targets, dtype=torch.float64)
    for _ in range(20):
        group.zero_grad()
        loss = arenagrad.sum((p - float(t)) ** 2 * (p.sin() + 2.0) for p, t in zip(params, targets))
        loss.backward()
        if kind == "sgd":
            group.sgd_step(**config_without_kind(config))
        else:
            group.adam_step(**config_without_kind(config))
        optimizer.zero_grad()
        torch_loss = (((tensor - target_tensor) ** 2) * (tensor.sin() + 2.0)).sum()
        torch_loss.backward()
        optimizer.step()
    assert group.data.tolist() == pytest.approx(tensor.detach().numpy().tolist(), rel=1e-10, abs=1e-12)


def config_without_kind(config: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in config.items() if k != "kind"}


def test_batched_replay_trains_micrograds_demo_with_torchs_losses() -> None:
    """The full-batch moons step of issue 4, as a batched tape plus a native SGD step, against the same
    model in PyTorch (float64, batched): equal losses to 1e-9 at every step."""
    torch = require_module("torch")
    from arenagrad.losses import l2_penalty
    from arenagrad.nn import MLP

    x_data, labels = arenagrad.datasets.moons(n_samples=100, noise=0.1, seed=0)
    y_data = 2.0 * labels - 1.0
    model = MLP(2, [16, 16, 1], seed=1337)
    seq = model.to_torch()

    x1, x2, y = Value(0.0), Value(0.0), Value(1.0)
    per_sample = Tape((1.0 - y * model([x1, x2])).relu(), [x1, x2, y])
    penalty = Tape(l2_penalty(model, 1e-4))
    group = ParamGroup(model.parameters())
    batch = np.column_stack([x_data, y_data])

    torch_opt = torch.optim.SGD(seq.parameters(), lr=1.0)
    xt = torch.tensor(x_data, dtype=torch.float64)
    yt = torch.tensor(y_data, dtype=torch.float64)
    for step in range(30):
        lr = 1.0 - 0.9 * step / 100
        group.zero_grad()
        loss = per_sample.forward_batch(batch).mean() + penalty.forward()
        per_sample.backward_batch(1.0 / len(batch))
        penalty.backward()
        group.sgd_step(lr=lr)

        for g in torch_opt.param_groups:
            g["lr"] = lr
        scores = seq(xt).squeeze(1)
        torch_loss = torch.relu(1 - yt * scores).mean() + 1e-4 * sum((p * p).sum() for p in seq.parameters())
        torch_opt.zero_grad()
        torch_loss.backward()
        torch_opt.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-9, abs=1e-12), f"step {step}"

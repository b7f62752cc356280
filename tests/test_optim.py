"""arenagrad.optim: PyTorch's update rules and schedules, checked by hand and against torch.optim."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arenagrad.losses import mse_loss
from arenagrad.nn import MLP
from arenagrad.optim import SGD, Adam, LambdaLR, LinearLR, read_parameters, write_parameters


def _leaves(engine, data, grads):
    params = [engine.Value(d) for d in data]
    write_parameters(params, grads=grads)
    return params


def test_read_and_write_parameters(engine):
    params = _leaves(engine, [1.0, 2.0], [0.5, -0.5])
    assert read_parameters(params) == ([1.0, 2.0], [0.5, -0.5])
    write_parameters(params, data=[3.0, 4.0])
    assert read_parameters(params) == ([3.0, 4.0], [0.5, -0.5])


def test_sgd_step_by_hand(engine):
    params = _leaves(engine, [1.0, -2.0], [0.5, 0.25])
    SGD(params, lr=0.1, weight_decay=0.01).step()
    assert [p.data for p in params] == [1.0 - 0.1 * (0.5 + 0.01 * 1.0), -2.0 - 0.1 * (0.25 + 0.01 * -2.0)]


def test_sgd_momentum_buffer_starts_as_the_first_gradient(engine):
    (p,) = params = _leaves(engine, [1.0], [2.0])
    optimizer = SGD(params, lr=0.1, momentum=0.9)
    optimizer.step()
    assert p.data == 1.0 - 0.1 * 2.0  # not (1 - momentum) * g, not momentum * 0 + g
    p.grad = 1.0
    optimizer.step()
    assert p.data == pytest.approx(0.8 - 0.1 * (0.9 * 2.0 + 1.0), rel=1e-15)


def test_adam_first_step_is_lr_times_sign_after_bias_correction(engine):
    params = _leaves(engine, [1.0, 1.0], [3.0, -1e-3])
    Adam(params, lr=0.01).step()
    assert [p.data for p in params] == pytest.approx([0.99, 1.01], rel=1e-6)


def test_zero_grad_and_module_params(engine):
    model = MLP(2, [2, 1], seed=0, engine=engine)
    optimizer = SGD(model, lr=0.1)
    assert optimizer.params == model.parameters()
    model([1.0, 1.0]).backward()
    optimizer.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_micrograd_schedule_is_exact(engine):
    optimizer = SGD([engine.Value(0.0)], lr=1.0)
    schedule = LinearLR(optimizer, start_factor=1.0, end_factor=0.1, total_iters=100)
    for k in range(100):
        assert optimizer.lr == 1.0 - 0.9 * k / 100  # micrograd's demo, bit for bit
        optimizer.step()
        schedule.step()
    assert optimizer.lr == pytest.approx(0.1, rel=1e-15)
    schedule.step()
    assert schedule.get_last_lr() == pytest.approx(0.1, rel=1e-15)


def test_schedules_match_torch(engine):
    torch = pytest.importorskip("torch")
    ours = SGD([engine.Value(0.0)], lr=0.3)
    theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    pairs = [
        (
            LinearLR(ours, start_factor=0.5, end_factor=0.05, total_iters=7),
            torch.optim.lr_scheduler.LinearLR(theirs, start_factor=0.5, end_factor=0.05, total_iters=7),
        ),
    ]
    lambda_ours = SGD([engine.Value(0.0)], lr=0.2)
    lambda_theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    pairs.append(
        (
            LambdaLR(lambda_ours, lambda k: 0.95**k),
            torch.optim.lr_scheduler.LambdaLR(lambda_theirs, lambda k: 0.95**k),
        )
    )
    for mine, torchs in pairs:
        for _ in range(12):
            assert mine.get_last_lr() == pytest.approx(torchs.get_last_lr()[0], rel=1e-12)
            mine.optimizer.step()
            torchs.optimizer.step()
            mine.step()
            torchs.step()


def _run_torch_comparison(engine, make_ours, make_theirs, make_schedules, steps=20):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(8, 2))
    y = np.sin(X[:, 0]) - X[:, 1] ** 2
    model = MLP(2, [4, 4, 1], "tanh", seed=9, engine=engine)
    seq = model.to_torch()
    ours, theirs = make_ours(model.parameters()), make_theirs(seq.parameters())
    our_schedule, their_schedule = make_schedules(ours, theirs)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    rows = X.tolist()
    our_losses, their_losses = [], []
    for _ in range(steps):
        loss = mse_loss([model(x) for x in rows], y)
        ours.zero_grad()
        loss.backward()
        ours.step()
        our_schedule.step()
        their_loss = ((seq(Xt).squeeze(1) - yt) ** 2).mean()
        theirs.zero_grad()
        their_loss.backward()
        theirs.step()
        their_schedule.step()
        our_losses.append(loss.data)
        their_losses.append(their_loss.item())
    assert our_losses[-1] < 0.8 * our_losses[0]  # the parameters moved a meaningful distance
    assert our_losses == pytest.approx(their_losses, rel=0, abs=1e-10)
    trained = MLP.from_torch(seq, engine=engine).state_dict()
    ours_now = model.state_dict()
    assert list(ours_now.values()) == pytest.approx([trained[k] for k in ours_now], rel=0, abs=1e-10)


@pytest.mark.parametrize(
    ("kwargs"),
    [{}, {"momentum": 0.9}, {"momentum": 0.5, "weight_decay": 0.01}],
    ids=["plain", "momentum", "momentum+decay"],
)
def test_sgd_matches_torch_over_20_steps(engine, kwargs):
    torch = pytest.importorskip("torch")
    _run_torch_comparison(
        engine,
        lambda params: SGD(params, lr=0.1, **kwargs),
        lambda params: torch.optim.SGD(params, lr=0.1, **kwargs),
        lambda ours, theirs: (
            LinearLR(ours, start_factor=1.0, end_factor=0.1, total_iters=20),
            torch.optim.lr_scheduler.LinearLR(theirs, start_factor=1.0, end_factor=0.1, total_iters=20),
        ),
    )


@pytest.mark.parametrize(
    ("kwargs"),
    [{}, {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}],
    ids=["defaults", "betas+eps+decay"],
)
def test_adam_matches_torch_over_20_steps(engine, kwargs):
    torch = pytest.importorskip("torch")
    _run_torch_comparison(
        engine,
        lambda params: Adam(params, lr=0.05, **kwargs),
        lambda params: torch.optim.Adam(params, lr=0.05, **kwargs),
        lambda ours, theirs: (
            LambdaLR(ours, lambda k: 1.0 / (1.0 + 0.1 * k)),
            torch.optim.lr_scheduler.LambdaLR(theirs, lambda k: 1.0 / (1.0 + 0.1 * k)),
        ),
    )


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda v: SGD(v, lr=-0.1), ValueError, r"lr must lie in \[0.0, inf\], got -0.1"),
        (lambda v: SGD(v, lr="0.1"), TypeError, "lr must be a real number, got str"),
        (lambda v: SGD(v, lr=0.1, momentum=-1), ValueError, "momentum must lie in"),
        (lambda v: SGD([], lr=0.1), ValueError, "empty parameter list"),
        (lambda v: SGD([v[0], v[0]], lr=0.1), ValueError, "the same Value more than once"),
        (lambda v: SGD([1.0], lr=0.1), TypeError, "parameter 0 is a float, not a Value"),
        (
            lambda v: SGD(v[0], lr=0.1),
            TypeError,
            "params must be a Module or an iterable of Values, got Value",
        ),
        (lambda v: Adam(v, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must lie in \[0.0, 1.0\), got 1.0"),
        (lambda v: Adam(v, betas=0.9), TypeError, "betas must be a pair"),
        (lambda v: Adam(v, eps=-1e-8), ValueError, "eps must lie in"),
        (
            lambda v: LinearLR(SGD(v, lr=1.0), start_factor=0.0),
            ValueError,
            "start_factor must be greater than 0",
        ),
        (lambda v: LinearLR(SGD(v, lr=1.0), end_factor=1.5), ValueError, "end_factor must lie in"),
        (lambda v: LinearLR(SGD(v, lr=1.0), total_iters=0), ValueError, "total_iters must be a positive int"),
        (lambda v: LambdaLR(SGD(v, lr=1.0), 0.5), TypeError, "lr_lambda must be callable"),
        (lambda v: LinearLR(object()), TypeError, "expected an arenagrad Optimizer"),
    ],
)
def test_bad_arguments(engine, call, error, message):
    with pytest.raises(error, match=message):
        call([engine.Value(1.0), engine.Value(2.0)])


def test_nan_gradients_propagate_without_error(engine):
    params = _leaves(engine, [1.0], [math.nan])
    Adam(params).step()
    assert math.isnan(params[0].data)

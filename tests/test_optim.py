"""arenagrad.optim: PyTorch's update rules and schedules, checked by hand and against torch.optim."""

from __future__ import annotations

import math
import struct
from functools import partial

import numpy as np
import pytest
from conftest import require_module

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


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # buf = 2 (no dampening on the first step), then 0.5*2 + (1 - 0.5)*1 = 1.5.
        ({"momentum": 0.5, "dampening": 0.5}, [1.0 - 0.1 * 2.0, 0.8 - 0.1 * 1.5]),
        # Nesterov steps along g + momentum*buf: 2 + 0.5*2 = 3, then buf = 0.5*2 + 1 = 2 and 1 + 0.5*2 = 2.
        ({"momentum": 0.5, "nesterov": True}, [1.0 - 0.1 * 3.0, 0.7 - 0.1 * 2.0]),
    ],
    ids=["dampening", "nesterov"],
)
def test_sgd_dampening_and_nesterov_by_hand(engine, kwargs, expected):
    (p,) = params = _leaves(engine, [1.0], [2.0])
    optimizer = SGD(params, lr=0.1, **kwargs)
    optimizer.step()
    assert p.data == pytest.approx(expected[0], rel=1e-15)
    p.grad = 1.0
    optimizer.step()
    assert p.data == pytest.approx(expected[1], rel=1e-15)


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
    torch = require_module("torch")
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
    torch = require_module("torch")
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
    torch = require_module("torch")
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
    torch = require_module("torch")
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
        (lambda v: SGD(v, lr=0.1, dampening=1.5), ValueError, r"dampening must lie in \[0.0, 1.0\]"),
        (
            lambda v: SGD(v, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            "Nesterov momentum requires a momentum and zero dampening",
        ),
        (lambda v: SGD(v, lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires a momentum"),
        (lambda v: SGD(v, lr=0.1, momentum=0.9, nesterov=1), TypeError, "nesterov must be a bool, got int"),
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


# --- One formula on both engines: the reference engine's Python update and the native ParamGroup's C++ update
# must perform the same floating-point operations in the same order, so the parameters agree bit for bit.


def _bits(values):
    return [struct.pack("<d", x).hex() for x in values]


def _train_both(native, reference, make_optimizer, data, grads_per_step, lrs):
    """The parameters after feeding the same grads (set by hand, no backward) to each engine's optimizer."""
    results = {}
    for engine in (native, reference):
        params = [engine.Value(d) for d in data]
        optimizer = make_optimizer(params, lr=lrs[0])
        # The two code paths under test: C++ ParamGroup for native Values, Python _update for the reference.
        assert (optimizer._group is not None) == (engine is native)
        for grads, lr in zip(grads_per_step, lrs):
            write_parameters(params, grads=grads)
            optimizer.lr = lr
            optimizer.step()
        results[engine.__name__] = [p.data for p in params]
    return results[native.__name__], results[reference.__name__]


def _log_uniform(rng, low, high):
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _random_problem(rng):
    """Initial data, per-step grads of mixed magnitudes, and a learning rate per step (as schedulers do)."""
    n, steps = int(rng.integers(1, 25)), int(rng.integers(3, 12))
    data = (rng.normal(size=n) * _log_uniform(rng, 1e-3, 1e2)).tolist()
    grads = [(rng.normal(size=n) * _log_uniform(rng, 1e-6, 1e3)).tolist() for _ in range(steps)]
    base_lr = _log_uniform(rng, 1e-4, 1.0)
    lrs = [base_lr * float(rng.uniform(0.1, 1.0)) for _ in range(steps)]
    return data, grads, lrs


def _random_adam_kwargs(rng):
    return {
        # beta1 both sides of 0.5: torch's lerp (and so the C++) switches formula at weight = 1 - beta1 = 0.5.
        "betas": (float(rng.uniform(0.0, 0.99)), float(rng.uniform(0.5, 0.9999))),
        "eps": float(rng.choice([1e-8, _log_uniform(rng, 1e-12, 1e-3)])),
        "weight_decay": float(rng.choice([0.0, _log_uniform(rng, 1e-5, 1e-1)])),
    }


def _random_sgd_kwargs(rng):
    momentum = float(rng.choice([0.0, rng.uniform(0.0, 0.99)]))
    dampening = float(rng.choice([0.0, rng.uniform(0.0, 1.0)]))
    return {
        "momentum": momentum,
        "dampening": dampening,
        "nesterov": bool(momentum > 0 and dampening == 0 and rng.integers(2)),
        "weight_decay": float(rng.choice([0.0, _log_uniform(rng, 1e-5, 1e-1)])),
    }


def _assert_same_bits(native, reference, make_optimizer, runs, make_kwargs, seed):
    rng = np.random.default_rng(seed)
    differing = []
    for run in range(runs):
        kwargs = make_kwargs(rng)
        data, grads, lrs = _random_problem(rng)
        ours, theirs = _train_both(native, reference, partial(make_optimizer, **kwargs), data, grads, lrs)
        assert all(math.isfinite(x) for x in ours + theirs)
        if not (all(a == b for a, b in zip(ours, theirs)) and _bits(ours) == _bits(theirs)):
            differing.append((run, kwargs))
    assert not differing, f"{len(differing)} of {runs} runs differ between the engines: {differing[:3]}"


def test_adam_gives_the_same_bits_on_both_engines(native, reference):
    _assert_same_bits(native, reference, Adam, 50, _random_adam_kwargs, seed=20240611)


def test_sgd_gives_the_same_bits_on_both_engines(native, reference):
    _assert_same_bits(native, reference, SGD, 50, _random_sgd_kwargs, seed=20240612)


def test_adam_defaults_give_the_same_bits_on_both_engines(native, reference):
    _assert_same_bits(native, reference, Adam, 50, lambda rng: {}, seed=20240613)


def test_adam_zero_eps_divides_like_ieee_on_both_engines(native, reference):
    # eps=0 with a zero (or underflowing) second moment divides by zero: 0/0 is nan and x/0 is ±inf, as in
    # C++ and torch; Python's ZeroDivisionError must not surface from the reference engine's update.
    data, grads = [1.0, 2.0, -3.0], [[0.0, 1e-170, -1e-170]]
    ours, theirs = _train_both(native, reference, partial(Adam, eps=0.0), data, grads, [0.1])
    assert math.isnan(ours[0]) and math.isnan(theirs[0])
    assert ours[1:] == theirs[1:] == [-math.inf, math.inf]


def _torch_optimizer(torch, kind, tensors, kwargs):
    if kind is Adam:
        return torch.optim.Adam(tensors, lr=1.0, **kwargs)
    return torch.optim.SGD(tensors, lr=1.0, **kwargs)


@pytest.mark.parametrize("kind", [SGD, Adam], ids=["sgd", "adam"])
def test_same_grads_give_torchs_parameters(engine, kind):
    """Fed the same grads, both engines track torch.optim to ~1e-15 of the parameters' scale.

    Not bit for bit: torch's CPU kernels fuse ``p + alpha * g`` into one multiply-add where the CPU has FMA,
    while arenagrad rounds twice (``-ffp-contract=off``; Python has no portable fma), so single elements can
    differ in the last bits, by up to ~1e-13 relative where an update cancels most of a parameter.
    """
    torch = require_module("torch")
    rng = np.random.default_rng(7)
    make_kwargs = _random_adam_kwargs if kind is Adam else _random_sgd_kwargs
    for _ in range(30):
        kwargs = make_kwargs(rng)
        data, grads, lrs = _random_problem(rng)
        params = [engine.Value(d) for d in data]
        ours = kind(params, lr=lrs[0], **kwargs)
        tensors = [torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in data]
        theirs = _torch_optimizer(torch, kind, tensors, kwargs)
        for step_grads, lr in zip(grads, lrs):
            write_parameters(params, grads=step_grads)
            for t, g in zip(tensors, step_grads):
                t.grad = torch.tensor(g, dtype=torch.float64)
            ours.lr = lr
            theirs.param_groups[0]["lr"] = lr
            ours.step()
            theirs.step()
            expected = [t.item() for t in tensors]
            scale = max(abs(x) for x in expected)
            assert [p.data for p in params] == pytest.approx(expected, rel=1e-15, abs=1e-15 * scale), kwargs


@pytest.mark.parametrize("engine_name", ["native", "reference"])
def test_hyperparameters_changed_between_steps_are_checked_alike_on_both_engines(engine_name, request):
    """A scheduler (or a user) may change lr or betas between steps: both engines refuse a bad value at
    the next step, with the same error, instead of one raising and the other taking a wrong step."""
    engine = request.getfixturevalue(engine_name)
    p = engine.Value(1.0)
    opt = SGD([p], lr=0.1)
    sched = LambdaLR(opt, lambda k: -1.0 if k else 1.0)
    p.grad = 1.0
    opt.step()
    sched.step()
    with pytest.raises(ValueError, match="lr must lie in"):
        opt.step()
    assert p.data == 0.9
    q = engine.Value(1.0)
    adam = Adam([q])
    adam.betas = (1.0, 0.999)
    q.grad = 1.0
    with pytest.raises(ValueError, match=r"betas\[0\] must lie in"):
        adam.step()
    assert q.data == 1.0

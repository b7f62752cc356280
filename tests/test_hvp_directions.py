"""Tape.hvp_batch with several directions at once: k Hessian-vector products in one sweep, the directions
side by side in lanes (cpp/hvp_directions.cpp), and with the identity on the parameters, a whole Hessian.

Its promise (Tape.hvp_batch's docstring, docs/derivatives.md): direction d's rows are what a call with that
direction alone gives, bit for bit whenever the directions of a block move the same inputs and parameters
(their symbolic zeros then agree), and its per-parameter sums agree with that call's to rounding. The
recorded-gradient route (forward mode over ``grad(..., create_graph=True)``, as in test_hvp_batch.py) bounds
the rounding of those sums; PyTorch and the eager engine check a Hessian itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_module
from hypothesis import given, settings
from hypothesis import strategies as st
from test_batched_ops import BATCHES, Program, Recording, programs, record, samples
from test_hvp_batch import (
    Arrays,
    _mlp_loss,
    _through_recorded_gradient,
    assert_same_bits_under_1_2_and_3_threads,
    fixed_program_digest,
)

import arenagrad as ag

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _directions(program: Program, batch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k directions on the inputs (k, batch, inputs) and on the parameters (k, params). Every direction
    leaves the same column of each out (a symbolic zero for all of them, so each direction's symbolic zeros
    are its block's) and has a few zeros that are numbers."""
    rng = np.random.default_rng([program.data_seed, batch, k, 13])
    t = rng.standard_normal((k, batch, program.n_inputs))
    t[rng.random(t.shape) < 0.05] = 0.0
    moved = np.ones(program.n_inputs, dtype=bool)
    if program.n_inputs > 1:
        moved[rng.integers(program.n_inputs)] = False
    t[:, :, ~moved] = 0.0
    t[:, 0, moved] = np.where(t[:, 0, moved] == 0.0, 0.5, t[:, 0, moved])  # a nonzero in each direction
    v = rng.standard_normal((k, len(program.params)))
    v[v == 0.0] = 0.25
    if len(program.params) > 1:
        v[:, 0] = 0.0
    return t, v


def _sums_close(got: np.ndarray, want: np.ndarray, rows: np.ndarray) -> bool:
    """Two sums of the same per-sample rows in different orders: within a bound on reassociating them where
    both are finite; otherwise the same (a sum's infinity or NaN does not depend on the order)."""
    finite = np.isfinite(got) & np.isfinite(want)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.where(finite, np.abs(got - want) <= 1e-12 * np.abs(rows).sum(axis=0), got == want)
    close |= np.isnan(got) & np.isnan(want)
    return bool(close.all())


@settings(max_examples=30, deadline=None)
@given(programs(), st.sampled_from(BATCHES), st.sampled_from([1, 5, 17, 35]))
def test_each_direction_is_its_own_call(program: Program, batch: int, k: int) -> None:
    """Rows bit for bit those of hvp_batch with that direction alone; the parameters' sums within a bound
    on reassociating the recorded route's per-sample rows."""
    x, seeds = samples(program, batch)
    if program.as_list and seeds is None:
        seeds = np.ones((batch, len(program.roots)))
    rec = record(program, x[0])
    rec.tape.forward_batch(x)
    t, v = _directions(program, batch, k)
    rows, sums = rec.tape.hvp_batch(t, seeds, params=rec.params, param_tangents=v)
    n_in = program.n_inputs
    assert rows.shape == (k, batch, n_in) and sums.shape == (k, len(program.params))
    for d in range(k):
        one_rows, one_sums = rec.tape.hvp_batch(t[d], seeds, params=rec.params, param_tangents=v[d])
        np.testing.assert_array_equal(rows[d], one_rows)
        _, want = _through_recorded_gradient(program, x, seeds, t[d], v[d])
        per_sample = want[:, n_in:]
        assert _sums_close(sums[d], per_sample.sum(axis=0), per_sample), (d, sums[d], per_sample.sum(axis=0))
        assert _sums_close(sums[d], one_sums, per_sample), (d, sums[d], one_sums)
    # Without params the parameters are constants; the input directions alone still come in blocks.
    np.testing.assert_array_equal(rec.tape.hvp_batch(t, seeds),
                                  np.stack([rec.tape.hvp_batch(t[d], seeds) for d in range(k)]))


def _mlp_tape(n: int, seed: int) -> tuple[ag.Tape, list[ag.Value], np.ndarray, np.ndarray, np.ndarray]:
    """The small MLP's loss per sample with an L2 penalty (a dot of the parameters with themselves), the
    parameters shared leaves; forward_batch already run on n samples."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    Y = rng.choice([-1.0, 1.0], n)
    W = rng.standard_normal(17) * 0.7
    xs = [ag.Value(0.0) for _ in range(2)]
    y = ag.Value(0.0)
    ws = [ag.Value(float(a)) for a in W]
    term = _mlp_loss(ag, ws, xs, y, lambda a: a.relu()) + 0.01 * ag.dot(ws, ws)
    tape = ag.Tape(term, [*xs, y])
    tape.forward_batch(np.hstack([X, Y[:, None]]))
    return tape, ws, X, Y, W


def test_the_identity_on_the_parameters_gives_the_loss_hessian() -> None:
    """param_tangents = I: the Hessian of the batch loss, against the eager engine's func.hessian of the
    summed loss (one big graph, forward over reverse)."""
    n = 11
    tape, ws, X, Y, W = _mlp_tape(n, 5)
    rows, H = tape.hvp_batch(None, params=ws, param_tangents=np.eye(17))
    assert rows.shape == (17, n, 3) and H.shape == (17, 17)

    def loss(p: list[ag.Value]) -> ag.Value:
        terms = [_mlp_loss(ag, p, list(X[s]), float(Y[s]), lambda a: a.relu()) + 0.01 * ag.dot(p, p)
                 for s in range(n)]
        return ag.sum(terms)

    want = ag.func.hessian(loss)(W)
    np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    # The rows are the mixed derivatives: how each parameter moves the inputs' gradients.
    mixed = np.stack([tape.hvp_batch(None, params=ws, param_tangents=np.eye(17)[d])[0] for d in range(17)])
    np.testing.assert_array_equal(rows, mixed)


def test_the_hessian_matches_torch_func() -> None:
    torch = require_module("torch")
    n = 13
    tape, ws, X, Y, W = _mlp_tape(n, 8)
    _, H = tape.hvp_batch(params=ws, param_tangents=np.eye(17))
    Xt = torch.tensor(X, dtype=torch.float64)
    Yt = torch.tensor(Y, dtype=torch.float64)

    def loss(p: object) -> object:
        total = 0.01 * n * torch.dot(p, p)
        for s in range(n):
            total = total + _mlp_loss(torch, list(p), list(Xt[s]), Yt[s], torch.relu)
        return total

    want = torch.func.hessian(loss)(torch.tensor(W, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(H, want, rtol=1e-11, atol=1e-12 * np.abs(want).max())


def test_several_directions_on_the_inputs_alone() -> None:
    """tangents of shape (k, batch, inputs) without params: k blocks of rows, each its own call's."""
    a = ag.Value(0.0)
    b = ag.Value(0.0)
    c = ag.Value(1.5)
    tape = ag.Tape((a * b * c).tanh() + a.exp() * b, [a, b])
    x = np.random.default_rng(2).standard_normal((7, 2))
    tape.forward_batch(x)
    t = np.random.default_rng(3).standard_normal((20, 7, 2))
    got = tape.hvp_batch(t)
    assert got.shape == (20, 7, 2)
    for d in range(20):
        np.testing.assert_array_equal(got[d], tape.hvp_batch(t[d]))


def test_no_directions_give_empty_results() -> None:
    tape, ws, *_ = _mlp_tape(4, 1)
    rows, sums = tape.hvp_batch(None, params=ws, param_tangents=np.zeros((0, 17)))
    assert rows.shape == (0, 4, 3) and sums.shape == (0, 17)


def test_a_symbolic_zero_in_every_direction_never_meets_an_infinite_second_derivative() -> None:
    """x * sqrt(c) at c = 0, with no direction moving c: sqrt's infinite derivatives meet only symbolic
    zeros, in every lane."""
    x = ag.Value(0.0)
    c = ag.Value(0.0)
    w = ag.Value(2.0)
    tape = ag.Tape(x * x * c.sqrt() + w * x * x, [x])
    tape.forward_batch(np.array([[2.0], [1.0]]))
    v = np.array([[0.0, 1.0], [0.0, -3.0], [0.0, 0.5]])  # c never moves
    rows, sums = tape.hvp_batch(None, params=[c, w], param_tangents=v)
    # d/dε of dL/dw = x^2 along w: 0; of dL/dx = 2 w x: 2 x per unit of w
    np.testing.assert_array_equal(sums[:, 1], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(rows[:, :, 0], v[:, 1:2] * np.array([[4.0, 2.0]]), rtol=1e-15)
    assert np.isfinite(sums).all()


def test_failed_samples_give_nan_rows_and_stay_out_of_the_sums() -> None:
    a = ag.Value(1.0)
    c = ag.Value(2.0)
    tape = ag.Tape(a.log() * a * c * c, [a])
    tape.forward_batch(np.array([[2.0], [-1.0], [0.5]]), errors="nan")
    rows, sums = tape.hvp_batch(np.ones((3, 3, 1)), params=[c], param_tangents=[[1.0], [0.0], [2.0]])
    assert np.isnan(rows[:, 1]).all() and np.isfinite(rows[:, [0, 2]]).all()
    for d, v in enumerate([1.0, 0.0, 2.0]):
        one_rows, one_sums = tape.hvp_batch(np.ones((3, 1)), params=[c], param_tangents=[v])
        np.testing.assert_array_equal(rows[d], one_rows)
        np.testing.assert_allclose(sums[d], one_sums, rtol=1e-15)


def test_failed_samples_stay_out_of_a_dots_shared_terms() -> None:
    """A sample that fails beside a dot (not below it) still sends the dot a finite grad; its terms must
    not reach the shared leaf's sum, in one direction or in several, as they do not reach backward_batch's.
    L = dot([p], [x]) * x * c + log(x): dL/dp = c x^2, whose derivative along x is 2 c x."""
    x = ag.Value(1.0)
    p = ag.Value(2.0)
    c = ag.Value(3.0)
    tape = ag.Tape(ag.dot([p], [x]) * x * c + x.log(), [x])
    xs = np.array([[1.0], [-1.0], [2.0]])
    tape.forward_batch(xs, errors="nan")
    want = 2 * 3.0 * (1.0 + 2.0)  # samples 0 and 2
    _, one = tape.hvp_batch(np.ones((3, 1)), params=[p])
    _, several = tape.hvp_batch(np.ones((2, 3, 1)), params=[p], param_tangents=np.zeros((2, 1)))
    assert one[0] == want and (several == want).all()
    tape.backward_batch()
    assert p.grad == 3.0 * (1.0 + 4.0)  # backward_batch leaves the failed sample out too


def test_bad_calls_raise_clear_errors() -> None:
    a = ag.Value(1.0)
    c = ag.Value(3.0)
    tape = ag.Tape(a * a * c, [a])
    tape.forward_batch(np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"tangents of shape \(2, 3, 1\)"):
        tape.hvp_batch(np.ones((3, 1)), params=[c], param_tangents=np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"tangents of shape \(2, 3, 1\)"):
        tape.hvp_batch(np.ones((4, 3, 1)), params=[c], param_tangents=np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"param_tangents of shape \(4, 1\)"):
        tape.hvp_batch(np.ones((4, 3, 1)), params=[c], param_tangents=np.ones(1))
    with pytest.raises(ValueError, match=r"param_tangents of shape \(2, 1\)"):
        tape.hvp_batch(None, params=[c], param_tangents=np.ones((2, 2)))
    with pytest.raises(ValueError, match="needs params"):
        tape.hvp_batch(None, param_tangents=np.ones((2, 1)))
    with pytest.raises(ValueError, match="param_tangents of shape"):
        tape.hvp_batch(None, params=[c], param_tangents=np.ones((2, 1, 1)))
    with pytest.raises(TypeError):
        tape.hvp_batch(None, params=[c], param_tangents=[["x"]])
    with pytest.raises(OverflowError, match="too large for a float64"):
        tape.hvp_batch(None, params=[c], param_tangents=[[10**400]])
    with pytest.raises(OverflowError, match="too large for a float64"):
        tape.hvp_batch([[[10**400]], [[1]], [[1]]])


def directions_digest() -> str:
    """The bits of several-direction results on the fixed programs, with more blocks than threads."""

    def call(program: Program, batch: int, rec: Recording, seeds: np.ndarray | None) -> Arrays:
        t, v = _directions(program, batch, 53)
        return rec.tape.hvp_batch(t, seeds, params=rec.params, param_tangents=v)

    return fixed_program_digest((17, 301), call)


def test_the_thread_count_changes_no_bit() -> None:
    """Blocks of directions run on the threads, each summing its own samples in order: 1, 2 and 3 threads
    give this process's bits."""
    assert_same_bits_under_1_2_and_3_threads(__name__, "directions_digest")

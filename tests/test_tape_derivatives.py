"""Tapes of several roots and of recorded gradients: Newton steps and Hessian-vector products replayed."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_derivatives import Program, _Arena, _run, programs

import arenagrad as ag
from arenagrad import func as F


def _mlp_loss(seed: int = 0, n: int = 12) -> tuple[ag.Value, list[ag.Value]]:
    rng = random.Random(seed)
    model = ag.nn.MLP(2, [4, 4, 1])
    data = [([rng.uniform(-1, 1), rng.uniform(-1, 1)], rng.choice([-1.0, 1.0])) for _ in range(n)]
    loss = ag.sum([(model(x) - y) ** 2 for x, y in data]) * (1.0 / n)
    return loss, model.parameters()


def test_a_tape_of_a_gradient_replays_hessian_vector_products() -> None:
    loss, params = _mlp_loss()
    grads = ag.grad(loss, params, create_graph=True)
    tape = ag.Tape(grads, params)
    p0 = np.array([p.data for p in params])
    np.testing.assert_array_equal(tape.forward(p0), [g.data for g in grads])
    v = np.random.default_rng(1).normal(size=len(params))
    hv = tape.jvp(v)
    assert isinstance(hv, np.ndarray) and hv.shape == (len(params),)
    # The same bits as forward mode over the recorded gradient in the arena.
    np.testing.assert_array_equal(hv, [t.data for t in ag.tangent(grads, params, list(v))])
    # Replayed at another point: the values of the whole graph move there, so forward mode in the
    # arena agrees again, and the product matches finite differences of the replayed gradient.
    p1 = p0 + 0.1
    tape.forward(p1)
    hv1 = tape.jvp(v)
    np.testing.assert_array_equal(hv1, [t.data for t in ag.tangent(grads, params, list(v))])
    h = 1e-6
    fd = (tape.forward(p1 + h * v) - tape.forward(p1 - h * v)) / (2 * h)
    np.testing.assert_allclose(hv1, fd, rtol=1e-6, atol=1e-8)


def test_the_whole_hessian_in_one_batched_call() -> None:
    loss, params = _mlp_loss()
    grads = ag.grad(loss, params, create_graph=True)
    tape = ag.Tape(grads, params)
    n = len(params)
    p0 = np.array([p.data for p in params])
    values = tape.forward_batch(np.tile(p0, (n, 1)))
    assert values.shape == (n, n)
    hessian = tape.jvp_batch(np.eye(n))
    tape.forward(p0)
    columns = np.stack([tape.jvp(e) for e in np.eye(n)], axis=1)
    np.testing.assert_array_equal(hessian, columns.T)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-12)


def test_newton_steps_replay_from_one_recording() -> None:
    """Rosenbrock: record grad and the Hessian's rows once, then replay every Newton step."""
    x, y = ag.Value(-1.2), ag.Value(1.0)
    f = (1 - x) ** 2 + 100 * (y - x**2) ** 2
    g = ag.grad(f, [x, y], create_graph=True)
    h = [ag.grad(gi, [x, y], create_graph=True) for gi in g]
    tape = ag.Tape([*g, *h[0], *h[1]], [x, y])
    p = np.array([-1.2, 1.0])
    for _ in range(50):
        out = tape.forward(p)
        grad, hess = out[:2], out[2:].reshape(2, 2)
        if np.linalg.norm(grad) < 1e-13:
            break
        p = p - np.linalg.solve(hess, grad)
    np.testing.assert_allclose(p, [1.0, 1.0], atol=1e-12)


def test_several_roots_forward_backward_and_errors() -> None:
    a, b = ag.Value(2.0), ag.Value(3.0)
    c = a * b
    d = c + a
    tape = ag.Tape([c, d, a], [a, b])
    np.testing.assert_array_equal(tape.forward([2.0, 3.0]), [6.0, 8.0, 2.0])
    a.grad = b.grad = 0.0
    tape.backward([1.0, 2.0, 3.0])
    assert (a.grad, b.grad) == (3.0 + 2.0 * 4.0 + 3.0, 2.0 + 2.0 * 2.0)
    np.testing.assert_array_equal(tape.jvp([1.0, 0.0]), [3.0, 4.0, 1.0])
    out = tape.forward_batch([[2.0, 3.0], [1.0, 1.0]])
    np.testing.assert_array_equal(out, [[6.0, 8.0, 2.0], [1.0, 2.0, 1.0]])
    grads = tape.backward_batch(np.ones((2, 3)))
    np.testing.assert_array_equal(grads, [[3.0 + 4.0 + 1.0, 2.0 + 2.0], [1.0 + 2.0 + 1.0, 1.0 + 1.0]])
    jac = tape.jvp_batch([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(jac, [[3.0, 4.0, 1.0], [1.0, 1.0, 0.0]])
    assert tape.roots == [c, d, a]
    with pytest.raises(ValueError, match="seeds"):
        tape.backward()
    with pytest.raises(ValueError, match="3 seeds"):
        tape.backward([1.0])
    with pytest.raises(ValueError, match="shape"):
        tape.backward_batch()
    with pytest.raises(ValueError, match="shape"):
        tape.jvp_batch([[1.0, 0.0]])
    with pytest.raises(ValueError, match="empty"):
        ag.Tape([], [a])
    with pytest.raises(TypeError):
        ag.Tape([c, 1.0], [a])  # type: ignore[list-item]
    single = ag.Tape(c, [a, b])
    assert isinstance(single.forward([2.0, 3.0]), float)
    with pytest.raises(ValueError, match="forward_batch"):
        ag.Tape([c], [a, b]).jvp_batch([[1.0, 0.0]])


def test_one_root_given_as_a_list_returns_arrays_and_backward_equals_the_plain_one() -> None:
    x = ag.Value(0.5)
    y = (x * x).tanh()
    listed = ag.Tape([y], [x])
    plain = ag.Tape(y, [x])
    assert listed.forward([0.7]).shape == (1,)
    plain.forward([0.7])
    x.grad = 0.0
    plain.backward()
    g_plain = x.grad
    x.grad = 0.0
    listed.backward([1.0])
    assert x.grad == g_plain
    assert listed.jvp([1.0])[0] == plain.jvp([1.0])


def test_jvp_batch_is_a_jacobian_of_many_outputs() -> None:
    def f(xs: list[ag.Value]) -> list[ag.Value]:
        a, b, c = xs
        return [a * b + c.sin(), (a - c).exp(), ag.logsumexp([a, b, c]), abs(b) ** 1.5]

    x = [0.3, -0.7, 1.1]
    xs = [ag.Value(v) for v in x]
    tape = ag.Tape(f(xs), xs)
    tape.forward_batch(np.tile(x, (3, 1)))
    jac = tape.jvp_batch(np.eye(3)).T
    np.testing.assert_allclose(jac, F.jacrev(f)(x), rtol=1e-14, atol=1e-15)


def test_a_gradient_tape_may_have_inputs_it_does_not_read() -> None:
    """A gradient is 0 where the function ignores an input; a tape of it takes that input all the same."""
    x, y, z = ag.Value(1.0), ag.Value(2.0), ag.Value(5.0)
    grads = ag.grad(x * x + 3 * y, [x, y, z], create_graph=True)
    tape = ag.Tape(grads, [x, y, z])
    np.testing.assert_array_equal(tape.forward([4.0, 0.0, 1.0]), [8.0, 3.0, 0.0])
    np.testing.assert_array_equal(tape.jvp([1.0, 1.0, 1.0]), [2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="not a leaf of the recorded graph"):
        ag.Tape(x * x, [x, z])  # a tape of one root still catches the mistake


@settings(max_examples=40, deadline=None)
@given(
    programs,
    st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
    st.lists(st.sampled_from([0.0, 1.0, -0.5, 3.25, float("inf")]), min_size=3, max_size=3),
    st.sampled_from(["abs", "relu", "none"]),
)
def test_jvp_batch_rows_are_jvp_bit_for_bit(
    program: Program, x: list[float], scale: list[float], kink: str
) -> None:
    """Every row of jvp_batch equals the scalar jvp of that row, bit for bit, on a tape of a gradient
    (masks, selects, scales and a leaf shared by every row): rows of mixed finite and infinite tangents,
    and inputs whose tangent column is all zero, which both sweeps treat as symbolic zeros."""
    xs = [ag.Value(v) for v in x]
    shared = ag.Value(0.75)
    (out,) = _run(_Arena, program, xs)
    if kink == "abs":
        out = abs(out - shared) + out
    elif kink == "relu":
        out = (out * shared).relu() + out
    tape = ag.Tape(ag.grad(out, xs, create_graph=True), xs)
    rng = np.random.default_rng(len(program))
    rows = np.array(x) + rng.uniform(-0.5, 0.5, size=(5, 3))
    tangents = rng.uniform(0.5, 2.0, size=(5, 3)) * np.array(scale)  # column i is all zero when scale[i] is
    tangents[0] = np.where(np.array(scale) != 0.0, 1.0, 0.0)  # one row of plain basis-like directions
    batch_values = tape.forward_batch(rows)
    batch = tape.jvp_batch(tangents)
    for r in range(len(rows)):
        np.testing.assert_array_equal(tape.forward(rows[r]), batch_values[r])
        np.testing.assert_array_equal(tape.jvp(tangents[r]), batch[r])

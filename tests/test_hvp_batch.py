"""Tape.hvp_batch: forward over reverse for every sample, the backward pass run in dual numbers.

Its promise (Tape.hvp_batch's docstring, docs/derivatives.md): row s is the derivative, along tangents[s], of
the input gradients backward_batch gives for sample s. The independent route to the same numbers is the one
arenagrad already had: record the gradient as a graph (``grad(..., create_graph=True)``), tape it, and run
forward mode over it (``jvp_batch``). Both evaluate the op table's rules in the same order, so they agree
bit for bit; the generated programs of test_batched_ops.py cover every op, sums, dots, logsumexp and
recorded derivatives (whose graphs hold the derivative-only ops). PyTorch checks the numbers themselves.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module
from hypothesis import given, settings
from hypothesis import strategies as st
from test_batched_ops import BATCHES, Program, Recording, fixed_programs, programs, record, samples

import arenagrad as ag

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _tangents(program: Program, batch: int, n_inputs: int) -> np.ndarray:
    """Standard normal directions, one column left zero in every row when there are several (a symbolic
    zero: an input left out of the direction), and a few single zeros (numbers, not symbolic)."""
    rng = np.random.default_rng([program.data_seed, batch, 7])
    t = rng.standard_normal((batch, n_inputs))
    t[rng.random(t.shape) < 0.05] = 0.0
    if n_inputs > 1:
        t[:, rng.integers(n_inputs)] = 0.0
    return t


def _through_recorded_gradient(program: Program, x: np.ndarray, seeds: np.ndarray | None, t: np.ndarray,
                               v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient w.r.t. inputs and parameters recorded as a graph (the seeds as Values, so one recording
    serves every sample), taped with the parameters and seeds as extra inputs, and run forward (gradients)
    and in forward mode (their derivatives), the parameters' tangent v in every row."""
    rec = record(program, x[0])
    roots = [rec.pool[i] for i in program.roots]
    if not program.as_list:
        roots = roots[:1]
    us = [ag.Value(1.0) for _ in roots]
    grads = ag.grad(roots, [*rec.xs, *rec.params], us, create_graph=True)
    tape = ag.Tape(grads, [*rec.xs, *rec.params, *us])
    n = len(x)
    s = np.ones((n, len(roots))) if seeds is None else seeds.reshape(n, -1)
    p = np.broadcast_to(np.array(program.params), (n, len(program.params)))
    g = tape.forward_batch(np.hstack([x, p, s])).reshape(n, -1)
    hv = tape.jvp_batch(np.hstack([t, np.broadcast_to(v, p.shape), np.zeros_like(s)])).reshape(n, -1)
    return g, hv


@settings(max_examples=60, deadline=None)
@given(programs(), st.sampled_from(BATCHES))
def test_hvp_batch_is_forward_mode_over_the_recorded_gradient(program: Program, batch: int) -> None:
    """Inputs' rows bit for bit; the parameters' results, summed over the samples in another order than
    the recorded route's rows, within a bound on reassociating that sum."""
    x, seeds = samples(program, batch)
    if program.as_list and seeds is None:
        seeds = np.ones((batch, len(program.roots)))
    rec = record(program, x[0])
    rec.tape.forward_batch(x)
    n_in, n_p = program.n_inputs, len(program.params)
    t = _tangents(program, batch, n_in)
    v = np.random.default_rng([program.data_seed, 11]).standard_normal(n_p)
    if n_p > 1:
        v[0] = 0.0  # a symbolic zero on a parameter
    hv, hv_params = rec.tape.hvp_batch(t, seeds, params=rec.params, param_tangents=v)
    grads = rec.tape.backward_batch(seeds)
    want_grads, want = _through_recorded_gradient(program, x, seeds, t, v)
    assert hv.shape == (batch, n_in) and hv_params.shape == (n_p,)
    np.testing.assert_array_equal(grads, want_grads[:, :n_in])  # the same gradient: the recording is right
    np.testing.assert_array_equal(hv, want[:, :n_in])
    rows = want[:, n_in:]
    total = rows.sum(axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        close = (np.abs(hv_params - total) <= 1e-12 * np.abs(rows).sum(axis=0)) | (hv_params == total)
    close |= np.isnan(hv_params) & np.isnan(total)
    assert close.all(), (hv_params, total)
    # Without params the parameters are constants: the same as tangents of zero on them.
    if n_p:
        _, want_constant = _through_recorded_gradient(program, x, seeds, t, np.zeros(n_p))
        np.testing.assert_array_equal(rec.tape.hvp_batch(t, seeds), want_constant[:, :n_in])


def _mlp_loss(ag_or_torch: object, w: list, x: list, y: object, relu: object) -> object:
    """A 2-4-1 MLP with tanh and relu, and a smooth loss: every op kind a training loss has."""
    h = [relu(w[3 * j] * x[0] + w[3 * j + 1] * x[1] + w[3 * j + 2]).tanh() if j % 2 else
         (w[3 * j] * x[0] + w[3 * j + 1] * x[1] + w[3 * j + 2]).tanh() for j in range(4)]
    score = sum((w[12 + j] * h[j] for j in range(4)), w[16])
    return (score - y) ** 2 + (1.0 + (-score * y).exp()).log()


def test_hvp_batch_matches_torch_func_per_sample() -> None:
    """A small MLP's per-sample loss, inputs and parameters both differentiated: PyTorch's
    jvp(grad(f)) for each sample, to 1e-12."""
    torch = require_module("torch")
    rng = np.random.default_rng(3)
    n, k = 23, 17
    X = rng.standard_normal((n, 2))
    Y = rng.choice([-1.0, 1.0], n)
    W = rng.standard_normal(k) * 0.7
    xs = [ag.Value(0.0) for _ in range(2)]
    y = ag.Value(0.0)
    ws = [ag.Value(float(v)) for v in W]
    tape = ag.Tape(_mlp_loss(ag, ws, xs, y, lambda v: v.relu()), [*xs, y, *ws])
    rows = np.hstack([X, Y[:, None], np.broadcast_to(W, (n, k))])
    t = rng.standard_normal(rows.shape)
    tape.forward_batch(rows)
    got = tape.hvp_batch(t)

    def f(r: object) -> object:
        return _mlp_loss(torch, list(r[3:]), list(r[:2]), r[2], torch.relu)

    for s in range(n):
        r = torch.tensor(rows[s], dtype=torch.float64)
        want = torch.func.jvp(torch.func.grad(f), (r,), (torch.tensor(t[s], dtype=torch.float64),))[1]
        w = want.numpy()
        np.testing.assert_allclose(got[s], w, rtol=1e-12, atol=1e-12 * float(np.abs(w).max()))


def test_hvp_batch_summed_over_samples_is_the_parameters_hessian_vector_product() -> None:
    """The per-sample rows summed give the HVP of the whole loss, which the eager engine computes
    through grad(create_graph=True) and forward mode on one big graph."""
    rng = np.random.default_rng(5)
    n = 9
    X = rng.standard_normal((n, 2))
    Y = rng.choice([-1.0, 1.0], n)
    W = rng.standard_normal(17) * 0.7
    v = rng.standard_normal(17)
    xs = [ag.Value(0.0) for _ in range(2)]
    y = ag.Value(0.0)
    ws = [ag.Value(float(a)) for a in W]
    tape = ag.Tape(_mlp_loss(ag, ws, xs, y, lambda a: a.relu()), [*xs, y, *ws])
    tape.forward_batch(np.hstack([X, Y[:, None], np.broadcast_to(W, (n, 17))]))
    t = np.zeros((n, 20))
    t[:, 3:] = v
    got = tape.hvp_batch(t)[:, 3:].sum(axis=0)

    def loss(p: list[ag.Value]) -> ag.Value:
        return ag.sum([_mlp_loss(ag, p, list(X[s]), float(Y[s]), lambda a: a.relu()) for s in range(n)])

    want = ag.func.hvp(loss, W, v)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)

    # The parameters as shared leaves with a tangent of their own: the loss's HVP comes out summed.
    shared = ag.Tape(_mlp_loss(ag, ws, xs, y, lambda a: a.relu()), [*xs, y])
    shared.forward_batch(np.hstack([X, Y[:, None]]))
    rows, summed = shared.hvp_batch(np.zeros((n, 3)), params=ws, param_tangents=v)
    np.testing.assert_array_equal(rows, tape.hvp_batch(t)[:, :3])  # the inputs' rows: the same sums
    np.testing.assert_allclose(summed, want, rtol=1e-12, atol=1e-13)


def test_shared_leaves_are_constants_and_a_zero_direction_gives_zero() -> None:
    a = ag.Value(0.0)
    c = ag.Value(3.0)  # a parameter: shared, not an input
    tape = ag.Tape(a * a * c + (a * c).exp(), [a])
    x = np.array([[0.5], [-1.0]])
    tape.forward_batch(x)
    # d2/da2 of c a^2 + exp(c a) = 2c + c^2 exp(c a)
    want = 2 * 3.0 + 9.0 * np.exp(3.0 * x[:, 0])
    np.testing.assert_allclose(tape.hvp_batch(np.ones((2, 1)))[:, 0], want, rtol=1e-15)
    np.testing.assert_array_equal(tape.hvp_batch(np.zeros((2, 1))), np.zeros((2, 1)))
    np.testing.assert_allclose(tape.hvp_batch(np.ones((2, 1)), np.array([2.0, -1.0]))[:, 0],
                               want * np.array([2.0, -1.0]), rtol=1e-15)


def test_a_symbolic_zero_never_meets_an_infinite_second_derivative() -> None:
    """x * sqrt(y) at y = 0 along x alone: sqrt's infinite derivatives multiply tangents that are
    symbolically zero, so the result is finite (as jvp_batch's symbolic zeros promise)."""
    x = ag.Value(0.0)
    y = ag.Value(0.0)
    tape = ag.Tape(x * x * y.sqrt() + x * x, [x, y])
    tape.forward_batch(np.array([[2.0, 0.0], [1.0, 4.0]]))
    hv = tape.hvp_batch(np.array([[1.0, 0.0], [1.0, 0.0]]))
    # d/dx of (2 x sqrt(y) + 2 x, x^2 / (2 sqrt(y))) along x: (2 sqrt(y) + 2, x / sqrt(y))
    np.testing.assert_array_equal(hv[0, 0], 2.0)
    np.testing.assert_allclose(hv[1], [6.0, 0.5], rtol=1e-15)


def test_a_parameter_with_a_zero_tangent_is_a_symbolic_zero_too() -> None:
    """The same at a shared leaf: c's tangent is 0, so sqrt(c)'s infinite derivatives at c = 0 meet no
    tangent; x's direction alone gives d/dx of (2 x sqrt(c) + 2 x) = 2, and c's summed result is finite."""
    x = ag.Value(0.0)
    c = ag.Value(0.0)
    tape = ag.Tape(x * x * c.sqrt() + x * x, [x])
    tape.forward_batch(np.array([[2.0], [1.0]]))
    rows, summed = tape.hvp_batch(np.ones((2, 1)), params=[c], param_tangents=[0.0])
    np.testing.assert_array_equal(rows, [[2.0], [2.0]])
    # d/dε of dL/dc = x^2 / (2 sqrt(c)) along x: x / sqrt(c), infinite at c = 0 (a number, not NaN)
    assert summed.shape == (1,) and np.isinf(summed[0])


def test_input_directions_reach_the_parameters_gradients() -> None:
    """The mixed second derivative: tangents on the inputs only, and the parameters' gradients still move
    along them. L = w x^2 + w^2 x: dL/dw = x^2 + 2 w x, whose derivative along x is (2 x + 2 w) t."""
    x = ag.Value(0.0)
    w = ag.Value(1.5)
    tape = ag.Tape(w * x * x + w * w * x, [x])
    xs = np.array([[0.5], [-2.0], [1.0]])
    t = np.array([[1.0], [2.0], [-1.0]])
    tape.forward_batch(xs)
    rows, summed = tape.hvp_batch(t, params=[w])  # param_tangents default to 0
    np.testing.assert_allclose(rows[:, 0], 2 * 1.5 * t[:, 0], rtol=1e-15)  # d2L/dx2 = 2 w
    np.testing.assert_allclose(summed, [np.sum((2 * xs[:, 0] + 2 * 1.5) * t[:, 0])], rtol=1e-15)
    unrelated = ag.Value(4.0)
    rows2, summed2 = tape.hvp_batch(t, params=[unrelated, w], param_tangents=[1.0, 0.0])
    np.testing.assert_array_equal(rows2, rows)
    np.testing.assert_array_equal(summed2, [0.0, summed[0]])


def test_failed_samples_give_nan_rows_and_the_rest_go_on() -> None:
    a = ag.Value(1.0)
    c = ag.Value(2.0)
    tape = ag.Tape(a.log() * a * c, [a])
    tape.forward_batch(np.array([[2.0], [-1.0], [0.5]]), errors="nan")
    hv = tape.hvp_batch(np.ones((3, 1)))
    assert np.isnan(hv[1, 0])
    # d2/da2 of c a log a = c / a
    np.testing.assert_allclose(hv[[0, 2], 0], 2.0 / np.array([2.0, 0.5]), rtol=1e-15)
    # The parameter's result leaves the failed sample out: d/dε of a log a along a is (log a + 1).
    _, summed = tape.hvp_batch(np.ones((3, 1)), params=[c])
    np.testing.assert_allclose(summed, [np.log(2.0) + 1 + np.log(0.5) + 1], rtol=1e-15)


def test_bad_calls_raise_clear_errors() -> None:
    a = ag.Value(1.0)
    b = ag.Value(2.0)
    tape = ag.Tape(a * b, [a, b])
    with pytest.raises(ValueError, match="forward_batch"):
        tape.hvp_batch(np.ones((2, 2)))
    tape.forward_batch(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        tape.hvp_batch(np.ones((2, 2)))
    with pytest.raises(ValueError, match="3 seeds"):
        tape.hvp_batch(np.ones((3, 2)), np.ones(4))
    with pytest.raises(TypeError):
        tape.hvp_batch("no")
    c = ag.Value(3.0)
    shared = ag.Tape(a * b * c, [a, b])
    shared.forward_batch(np.ones((3, 2)))
    with pytest.raises(ValueError, match="needs params"):
        shared.hvp_batch(np.ones((3, 2)), param_tangents=[1.0])
    with pytest.raises(ValueError, match="input of the tape"):
        shared.hvp_batch(np.ones((3, 2)), params=[a])
    with pytest.raises(ValueError, match="twice"):
        shared.hvp_batch(np.ones((3, 2)), params=[c, c])
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        shared.hvp_batch(np.ones((3, 2)), params=[c], param_tangents=[1.0, 2.0])
    with pytest.raises(TypeError):
        shared.hvp_batch(np.ones((3, 2)), params=[1.0])
    several = ag.Tape([a * b, a + b], [a, b])
    several.forward_batch(np.ones((3, 2)))
    with pytest.raises(ValueError, match="several roots"):
        several.hvp_batch(np.ones((3, 2)))
    np.testing.assert_array_equal(several.hvp_batch(np.ones((3, 2)), np.ones((3, 2))), np.ones((3, 2)))


THREADS_CHILD = """
import importlib
import sys
sys.path.insert(0, sys.argv[1])
print(getattr(importlib.import_module(sys.argv[2]), sys.argv[3])())
"""


Arrays = tuple[np.ndarray, ...]


def fixed_program_digest(batches: tuple[int, ...],
                         call: Callable[[Program, int, Recording, np.ndarray | None], Arrays]) -> str:
    """The bits of call(program, batch, recording, seeds)'s arrays on the fixed programs at each batch size,
    after forward_batch of that batch's samples."""
    h = hashlib.sha256()
    for program in fixed_programs():
        for batch in batches:
            x, seeds = samples(program, batch)
            if program.as_list and seeds is None:
                seeds = np.ones((batch, len(program.roots)))
            rec = record(program, x[0])
            rec.tape.forward_batch(x)
            for a in call(program, batch, rec, seeds):
                h.update(a.tobytes())
    return h.hexdigest()


def assert_same_bits_under_1_2_and_3_threads(module: str, digest: str) -> None:
    """module.digest() in processes with 1, 2 and 3 threads gives this process's bits. The thread count is
    read once per process, hence the processes."""
    want = getattr(sys.modules[module], digest)()
    tests = str(Path(__file__).resolve().parent)
    for n in ("1", "2", "3"):
        env = {**os.environ, "ARENAGRAD_NUM_THREADS": n}
        command = [sys.executable, "-c", THREADS_CHILD, tests, module, digest]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [want], f"{n} threads"


def hvp_digest() -> str:
    """The bits of hvp_batch's rows and parameter sums on the fixed programs, at batch sizes that make one
    range of samples and several (256 samples each), one of them partial."""

    def call(program: Program, batch: int, rec: Recording, seeds: np.ndarray | None) -> Arrays:
        t = _tangents(program, batch, program.n_inputs)
        v = np.linspace(-1.0, 1.0, len(program.params))
        return rec.tape.hvp_batch(t, seeds, params=rec.params, param_tangents=v)

    return fixed_program_digest((17, 1031), call)


def test_the_thread_count_changes_no_bit() -> None:
    """Ranges of samples run on the threads; the ranges depend on the batch alone, so 1, 2 and 3 threads
    give the same bits as this process."""
    assert_same_bits_under_1_2_and_3_threads(__name__, "hvp_digest")

"""The paths batched replay takes around a layer's kernels (neurons sharing their input rows, each with a
bias add), checked against eager evaluation sample by sample:

- a layer whose output grads are not finite in some tiles falls back to its dots one by one there;
- a dot row that only its bias add reads is not written by the forward pass, until batch_values asks;
- backward_batch(input_grads=False) skips the inputs' gradients and leaves the same .grad.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import arenagrad as ag

N_IN, HIDDEN = 3, 5


def make_params(seed: int = 0) -> list[ag.Value]:
    """Small weights and biases in [0.5, 1] make every neuron positive on inputs in [-1, 1]; the first
    neuron's first weight is 1/16 and its bias 1/2, so that it is exactly 0 at x = (-8, 0, 0), where the
    other neurons (first weights 0) are their biases."""
    rng = np.random.default_rng(seed)
    layer = rng.uniform(-0.1, 0.1, (HIDDEN, N_IN + 1))
    layer[:, 0] = 0.0
    layer[0, 0] = 0.0625
    layer[:, N_IN] = rng.uniform(0.5, 1.0, HIDDEN)
    layer[0, N_IN] = 0.5
    out = rng.uniform(0.5, 1.0, HIDDEN + 1)
    return [ag.Value(float(v)) for v in [*layer.ravel(), *out]]


def model(xs: list[ag.Value], params: list[ag.Value]) -> tuple[ag.Value, list[ag.Value]]:
    """One layer of biased neurons, then the square root of each (an infinite derivative where a neuron
    is 0), then a biased output neuron. Returns the root and the layer's dot nodes (before their biases)."""
    dots, hidden = [], []
    for j in range(HIDDEN):
        w = params[j * (N_IN + 1) : j * (N_IN + 1) + N_IN]
        d = ag.dot(w, xs)
        dots.append(d)
        hidden.append((d + params[j * (N_IN + 1) + N_IN]).sqrt())
    out = params[HIDDEN * (N_IN + 1) : -1]
    return ag.dot(out, hidden) + params[-1], dots


def inputs(batch: int, failing: range) -> np.ndarray:
    """Samples with finite grads, except those in `failing`: (-8, 0, 0), where the first neuron is 0."""
    rng = np.random.default_rng(batch)
    x = rng.uniform(-1.0, 1.0, (batch, N_IN))
    x[failing] = (-8.0, 0.0, 0.0)
    return x


def record(params: list[ag.Value]) -> tuple[ag.Tape, list[ag.Value], list[ag.Value]]:
    xs = [ag.Value(0.5) for _ in range(N_IN)]
    root, dots = model(xs, params)
    return ag.Tape(root, xs), xs, dots


def eager(params: list[ag.Value], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: root value, input grads, parameter grads, and the dots' values."""
    values, in_grads, p_grads, dot_values = [], [], [], []
    for row in x:
        xs = [ag.Value(float(v)) for v in row]
        for p in params:
            p.grad = 0.0
        root, dots = model(xs, params)
        root.backward()
        values.append(root.data)
        in_grads.append([v.grad for v in xs])
        p_grads.append([p.grad for p in params])
        dot_values.append([d.data for d in dots])
    return np.array(values), np.array(in_grads), np.array(p_grads), np.array(dot_values)


def test_only_the_failing_samples_have_non_finite_grads() -> None:
    params = make_params()
    _, _, p_grads, _ = eager(params, inputs(600, range(300, 310)))
    bad = ~np.isfinite(p_grads).all(axis=1)
    assert bad[300:310].all() and not bad[:300].any() and not bad[310:].any()


@pytest.mark.parametrize("batch", [1, 7, 600])
def test_a_layer_with_non_finite_grads_in_some_tiles_gives_eager_results(batch: int) -> None:
    params = make_params()
    tape, _, _ = record(params)
    failing = range(min(300, batch - 1), min(310, batch))  # in the second of three tiles (600 samples)
    x = inputs(batch, failing)
    values, in_grads, p_grads, _ = eager(params, x)
    np.testing.assert_array_equal(tape.forward_batch(x), values)
    for _ in range(2):  # the second sweep finds the first one's grads in the thread's workspace
        for p in params:
            p.grad = 0.0
        np.testing.assert_array_equal(tape.backward_batch(), in_grads)
    summed = np.array([p.grad for p in params])
    per_sample = tape.backward_batch(reduce="none", params=params)
    np.testing.assert_array_equal(per_sample, p_grads)
    want = np.array([math.fsum(col) for col in p_grads.T])
    np.testing.assert_array_equal(np.isnan(summed), np.isnan(want))
    finite = ~np.isnan(want)
    np.testing.assert_allclose(summed[finite], want[finite], rtol=1e-13, atol=1e-15)


def test_a_dot_row_only_its_bias_reads_is_computed_when_asked_for() -> None:
    params = make_params()
    tape, _, dots = record(params)
    x = inputs(300, range(0))
    _, in_grads, _, dot_values = eager(params, x)
    tape.forward_batch(x)
    for j, d in enumerate(dots):
        np.testing.assert_array_equal(tape.batch_values(d), dot_values[:, j])
    # the pass that stored them changed nothing else
    np.testing.assert_array_equal(tape.backward_batch(), in_grads)
    tape.forward_batch(x[::-1].copy())  # now stored on every pass
    np.testing.assert_array_equal(tape.batch_values(dots[2]), dot_values[::-1, 2])


@pytest.mark.parametrize("failing", [range(0), range(5, 9)])
def test_backward_batch_without_input_grads_adds_the_same_grads(failing: range) -> None:
    params = make_params(1)
    tape, _, _ = record(params)
    x = inputs(521, failing)
    tape.forward_batch(x)
    for p in params:
        p.grad = 0.0
    tape.backward_batch(0.5)
    want = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    assert tape.backward_batch(0.5, input_grads=False) is None
    np.testing.assert_array_equal([p.grad for p in params], want)


def test_input_grads_false_is_for_summed_gradients() -> None:
    params = make_params()
    tape, _, _ = record(params)
    tape.forward_batch(inputs(4, range(0)))
    with pytest.raises(ValueError, match="input_grads=False is for reduce='sum'"):
        tape.backward_batch(reduce="none", params=params, input_grads=False)

"""The paths batched replay takes around a layer's kernels (neurons sharing their input rows, each with a
bias add), checked against eager evaluation sample by sample:

- a layer whose output grads are not finite in some tiles falls back to its dots one by one there;
- a dot row that only its bias add reads is not written by the forward pass, until batch_values asks;
- backward_batch(input_grads=False) skips the inputs' gradients and leaves the same .grad;
- samples that fail (errors="nan") beside biased layers;
- the same bits with 1 and 3 threads and the SIMD baseline forced, over several chunks.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arenagrad as ag

N_IN, HIDDEN, HIDDEN2 = 3, 5, 3


def make_params(seed: int = 0) -> list[ag.Value]:
    """Small weights and biases in [0.5, 1] make every first-layer neuron positive on inputs in [-1, 1]; the
    first neuron's first weight is 1/16 and its bias 1/2, so that it is exactly 0 at x = (-8, 0, 0), where
    the other neurons (first weights 0) are their biases. Then a second layer and an output neuron."""
    rng = np.random.default_rng(seed)
    layer = rng.uniform(-0.1, 0.1, (HIDDEN, N_IN + 1))
    layer[:, 0] = 0.0
    layer[0, 0] = 0.0625
    layer[:, N_IN] = rng.uniform(0.5, 1.0, HIDDEN)
    layer[0, N_IN] = 0.5
    layer2 = rng.uniform(-1.0, 1.0, (HIDDEN2, HIDDEN + 1))
    out = rng.uniform(0.5, 1.0, HIDDEN2 + 1)
    return [ag.Value(float(v)) for v in [*layer.ravel(), *layer2.ravel(), *out]]


def biased_layer(
    params: list[ag.Value], rows: list[ag.Value], size: int
) -> tuple[list[ag.Value], list[ag.Value]]:
    """`size` neurons over rows, their weights and biases from the front of params: (dots, dots + biases)."""
    k = len(rows)
    dots = [ag.dot(params[j * (k + 1) : j * (k + 1) + k], rows) for j in range(size)]
    return dots, [d + params[j * (k + 1) + k] for j, d in enumerate(dots)]


def model(xs: list[ag.Value], params: list[ag.Value]) -> tuple[ag.Value, list[ag.Value]]:
    """A layer of biased neurons, the square root of each (an infinite derivative where a neuron is 0), a
    second biased layer over those (rows that are nodes), then a biased output neuron. Returns the root
    and the first layer's dot nodes (before their biases)."""
    dots, biased = biased_layer(params, xs, HIDDEN)
    rest = params[HIDDEN * (N_IN + 1) :]
    _, second = biased_layer(rest, [b.sqrt() for b in biased], HIDDEN2)
    out = rest[HIDDEN2 * (HIDDEN + 1) :]
    return ag.dot(out[:-1], second) + out[-1], dots


def inputs(batch: int, failing: range) -> np.ndarray:
    """Samples with finite grads, except those in `failing` (they do not fail: their grads are not finite):
    (-8, 0, 0), where the first neuron is 0."""
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


def test_only_the_chosen_samples_have_non_finite_grads() -> None:
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


@pytest.mark.parametrize("flag", [None, 0, 1, "no"])
def test_input_grads_is_a_bool(flag: object) -> None:
    params = make_params()
    tape, _, _ = record(params)
    tape.forward_batch(inputs(4, range(0)))
    with pytest.raises(TypeError):
        tape.backward_batch(input_grads=flag)  # type: ignore[call-overload]


def log_model(xs: list[ag.Value], params: list[ag.Value]) -> ag.Value:
    """A biased layer, then the log of each neuron: a sample fails wherever a neuron is <= 0."""
    _, biased = biased_layer(params, xs, HIDDEN)
    return ag.sum([b.log() for b in biased])


def log_params() -> list[ag.Value]:
    rng = np.random.default_rng(7)
    layer = rng.uniform(-1.0, 1.0, (HIDDEN, N_IN + 1))
    layer[:, N_IN] = rng.uniform(1.0, 2.0, HIDDEN)  # most samples pass
    return [ag.Value(float(v)) for v in layer.ravel()]


def test_failed_samples_beside_biased_layers_leave_the_others_eager() -> None:
    params = log_params()
    xs = [ag.Value(0.5) for _ in range(N_IN)]
    tape = ag.Tape(log_model(xs, params), xs)
    x = np.random.default_rng(3).uniform(-2.0, 2.0, (601, N_IN))
    values = tape.forward_batch(x, errors="nan")
    for p in params:
        p.grad = 0.0
    in_grads = tape.backward_batch()
    summed = np.array([p.grad for p in params])
    per_sample = tape.backward_batch(reduce="none", params=params)
    failed, kept = [], []
    for s, row in enumerate(x):
        sample = [ag.Value(float(v)) for v in row]
        for p in params:
            p.grad = 0.0
        try:
            root = log_model(sample, params)
        except ValueError:
            failed.append(s)
            continue
        root.backward()
        assert values[s] == root.data, s
        np.testing.assert_array_equal(in_grads[s], [v.grad for v in sample])
        np.testing.assert_array_equal(per_sample[s], [p.grad for p in params])
        kept.append([p.grad for p in params])
    assert 20 < len(failed) < len(x) - 20
    np.testing.assert_array_equal(tape.failed, failed)
    for got in (values, in_grads, per_sample):
        assert np.isnan(got[failed]).all()
    want = np.array([math.fsum(col) for col in np.array(kept).T])
    np.testing.assert_allclose(summed, want, rtol=1e-12, atol=1e-12)


# The same results, bit for bit, however many threads run the chunks (2,100 samples: three chunks of up to
# 4 tiles, the non-finite samples and some failures in the second) and with the SIMD baseline forced.
CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import test_batched_layers as t
print(t.digest())
"""


def digest() -> str:
    h = hashlib.sha256()
    params = make_params()
    tape, _, _ = record(params)
    x = inputs(2100, range(1500, 1510))
    h.update(tape.forward_batch(x).tobytes())
    for p in params:
        p.grad = 0.0
    h.update(tape.backward_batch().tobytes())
    h.update(np.array([p.grad for p in params]).tobytes())
    h.update(tape.backward_batch(reduce="none", params=params).tobytes())
    for p in params:
        p.grad = 0.0
    tape.backward_batch(input_grads=False)
    h.update(np.array([p.grad for p in params]).tobytes())
    params = log_params()
    xs = [ag.Value(0.5) for _ in range(N_IN)]
    tape = ag.Tape(log_model(xs, params), xs)
    x = np.random.default_rng(4).uniform(-2.0, 2.0, (2100, N_IN))
    h.update(tape.forward_batch(x, errors="nan").tobytes())
    for p in params:
        p.grad = 0.0
    h.update(tape.backward_batch().tobytes())
    h.update(np.array([p.grad for p in params]).tobytes())
    return h.hexdigest()


def test_threads_and_the_simd_baseline_keep_the_bits() -> None:
    want = digest()
    tests = str(Path(__file__).resolve().parent)
    configs = ({"ARENAGRAD_NUM_THREADS": "1"}, {"ARENAGRAD_NUM_THREADS": "3", "ARENAGRAD_SIMD": "baseline"})
    for config in configs:
        env = {**os.environ, "ARENAGRAD_SIMD": "", **config}
        done = subprocess.run([sys.executable, "-c", CHILD, tests], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{config}: {done.stderr}"
        assert done.stdout.split() == [want], f"{config}: results differ from this process's"

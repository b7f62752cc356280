"""arenagrad.vectorize, batched replay with errors="nan", and per-sample gradients (reduce="none")."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_derivatives import Program, _Arena, _run, programs

import arenagrad as ag
from arenagrad import func as F


@settings(max_examples=40, deadline=None)
@given(programs, st.integers(1, 13))
def test_vectorized_results_are_the_eager_results_bit_for_bit(program: Program, n: int) -> None:
    vf = ag.vectorize(lambda a, b, c: _run(_Arena, program, [a, b, c])[0])
    rng = np.random.default_rng(n)
    a, b = rng.uniform(-1.5, 1.5, size=(2, n))
    got = vf(a, b, 0.25)
    assert got.shape == (n,)
    for s in range(n):
        want = _run(_Arena, program, [ag.Value(a[s]), ag.Value(b[s]), ag.Value(0.25)])[0].data
        assert got[s] == want or (math.isnan(got[s]) and math.isnan(want))


def test_parameters_are_shared_and_read_at_every_call() -> None:
    random.seed(3)
    model = ag.nn.MLP(2, [4, 1])
    score = ag.vectorize(lambda x1, x2: model([x1, x2]))
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.7]])
    before = score(X[:, 0], X[:, 1])
    np.testing.assert_array_equal(before, [model([float(u), float(v)]).data for u, v in X])
    for p in model.parameters():
        p.data += 0.125
    after = score(X[:, 0], X[:, 1])
    np.testing.assert_array_equal(after, [model([float(u), float(v)]).data for u, v in X])
    assert not np.array_equal(before, after)
    assert len(score._recordings) == 1  # one signature, recorded once


def test_vector_arguments_and_several_results() -> None:
    def f(xs: list[ag.Value], k: ag.Value) -> tuple[ag.Value, list[ag.Value]]:
        return ag.dot(xs, xs) * k, [x.tanh() for x in xs]

    X = np.arange(12.0).reshape(4, 3) / 10
    total, tanhs = ag.vectorize(f)(X, 2.0)
    np.testing.assert_array_equal(total, [2.0 * ag.dot([ag.Value(v) for v in r], list(r)).data for r in X])
    np.testing.assert_array_equal(tanhs, np.vectorize(lambda v: ag.Value(v).tanh().data)(X))
    assert total.shape == (4,) and tanhs.shape == (4, 3)
    one = ag.vectorize(f)([[0.1, 0.2]], 3.0)  # one sample of a vector argument: rows of one
    assert one[0].shape == (1,) and one[1].shape == (1, 2)
    product = ag.vectorize(lambda a, b: a * b)
    assert product(2.0, 3.0) == 6.0 and isinstance(product(2.0, 3.0), float)  # numbers only: numbers back


def test_composes_with_func_grad_into_per_sample_gradients() -> None:
    def f(xs: list[ag.Value]) -> ag.Value:
        x, y = xs
        return (x * y).sin() + x**3 - y.exp()

    X = np.random.default_rng(0).normal(size=(6, 2))
    per_sample = ag.vectorize(F.grad(f))(X)
    assert per_sample.shape == (6, 2)
    np.testing.assert_allclose(per_sample, np.stack([F.grad(f)(x) for x in X]), rtol=1e-15, atol=0)
    hessians = ag.vectorize(F.hessian(f))(X)
    assert hessians.shape == (6, 2, 2)  # nested lists of Values come back as arrays of that shape
    np.testing.assert_allclose(hessians, np.stack([F.hessian(f)(x) for x in X]), rtol=1e-14)


def test_errors_raise_names_the_sample_and_nan_goes_on() -> None:
    log_of = ag.vectorize(lambda x: (x - 1.0).log() * 2.0)
    x = np.array([3.0, 0.5, 2.0, 1.0])
    with pytest.raises(ValueError, match="sample 1: math domain error"):
        log_of(x)
    nan_log = ag.vectorize(lambda x: (x - 1.0).log() * 2.0, errors="nan")
    got = nan_log(x)
    np.testing.assert_array_equal(got, [2.0 * math.log(2.0), np.nan, 2.0 * math.log(1.0), np.nan])
    assert nan_log.failed.tolist() == [1, 3]
    assert nan_log(np.array([5.0])).tolist() == [2.0 * math.log(4.0)] and nan_log.failed.size == 0
    recip = ag.vectorize(lambda x: 1.0 / x + x.relu(), errors="nan")
    np.testing.assert_array_equal(recip(np.array([0.0, 2.0])), [np.nan, 2.5])  # recorded at sample 1
    assert recip.failed.tolist() == [0]
    with pytest.raises(ValueError, match="math domain error") as raised:
        ag.vectorize(lambda x: x.log(), errors="nan")(np.array([-1.0, -2.0]))
    assert "none could be recorded" in "".join(raised.value.__notes__)


def test_failed_samples_are_left_out_of_parameter_gradients() -> None:
    w, b = ag.Value(0.5), ag.Value(-0.25)
    x = ag.Value(1.0)
    tape = ag.Tape((w * x + b).log() * w, [x])
    xs = np.array([[1.0], [-4.0], [2.0], [0.0]])  # w*x + b <= 0 for samples 1 and 3
    out = tape.forward_batch(xs, errors="nan")
    assert tape.failed.tolist() == [1, 3] and np.isnan(out[[1, 3]]).all()
    input_grads = tape.backward_batch()
    assert np.isnan(input_grads[[1, 3]]).all() and np.isfinite(input_grads[[0, 2]]).all()
    want_w = want_b = 0.0
    for v in (1.0, 2.0):
        wv, bv, xv = ag.Value(0.5), ag.Value(-0.25), ag.Value(v)
        ((wv * xv + bv).log() * wv).backward()
        want_w += wv.grad
        want_b += bv.grad
    assert w.grad == pytest.approx(want_w, rel=1e-15) and b.grad == pytest.approx(want_b, rel=1e-15)
    tape.forward_batch(xs[[0, 2]])
    assert tape.failed.size == 0  # every call starts afresh
    with pytest.raises(ValueError, match="while replaying sample 1"):
        tape.forward_batch(xs)


def _mlp_tape() -> tuple[ag.Tape, ag.nn.MLP, list[ag.Value], ag.Value]:
    random.seed(7)
    model = ag.nn.MLP(2, [5, 5, 1])
    x = [ag.Value(0.0), ag.Value(0.0)]
    label = ag.Value(1.0)
    loss = (1.0 - label * model(x)).relu() + 0.01 * ag.dot(model.parameters(), model.parameters())
    return ag.Tape(loss, [*x, label]), model, x, label


def test_per_sample_gradients_are_each_samples_backward_bit_for_bit() -> None:
    tape, model, _, _ = _mlp_tape()
    params = model.parameters()
    rng = np.random.default_rng(5)
    rows = np.column_stack([rng.normal(size=(9, 2)), rng.choice([-1.0, 1.0], size=9)])
    unused = ag.Value(4.0)
    tape.forward_batch(rows)
    seeds = rng.uniform(0.5, 2.0, size=9)
    per_sample = tape.backward_batch(seeds, reduce="none", params=[*params, unused])
    assert per_sample.shape == (9, len(params) + 1)
    assert all(p.grad == 0.0 for p in params)  # .grad is left alone
    assert not per_sample[:, -1].any()  # a Value the graph does not read has gradient 0
    for s, row in enumerate(rows):
        x = [ag.Value(row[0]), ag.Value(row[1])]
        fresh_loss = (1.0 - ag.Value(row[2]) * model(x)).relu() + 0.01 * ag.dot(params, params)
        model.zero_grad()
        (fresh_loss * seeds[s]).backward()
        np.testing.assert_array_equal(per_sample[s, :-1], [p.grad for p in params])
    model.zero_grad()
    tape.backward_batch(seeds)
    summed = [p.grad for p in params]
    np.testing.assert_allclose(per_sample[:, :-1].sum(axis=0), summed, rtol=1e-12, atol=1e-15)


def test_per_sample_gradients_of_inputs_and_of_failed_samples() -> None:
    tape, model, x, label = _mlp_tape()
    rows = np.array([[0.1, 0.2, 1.0], [0.3, -0.4, -1.0]])
    tape.forward_batch(rows)
    input_grads = tape.backward_batch()
    model.zero_grad()
    per_sample = tape.backward_batch(reduce="none", params=[x[1], label])
    np.testing.assert_array_equal(per_sample, input_grads[:, 1:])
    w = ag.Value(1.0)
    t = ag.Value(2.0)
    sqrt_tape = ag.Tape((t * w).sqrt() * w, [t])
    sqrt_tape.forward_batch(np.array([[4.0], [-1.0]]), errors="nan")
    g = sqrt_tape.backward_batch(reduce="none", params=[w])
    assert g[0, 0] == pytest.approx(2.0 + 0.5 * 2.0) and np.isnan(g[1, 0])


def test_bad_arguments_are_clear_errors() -> None:
    tape, model, _, _ = _mlp_tape()
    tape.forward_batch(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="reduce must be 'sum' or 'none'"):
        tape.backward_batch(reduce="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs params"):
        tape.backward_batch(reduce="none")
    with pytest.raises(ValueError, match="params is for reduce='none'"):
        tape.backward_batch(params=model.parameters())
    with pytest.raises(TypeError, match=r"params\[1\] must be an arenagrad.Value"):
        tape.backward_batch(reduce="none", params=[model.parameters()[0], 1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="errors must be 'raise' or 'nan'"):
        tape.forward_batch(np.zeros((2, 3)), errors="ignore")  # type: ignore[arg-type]
    vf = ag.vectorize(lambda a, b: a * b)
    with pytest.raises(ValueError, match="first dimensions differ"):
        vf(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="argument 1 must be real numbers"):
        vf(np.zeros(3), np.array(["a", "b", "c"]))
    with pytest.raises(TypeError, match="argument 0 must be real numbers"):
        vf(np.zeros(3, dtype=complex), 1.0)
    with pytest.raises(TypeError, match="argument 0 is a Value"):
        vf(ag.Value(1.0), 1.0)
    with pytest.raises(TypeError, match="argument 0 must be real numbers, not a list holding a bool"):
        vf([1, True], 1.0)
    with pytest.raises(TypeError, match="argument 1 must be real numbers, not a tuple holding a bool"):
        vf([1.0, 2.0], ([1.0], [np.True_]))
    with pytest.raises(TypeError, match="argument 0 must be real numbers, not a list holding a bool"):
        vf([np.array(True), 1.0], 1.0)
    np.testing.assert_array_equal(vf([1, 2], (3.0, 4.0)), [3.0, 8.0])  # plain lists and tuples of numbers
    with pytest.raises(ValueError, match="at least one sample"):
        vf(np.zeros(0), 1.0)
    with pytest.raises(TypeError, match="must return a Value"):
        ag.vectorize(lambda a: 1.0)(np.zeros(2))
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        vf(np.zeros(2))
    with pytest.raises(ValueError, match="errors must be"):
        ag.vectorize(lambda a: a, errors="warn")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a function"):
        ag.vectorize(3.0)  # type: ignore[arg-type]


def _lane_sum(values: np.ndarray) -> float:
    """Batched replay's documented sum over samples: four interleaved lanes, the tail in lane 0."""
    lanes = [0.0, 0.0, 0.0, 0.0]
    full = len(values) // 4 * 4
    for s, v in enumerate(values.tolist()):
        lanes[s % 4 if s < full else 0] += v
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])


@pytest.mark.parametrize("n", [1, 3, 4, 15, 16, 17, 19, 32, 35, 67, 256, 257, 530, 1003])
def test_a_layers_parameter_gradients_are_lane_sums_of_the_per_sample_ones(n: int) -> None:
    """Each weight of a neuron is used once per sample, so its summed gradient is the fixed-order sum of its
    per-sample gradients, which hold each sample's bits: whatever kernel runs the layer, and however the batch
    is cut into tiles (256 samples), both must be kept."""
    random.seed(n)
    model = ag.nn.MLP(3, [7, 5, 1], activation="tanh")
    x = [ag.Value(0.0) for _ in range(3)]
    tape = ag.Tape(model(x), x)
    X = np.random.default_rng(n).normal(size=(n, 3))
    out = tape.forward_batch(X)
    np.testing.assert_array_equal(out, [model([float(v) for v in r]).data for r in X])
    params = model.parameters()
    per_sample = tape.backward_batch(reduce="none", params=params)
    model.zero_grad()
    input_grads = tape.backward_batch()
    for j, p in enumerate(params):
        assert p.grad == _lane_sum(per_sample[:, j])
    for s, r in enumerate(X):
        xs = [ag.Value(float(v)) for v in r]
        model.zero_grad()
        model(xs).backward()
        np.testing.assert_array_equal(input_grads[s], [v.grad for v in xs])


SIMD_PROBE = """
import random, sys
import numpy as np
import arenagrad as ag
random.seed(11)
model = ag.nn.MLP(4, [16, 9, 1], activation="relu")
x = [ag.Value(0.0) for _ in range(4)]
tape = ag.Tape(model(x) ** 2, x)
X = np.random.default_rng(11).normal(size=(53, 4))
out = tape.forward_batch(X)
model.zero_grad()
g = tape.backward_batch(np.linspace(0.5, 1.5, 53))
print(ag._core.simd_target())
print(out.tobytes().hex(), g.tobytes().hex(), np.array([p.grad for p in model.parameters()]).tobytes().hex())
"""


def test_the_simd_target_does_not_change_the_bits() -> None:
    """Batched replay's kernels run with AVX2 where the CPU has it; forced to the x86-64 baseline, every value
    and gradient keeps its bits."""
    runs = {}
    for forced in ("", "baseline"):
        env = {**os.environ, "ARENAGRAD_SIMD": forced}
        probe = [sys.executable, "-c", SIMD_PROBE]
        done = subprocess.run(probe, env=env, capture_output=True, text=True, check=True)
        target, bits = done.stdout.split("\n", 1)
        runs[forced or "default"] = (target, bits)
    assert runs["baseline"][0] == "baseline"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the default is AVX2 exactly when the CPU has it
        has_avx2 = " avx2" in cpuinfo.read_text()
        assert runs["default"][0] == ("avx2" if has_avx2 else "baseline")
    assert runs["default"][1] == runs["baseline"][1]


def test_errors_across_tiles_name_the_first_failing_sample_and_nan_marks_each() -> None:
    x = ag.Value(1.0)
    w = ag.Value(0.5)
    tape = ag.Tape((x * w).log() + x, [x])  # w read once: its grad is the lane sum of its per-sample grads
    xs = np.linspace(1.0, 2.0, 700)[:, None].copy()
    bad = [300, 301, 555, 699]
    xs[bad] = -1.0
    with pytest.raises(ValueError, match="while replaying sample 300: math domain error"):
        tape.forward_batch(xs)
    out = tape.forward_batch(xs, errors="nan")
    assert tape.failed.tolist() == bad and np.isnan(out[bad]).all()
    good = np.setdiff1d(np.arange(700), bad)
    np.testing.assert_array_equal(out[good], [math.log(v * 0.5) + v for v in xs[good, 0]])
    per_sample = tape.backward_batch(reduce="none", params=[w])[:, 0]
    assert np.isnan(per_sample[bad]).all()
    w.grad = 0.0
    tape.backward_batch()
    assert w.grad == _lane_sum(np.where(np.isnan(per_sample), 0.0, per_sample))


def test_per_sample_gradients_of_nodes_and_batch_values_of_failed_samples() -> None:
    w, x = ag.Value(0.7), ag.Value(0.0)
    h = w * x
    y = h.tanh() * w
    tape = ag.Tape(y, [x])
    tape.forward_batch([[0.5], [1.5]])
    got = tape.backward_batch(reduce="none", params=[w, h, y])
    for s, v in enumerate((0.5, 1.5)):
        wv, xv = ag.Value(0.7), ag.Value(v)
        hv = wv * xv
        yv = hv.tanh() * wv
        yv.backward()
        np.testing.assert_array_equal(got[s], [wv.grad, hv.grad, yv.grad])
    a = ag.Value(1.0)
    r = a.log() ** 0 * a  # nan ** 0 is 1: the failure must still show downstream
    t = ag.Tape(r, [a])
    out = t.forward_batch([[-1.0], [2.0]], errors="nan")
    assert np.isnan(out[0]) and out[1] == 2.0 and t.failed.tolist() == [0]
    batch = t.batch_values(r)
    assert np.isnan(batch[0]) and batch[1] == 2.0


def test_concurrent_calls_keep_their_own_number_arguments() -> None:
    import threading

    f = ag.vectorize(lambda x, k: x * k)
    x = np.arange(50.0)
    wrong = []

    def run(k: float) -> None:
        for _ in range(300):
            if not np.array_equal(f(x, k), x * k):
                wrong.append(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


THREADS_PROBE = """
import random
import numpy as np
import arenagrad as ag
random.seed(5)
model = ag.nn.MLP(3, [12, 6, 2], activation="tanh")
x = [ag.Value(0.0) for _ in range(3)]
logits = model(x)
tape = ag.Tape(ag.logsumexp(logits) - logits[0] + 0.01 * ag.dot(model.parameters(), model.parameters()), x)
X = np.random.default_rng(5).normal(size=(5003, 3))
X[[17, 2900, 4999], 0] = np.nan
out = tape.forward_batch(X, errors="nan")
g = tape.backward_batch(np.linspace(0.5, 1.5, 5003))
ps = np.array([p.grad for p in model.parameters()])
per = tape.backward_batch(reduce="none", params=model.parameters())
print(out.tobytes().hex(), g.tobytes().hex(), ps.tobytes().hex(), per.tobytes().hex(), tape.failed.tolist())
"""


def test_results_do_not_depend_on_the_number_of_threads() -> None:
    """5,003 samples are five chunks of 1,024: one, two or three threads run them, with the same bits (sums
    over samples go chunk by chunk in a fixed order), NaN samples and all."""
    outputs = set()
    for threads in ("1", "2", "3"):
        env = {**os.environ, "ARENAGRAD_NUM_THREADS": threads}
        probe = [sys.executable, "-c", THREADS_PROBE]
        outputs.add(subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outputs) == 1


def test_a_layer_read_by_other_ops_between_its_neurons_keeps_the_bits() -> None:
    """Dots sharing their input rows run as one kernel in backward only while nothing between them reads those
    rows; a skip connection in between splits the layer. Either way, eager's bits per sample."""
    rng = np.random.default_rng(3)
    xs = [ag.Value(0.0) for _ in range(4)]
    ws = [[ag.Value(float(v)) for v in rng.normal(size=4)] for _ in range(6)]
    outs = []
    for j, w in enumerate(ws):
        outs.append(ag.dot(w, xs).tanh())
        if j == 2:
            outs.append(xs[1] * 3.0)  # reads a row the dots share: the layer splits here
    tape = ag.Tape(ag.sum(outs), xs)
    X = rng.normal(size=(37, 4))
    out = tape.forward_batch(X)
    per_sample = tape.backward_batch(reduce="none", params=[p for w in ws for p in w])
    input_grads = tape.backward_batch()
    for s, r in enumerate(X):
        vs = [ag.Value(float(v)) for v in r]
        first = [ag.dot(w, vs).tanh() for w in ws[:3]]
        skip = vs[1] * 3.0  # built in the tape's order: eager sums a leaf's grad in reverse creation order
        total = ag.sum([*first, skip, *[ag.dot(w, vs).tanh() for w in ws[3:]]])
        for w in ws:
            for p in w:
                p.grad = 0.0
        total.backward()
        assert out[s] == total.data
        np.testing.assert_array_equal(input_grads[s], [v.grad for v in vs])
        np.testing.assert_array_equal(per_sample[s], [p.grad for w in ws for p in w])


def test_batch_values_of_a_row_nothing_after_the_forward_pass_reads() -> None:
    # A neuron's dot is read only by the bias add, whose vjp needs no values: batched replay does not
    # store that row for the batch. Asking for it runs the pass again and stores it from then on.
    w = [ag.Value(0.5), ag.Value(-1.25)]
    b = ag.Value(0.125)
    x = [ag.Value(0.0), ag.Value(0.0)]
    d = ag.dot(w, x)
    out = ((d + b) * 3.0).log()
    tape = ag.Tape(out, x)
    assert tape.batch_bytes_per_sample == 0

    def eager(row: np.ndarray) -> tuple[float, float]:
        dv = ag.dot([ag.Value(0.5), ag.Value(-1.25)], [ag.Value(float(v)) for v in row])
        ov = (dv + ag.Value(0.125)) * 3.0
        return dv.data, ov.log().data if ov.data > 0 else math.nan

    rng = np.random.default_rng(5)
    for n in (3, 300, 1100):  # one tile, two tiles, several chunks
        X = rng.uniform(-1.0, 1.0, size=(n, 2))
        got_out = tape.forward_batch(X, errors="nan")
        tape.backward_batch()
        # Stored: the 2 inputs, the row of zeros, d + b and the product (Mul's vjp reads its operand and
        # output) and the root (Log's). Not d, until batch_values asks for it.
        before = tape.batch_bytes_per_sample
        got_d = tape.batch_values(d)
        assert before == 8 * (6 if n == 3 else 7) and tape.batch_bytes_per_sample == 8 * 7
        want = np.array([eager(row) for row in X])
        np.testing.assert_array_equal(got_d, np.where(np.isnan(want[:, 1]), np.nan, want[:, 0]))
        np.testing.assert_array_equal(got_out, want[:, 1])
        # the stored rows are those of the same pass: outputs and input gradients are unchanged
        np.testing.assert_array_equal(tape.forward_batch(X, errors="nan"), got_out)
        np.testing.assert_array_equal(tape.batch_values(d), got_d)


@pytest.mark.parametrize("n", [5, 300, 1000])
@pytest.mark.parametrize("bad_seed", [False, True])
def test_bias_adds_run_by_the_layer_kernels_give_the_lane_sums(n: int, bad_seed: bool) -> None:
    """Bias adds run inside a layer's kernels (forward always; backward where the add is its dot's only
    reader) and give every parameter the fixed-order sum of its per-sample gradients, which the per-sample
    sweep computes one instruction at a time. An infinite seed sends the layer back to the per-dot loops."""
    rng = np.random.default_rng(n)
    x = [ag.Value(0.0) for _ in range(3)]
    W = [[ag.Value(float(v)) for v in row] for row in rng.normal(size=(5, 3))]
    b = [ag.Value(float(v)) for v in rng.normal(size=5)]
    c = ag.Value(0.5)
    d = [ag.dot(w, x) for w in W]
    outs = [
        d[0] + b[0],  # fused both ways
        b[1] + d[1],  # the bias first
        d[2] + b[2],  # fused forward only: d[2] has a second reader
        d[2] * 2.0,
        d[3] + b[3],  # d[3] has two adds: the first is the fused one
        d[3] + c,
        d[4] + b[4],
    ]
    root = ag.sum([o.tanh() for o in outs])
    tape = ag.Tape(root, x)
    params = [p for row in W for p in row] + b + [c]
    X = rng.uniform(-1.0, 1.0, size=(n, 3))
    seed = np.full(n, 0.5)
    if bad_seed:
        seed[n // 2] = np.inf
    tape.forward_batch(X)
    per_sample = tape.backward_batch(seed, reduce="none", params=params)
    for p in params:
        p.grad = 0.0
    tape.backward_batch(seed)
    got = [p.grad for p in params]
    want = [_lane_sum(per_sample[:, j]) for j in range(len(params))]
    np.testing.assert_array_equal(got, want)
    for s in (0, n - 1):  # and each row is that sample's eager backward
        xs = [ag.Value(float(v)) for v in X[s]]
        Ws = [[ag.Value(p.data) for p in row] for row in W]
        bs = [ag.Value(p.data) for p in b]
        cs = ag.Value(0.5)
        ds = [ag.dot(w, xs) for w in Ws]
        es = [ds[0] + bs[0], bs[1] + ds[1], ds[2] + bs[2], ds[2] * 2.0]
        es += [ds[3] + bs[3], ds[3] + cs, ds[4] + bs[4]]
        r = ag.sum([e.tanh() for e in es]) * float(seed[s])
        r.backward()
        eager = [p.grad for row in Ws for p in row] + [p.grad for p in bs] + [cs.grad]
        np.testing.assert_array_equal(per_sample[s], eager)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_batched_replay_on_its_own_threads() -> None:
    """Batched replay's threads are kept for the process; a fork's child has none of them and must start
    its own rather than wait for its parent's."""
    import time
    import warnings

    x = ag.Value(0.0)
    w = ag.Value(0.5)
    tape = ag.Tape((x * w).tanh(), [x])
    X = np.linspace(-1.0, 1.0, 3000).reshape(-1, 1)  # several chunks: the pool runs
    want = tape.forward_batch(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() of a threaded process
        pid = os.fork()
    if pid == 0:  # the child
        ok = np.array_equal(tape.forward_batch(X), want)
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done != 0:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's batched replay hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0

"""The full Hessian of a trained network's loss: 337 parameters, 113,569 second derivatives.

We train micrograd's moons network, an MLP 2-16-16-1, with arenagrad's own pieces (arenagrad.nn,
arenagrad.losses, arenagrad.optim). It uses tanh and the logistic loss rather than the demo's ReLU and hinge
loss: those are piecewise linear, so much of their curvature is exactly zero, while a smooth loss has a
Hessian worth looking at. Then arenagrad.func.hessian differentiates the loss twice with respect to all the
parameters (forward mode over reverse mode: one forward pass over the recorded gradient per parameter). For
that the loss must be a function of one flat list of parameters, so `mlp_at` evaluates the model's
architecture at given parameter Values, in `model.parameters()` order.

It prints the Hessian's size and its symmetry error, a summary of its eigenvalues (numpy.linalg.eigvalsh:
the largest, the smallest, how many are negative), and checks that a Hessian-vector product
(arenagrad.func.hvp, one forward pass, no matrix) equals H @ v. func.hessian takes a few seconds; the same
337 forward passes replayed natively from a Tape of the recorded gradient take well under one, and give
the same bits; Tape.hvp_batch, on a tape of one sample's loss with the identity as the parameters'
directions, takes milliseconds and agrees to rounding.

Usage: python examples/08_hessian_of_moons_mlp.py
"""

from __future__ import annotations

import sys
import time

import numpy as np

import arenagrad as ag
from arenagrad import Value
from arenagrad import func as F
from arenagrad.losses import bce_with_logits, l2_penalty
from arenagrad.nn import MLP
from arenagrad.optim import Adam

STEPS = 100
ALPHA = 1e-4  # the L2 penalty's weight
X, Y = ag.datasets.moons(n_samples=100, noise=0.1, seed=0)
TARGETS = [float(t) for t in Y]  # 0/1 labels for the logistic loss


def mlp_at(model: MLP, params: list[Value], x: list[float]) -> Value:
    """model(x) computed with `params` in place of the model's own parameters (same order, same ops)."""
    k = 0
    xs: list[Value] | list[float] = x
    for layer in model.layers:
        outputs = []
        for neuron in layer.neurons:
            w, b = params[k : k + neuron.nin], params[k + neuron.nin]
            k += neuron.nin + 1
            z = ag.dot(w, xs) + b
            outputs.append(z.tanh() if neuron.activation == "tanh" else z)
        xs = outputs
    assert k == len(params), f"{len(params)} parameters given, the model has {k}"
    return xs[0]


def train() -> MLP:
    model = MLP(2, [16, 16, 1], activation="tanh", seed=1337)
    opt = Adam(model.parameters(), lr=0.05)
    for step in range(1, STEPS + 1):
        scores = [model(x) for x in X]
        loss = bce_with_logits(scores, TARGETS) + l2_penalty(model, ALPHA)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (1, STEPS):
            accuracy = np.mean([(s.data > 0) == (t == 1.0) for s, t in zip(scores, TARGETS)])
            print(f"step {step:3d}  loss {loss.data:.6f}  accuracy {accuracy:.0%}")
    return model


def main() -> int:
    start = time.perf_counter()
    model = train()
    print(f"trained {model} in {time.perf_counter() - start:.2f} s")

    def loss_at(params: list[Value]) -> Value:
        return bce_with_logits([mlp_at(model, params, x) for x in X], TARGETS) + l2_penalty(params, ALPHA)

    # The flat function is the model's loss: its gradient is backward()'s, bit for bit.
    theta = np.array([p.data for p in model.parameters()])
    loss = bce_with_logits([model(x) for x in X], TARGETS) + l2_penalty(model, ALPHA)
    model.zero_grad()
    loss.backward()
    value, gradient = F.value_and_grad(loss_at)(theta)
    if value != loss.data or not np.array_equal(gradient, [p.grad for p in model.parameters()]):
        print("loss_at differs from the model's own loss")
        return 1
    print(f"loss {value:.6f}, |gradient| {np.linalg.norm(gradient):.2e} (backward() agrees bit for bit)")

    start = time.perf_counter()
    H = F.hessian(loss_at)(theta)
    seconds = time.perf_counter() - start
    n = len(theta)
    asymmetry = np.abs(H - H.T).max()
    print(f"Hessian: {n} x {n} = {H.size:,} entries in {seconds:.2f} s; max |H - H^T| = {asymmetry:.1e}")

    eigenvalues = np.linalg.eigvalsh((H + H.T) / 2)  # ascending
    negative = int((eigenvalues < 0).sum())
    print(f"eigenvalues: largest {eigenvalues[-1]:.4g}, smallest {eigenvalues[0]:.4g}, {negative} negative")
    print("  the five largest:", "  ".join(f"{e:.4g}" for e in eigenvalues[::-1][:5]))
    median = np.median(np.abs(eigenvalues))
    print(f"  median |eigenvalue| {median:.3g}, {eigenvalues[-1] / median:,.0f} times below the largest")
    if negative:
        print("  negative eigenvalues: the trained point is not a minimum, the loss still curves down there")

    v = np.random.default_rng(0).standard_normal(n)
    start = time.perf_counter()
    Hv = F.hvp(loss_at, theta, v)
    hvp_ms = (time.perf_counter() - start) * 1e3
    error = np.abs(Hv - H @ v).max() / np.abs(H @ v).max()
    print(f"Hessian-vector product in {hvp_ms:.0f} ms: max |hvp(v) - H @ v| / max |H @ v| = {error:.1e}")

    # The same forward passes, replayed natively: record the gradient once as a graph, put it on a Tape
    # (one root per parameter), and each tape.jvp(e_j) is column j of the Hessian, with no Python per node.
    start = time.perf_counter()
    params = [Value(t) for t in theta]
    tape = ag.Tape(ag.grad(loss_at(params), params, create_graph=True), params)
    recorded = time.perf_counter() - start
    H_tape = np.stack([tape.jvp(e) for e in np.eye(n)], axis=1)
    replayed = time.perf_counter() - start - recorded
    same = np.array_equal(H_tape, H)
    print(f"from a Tape of the recorded gradient ({tape.num_nodes:,} nodes, recorded in {recorded:.2f} s):"
          f" {n} jvps in {replayed:.2f} s, {'the same bits' if same else 'DIFFERENT numbers'}")

    # Without recording the gradient at all: one sample's share of the loss on a Tape whose inputs are the
    # sample (x1, x2 and its label), the parameters shared leaves. hvp_batch runs the backward pass in dual
    # numbers for every sample at once, and the identity as the parameters' directions gives every column
    # of the Hessian in that one call, the columns side by side.
    start = time.perf_counter()
    x1, x2, label = Value(0.0), Value(0.0), Value(0.0)
    z = mlp_at(model, params, [x1, x2])
    n_samples = len(X)
    bce = label * (-z).softplus() + (1.0 - label) * z.softplus()
    share = bce / n_samples + l2_penalty(params, ALPHA / n_samples)
    share_tape = ag.Tape(share, [x1, x2, label])
    share_tape.forward_batch(np.column_stack([np.asarray(X, dtype=float), TARGETS]))
    _, H_batch = share_tape.hvp_batch(params=params, param_tangents=np.eye(n))
    batch_ms = (time.perf_counter() - start) * 1e3
    batch_error = np.abs(H_batch - H).max() / np.abs(H).max()
    print(f"from hvp_batch over the samples ({share_tape.num_nodes} nodes, no gradient recorded):"
          f" {batch_ms:.0f} ms, max |difference| / max |H| = {batch_error:.1e}")

    checks = {
        "H is symmetric to 1e-12 of its largest entry": asymmetry <= 1e-12 * np.abs(H).max(),
        "the largest eigenvalue is positive": eigenvalues[-1] > 0,
        "hvp equals H @ v to 1e-12": error <= 1e-12,
        "the Tape's Hessian is func.hessian's, bit for bit": same,
        "hvp_batch's Hessian is func.hessian's to 1e-12": batch_error <= 1e-12,
    }
    for claim, holds in checks.items():
        print(f"{'ok' if holds else 'FAILED'}: {claim}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

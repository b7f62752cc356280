"""Forward mode on a recorded Tape (Tape.jvp): one tangent sweep from the same op table as backward."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from conftest import require_module
from test_determinism import _leaves_below, _random_program, build, every_root

import arenagrad as ag


def test_jvp_equals_the_directional_derivative_from_backward() -> None:
    """On random graphs (shared subexpressions, every op): J v from one tangent sweep equals grad . v."""
    checked = 0
    for seed in range(1000):
        rng = random.Random(seed)
        program = _random_program(rng, 25)
        nodes, outcomes = build(ag, program)
        if any(outcomes):
            continue
        root = nodes[every_root(program)[-1]]
        used = _leaves_below(root)
        leaves = [n for n in nodes[: len(program.leaves)] if n in used]
        if not leaves or not math.isfinite(root.data):
            continue
        tape = ag.Tape(root, leaves)
        for leaf in leaves:
            leaf.grad = 0.0
        tape.backward()
        grads = [leaf.grad for leaf in leaves]
        if not all(math.isfinite(g) and abs(g) < 1e12 for g in grads):
            continue
        v = [rng.uniform(-1, 1) for _ in leaves]
        got = tape.jvp(v)
        if not math.isfinite(got):
            # A zero tangent meeting a NaN partial (pow's exponent partial at a negative base) is NaN in
            # forward mode, as in torch.func and JAX, where reverse mode met a zero partial first.
            continue
        expected = math.fsum(g * t for g, t in zip(grads, v))
        scale = math.fsum(abs(g * t) for g, t in zip(grads, v))
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12 * max(1.0, scale)), seed
        checked += 1
    assert checked > 200


# torch.func imports a module that calls torch.jit.script, deprecated in this torch: not our warning.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_jvp_matches_torch_func_jvp() -> None:
    torch = require_module("torch")
    xs = [0.3, -1.2, 2.0]
    v = [0.5, -0.25, 1.5]

    def f(lib, a, b, c):  # softplus and logsumexp included, through each library's own spelling
        if lib is ag:
            sp, lse = (lambda t: t.softplus()), ag.logsumexp
        else:
            sp = torch.nn.functional.softplus
            lse = lambda ts: torch.logsumexp(torch.stack(ts), 0)  # noqa: E731
        return (
            (a * b).tanh() * c.exp()
            + sp(a - c) * (b**2 + 1).sqrt().log()
            + lse([a, b * c, c.sin()]) / (1 + c.abs())
        )

    leaves = [ag.Value(x) for x in xs]
    tape = ag.Tape(f(ag, *leaves), leaves)
    got = tape.jvp(v)
    primals = tuple(torch.tensor(x, dtype=torch.float64) for x in xs)
    tangents = tuple(torch.tensor(t, dtype=torch.float64) for t in v)
    _, expected = torch.func.jvp(lambda a, b, c: f(torch, a, b, c), primals, tangents)
    assert got == pytest.approx(expected.item(), rel=1e-13)


def test_inputs_with_zero_tangents_are_inactive() -> None:
    """JAX's symbolic zeros: d/dx (x * sqrt(y)) at y = 0 with only x seeded is sqrt(0) = 0, not NaN."""
    x, y = ag.Value(3.0), ag.Value(0.0)
    tape = ag.Tape(x * y**0.5 + x, [x, y])
    assert tape.jvp([1.0, 0.0]) == 1.0
    assert tape.jvp([0.0, 1.0]) == math.inf  # d/dy sqrt(y) at 0, seeded
    assert tape.jvp([0.0, 0.0]) == 0.0


def test_jvp_follows_forward_replays() -> None:
    x, w = ag.Value(0.5), ag.Value(-1.5)
    tape = ag.Tape((x * w).tanh() + x.exp(), [x])
    for value in (0.1, -2.0, 3.0):
        tape.forward([value])
        expected = (1 - math.tanh(value * -1.5) ** 2) * -1.5 + math.exp(value)
        assert tape.jvp([1.0]) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("bad", [[1.0], [1.0, 2.0, 3.0], ["a", "b"], np.zeros((2, 1))])
def test_jvp_wants_one_real_tangent_per_input(bad: object) -> None:
    x, y = ag.Value(1.0), ag.Value(2.0)
    tape = ag.Tape(x * y, [x, y])
    with pytest.raises((ValueError, TypeError), match=r"tangent|real numbers"):
        tape.jvp(bad)

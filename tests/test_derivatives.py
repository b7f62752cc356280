"""Derivatives of every kind (arenagrad.grad, forward mode, arenagrad.func) against torch.func.

Random smooth programs over every op are built twice, once on arenagrad Values and once on float64
torch tensors, from the same description; first and second derivatives, forward and reverse, must
agree to 1e-10 (relative to the largest entry). Kinks follow PyTorch's conventions.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import require_module
from hypothesis import given, settings
from hypothesis import strategies as st

import arenagrad as ag
from arenagrad import func as F

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

RTOL = 1e-10

# Each step: (op, i, j) reads earlier nodes i and j (indexes into the node list, taken modulo its
# length). Every op is applied to a transformed operand that keeps it in its smooth domain, so the
# program is differentiable twice at every point the strategy draws.
UNARY = ["exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "sin", "cos", "neg", "square", "cube", "recip"]
UNARY += ["pow"]
BINARY = ["add", "sub", "mul", "div", "powv", "sum", "dot", "logsumexp"]


def _apply(ns: Any, op: str, a: Any, b: Any) -> Any:
    """One step of a program on either engine; ns supplies exp/log/... for that engine."""
    if op == "exp":
        return ns.exp(ns.tanh(a))
    if op == "log":
        return ns.log(a * a + 0.5)
    if op == "sqrt":
        return ns.sqrt(a * a + 0.25)
    if op == "tanh":
        return ns.tanh(a)
    if op == "sigmoid":
        return ns.sigmoid(a)
    if op == "softplus":
        return ns.softplus(a)
    if op == "sin":
        return ns.sin(a)
    if op == "cos":
        return ns.cos(a)
    if op == "neg":
        return -a
    if op == "square":
        return a**2
    if op == "cube":
        return ns.tanh(a) ** 3
    if op == "recip":
        return 1.0 / (a * a + 1.0)
    if op == "pow":
        return (ns.sigmoid(a) + 0.5) ** 1.5
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / (b * b + 0.75)
    if op == "powv":
        return (ns.sigmoid(a) + 0.5) ** ns.tanh(b)
    if op == "sum":
        return ns.sum([a, b, a])
    if op == "dot":
        return ns.dot([a, b], [b, ns.tanh(a)])
    if op == "logsumexp":
        return ns.logsumexp([a, b, 0.5 * a])
    raise AssertionError(op)


class _Arena:
    exp = staticmethod(lambda x: x.exp())
    log = staticmethod(lambda x: x.log())
    sqrt = staticmethod(lambda x: x.sqrt())
    tanh = staticmethod(lambda x: x.tanh())
    sigmoid = staticmethod(lambda x: x.sigmoid())
    softplus = staticmethod(lambda x: x.softplus())
    sin = staticmethod(lambda x: x.sin())
    cos = staticmethod(lambda x: x.cos())
    sum = staticmethod(ag.sum)
    dot = staticmethod(ag.dot)
    logsumexp = staticmethod(ag.logsumexp)


def _torch_ns() -> Any:
    torch = require_module("torch")

    class Torch:
        exp = staticmethod(torch.exp)
        log = staticmethod(torch.log)
        sqrt = staticmethod(torch.sqrt)
        tanh = staticmethod(torch.tanh)
        sigmoid = staticmethod(torch.sigmoid)
        softplus = staticmethod(torch.nn.functional.softplus)
        sin = staticmethod(torch.sin)
        cos = staticmethod(torch.cos)
        sum = staticmethod(lambda xs: torch.stack(list(xs)).sum())
        dot = staticmethod(lambda ws, xs: (torch.stack(list(ws)) * torch.stack(list(xs))).sum())
        logsumexp = staticmethod(lambda xs: torch.logsumexp(torch.stack([x * 1.0 for x in xs]), 0))

    return Torch


Program = list[tuple[str, int, int]]

programs = st.lists(
    st.tuples(st.sampled_from(UNARY + BINARY), st.integers(0, 1000), st.integers(0, 1000)),
    min_size=1,
    max_size=12,
)
points = st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3)


def _run(ns: Any, program: Program, xs: list[Any], outputs: int = 1) -> list[Any]:
    nodes = list(xs)
    for op, i, j in program:
        nodes.append(_apply(ns, op, nodes[i % len(nodes)], nodes[j % len(nodes)]))
    # Sum the last few nodes so every step tends to matter, with shared subexpressions.
    tail = nodes[len(xs) :] or nodes
    outs = []
    for k in range(outputs):
        pick = tail[k % len(tail) :]
        total = pick[0]
        for n in pick[1:]:
            total = total + n
        outs.append(total * xs[k % len(xs)] + xs[(k + 1) % len(xs)])
    return outs


def _close(got: Any, want: Any, rtol: float = RTOL) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want))))
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= rtol * scale, (got, want)


@settings(max_examples=60, deadline=None)
@given(programs, points, points)
def test_first_and_second_derivatives_match_torch_func(
    program: Program, x: list[float], v: list[float]
) -> None:
    torch = require_module("torch")
    tns = _torch_ns()

    def f(xs: list[ag.Value]) -> ag.Value:
        return _run(_Arena, program, xs)[0]

    def tf(t: Any) -> Any:
        return _run(tns, program, list(t))[0]

    tx = torch.tensor(x, dtype=torch.float64)
    tv = torch.tensor(v, dtype=torch.float64)
    _close(F.grad(f)(x), torch.func.grad(tf)(tx).numpy())
    _close(F.jvp(f, x, v)[1], torch.func.jvp(tf, (tx,), (tv,))[1].item())
    hess = torch.func.hessian(tf)(tx).numpy()
    _close(F.hessian(f)(x), hess)
    _close(F.hvp(f, x, v), hess @ np.array(v))
    # Reverse over reverse equals forward over reverse, and the Hessian of finite differences.
    _close(F.jacrev(F.grad(f))(x), hess)
    h = 1e-6
    g = F.grad(f)
    fd = np.stack([(g(np.add(x, h * e)) - g(np.subtract(x, h * e))) / (2 * h) for e in np.eye(3)])
    _close(fd, hess, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(programs, points)
def test_jacfwd_equals_jacrev_for_several_outputs(program: Program, x: list[float]) -> None:
    def f(xs: list[ag.Value]) -> list[ag.Value]:
        return _run(_Arena, program, xs, outputs=4)

    fwd = F.jacfwd(f)(x)
    rev = F.jacrev(f)(x)
    assert fwd.shape == (4, 3)
    _close(fwd, rev, rtol=1e-12)
    np.testing.assert_array_equal(F.jacobian(f)(x), fwd)  # 3 inputs <= 4 outputs: forward mode


def test_grad_equals_backward_bit_for_bit_and_leaves_grad_alone() -> None:
    x, y = ag.Value(0.3), ag.Value(-1.7)
    out = (x * y).tanh() + (x / y).exp() * x**3 + ag.logsumexp([x, y]) + ag.dot([x, y], [y, x])
    x.grad, y.grad = 5.0, 6.0
    gx, gy = ag.grad(out, [x, y])
    assert (x.grad, y.grad) == (5.0, 6.0)
    x.grad = y.grad = 0.0
    out.backward()
    assert (gx.data, gy.data) == (x.grad, y.grad)
    assert gx._op == "" and gx._prev == set()  # without create_graph: constants


def test_grad_options() -> None:
    x, y, unused = ag.Value(2.0), ag.Value(3.0), ag.Value(1.0)
    a = x * y
    b = a + x
    # several outputs, seeds, a non-leaf input, an input nothing depends on
    ga, gx, gu = ag.grad([a, b], [a, x, unused], grad_outputs=[2.0, 10.0])
    assert (ga.data, gx.data, gu.data) == (12.0, 2.0 * 3.0 + 10.0 * (3.0 + 1.0), 0.0)
    (g,) = ag.grad(b, x, grad_outputs=ag.Value(0.5))
    assert g.data == 2.0
    (g2,) = ag.grad(b, [x, x][:1])
    assert g2.data == 4.0
    twice = ag.grad(b, [x, x])
    assert [t.data for t in twice] == [4.0, 4.0]
    (leaf,) = ag.grad(x, x)
    assert leaf.data == 1.0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda x: ag.grad([], [x]), ValueError),
        (lambda x: ag.grad(x, []), ValueError),
        (lambda x: ag.grad(1.0, [x]), TypeError),
        (lambda x: ag.grad(x * 2, [1.0]), TypeError),
        (lambda x: ag.grad(x * 2, x, grad_outputs=[1.0, 2.0]), ValueError),
        (lambda x: ag.grad(x * 2, x, grad_outputs=["1"]), TypeError),
        (lambda x: ag.grad(x * 2, x, create_graph=1), TypeError),
        (lambda x: ag.tangent(x * 2, [x, x], [1.0, 1.0]), ValueError),
        (lambda x: ag.tangent(x * 2, [x], [1.0, 2.0]), ValueError),
        (lambda x: F.grad(lambda xs: 1.0)([1.0]), TypeError),
        (lambda x: F.grad(lambda xs: xs[0])([[1.0]]), TypeError),
        (lambda x: F.grad(lambda xs: xs[0])(np.ones((2, 2))), ValueError),
        (lambda x: F.grad(lambda xs: xs[0])([1.0, x]), TypeError),
        (lambda x: F.jvp(lambda xs: xs[0], [1.0, 2.0], [1.0]), ValueError),
        (lambda x: F.jacobian(lambda xs: [[xs[0]], [xs[0], xs[1]]])([1.0, 2.0]), ValueError),
    ],
)
def test_bad_arguments_raise_clear_errors(call: Callable[[ag.Value], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        call(ag.Value(1.0))


def test_reference_engine_values_are_refused() -> None:
    ref = require_module("arenagrad.reference")
    with pytest.raises(TypeError, match=r"arenagrad\.Value"):
        ag.grad(ref.Value(1.0) * 2, [ref.Value(1.0)])


def test_create_graph_composes_to_any_order() -> None:
    """Third and fourth derivatives against closed forms."""
    a = 0.7
    f = F.grad(lambda xs: xs[0] ** 3 * xs[0].sin())
    d3 = F.jacfwd(F.jacfwd(f))([a])[0, 0, 0]
    exact3 = 6 * math.sin(a) + 18 * a * math.cos(a) - 9 * a * a * math.sin(a) - a**3 * math.cos(a)
    assert d3 == pytest.approx(exact3, rel=1e-12)
    x = ag.Value(0.4)
    d = x.exp() * x.tanh()
    for _ in range(4):
        (d,) = ag.grad(d, x, create_graph=True)
    t = math.tanh(0.4)
    s = 1 - t * t  # tanh' ; tanh'' = -2ts ; tanh''' = -2s(1 - 3t^2)
    # d^4/dx^4 (e^x tanh x) = e^x (tanh + 4 tanh' + 6 tanh'' + 4 tanh''' + tanh'''')
    t1, t2, t3 = s, -2 * t * s, -2 * s * (1 - 3 * t * t)
    t4 = -2 * (t2 * (1 - 3 * t * t) + s * (-6 * t * s))
    exact4 = math.exp(0.4) * (t + 4 * t1 + 6 * t2 + 4 * t3 + t4)
    assert d.data == pytest.approx(exact4, rel=1e-12)


def test_transforms_compose_on_values() -> None:
    def f(xs: list[ag.Value]) -> ag.Value:
        x, y = xs
        return (x * y).sin() + x**2 * y.exp()

    x = [0.3, -0.8]
    np.testing.assert_allclose(F.jacobian(F.grad(f))(x), F.hessian(f)(x), rtol=0, atol=1e-14)
    xs = [ag.Value(v) for v in x]
    g = F.grad(f)(xs)
    assert all(isinstance(v, ag.Value) and v._op for v in g)
    h = F.hessian(f)(xs)
    assert [[v.data for v in row] for row in h] == F.hessian(f)(x).tolist()
    value, grads = F.value_and_grad(f)(x)
    assert value == f([ag.Value(v) for v in x]).data
    np.testing.assert_array_equal(grads, F.grad(f)(x))
    value, fn = F.vjp(lambda xs: [f(xs), xs[0] * 2.0], x)
    np.testing.assert_array_equal(fn([1.0, 0.0]), F.grad(f)(x))


@pytest.mark.parametrize("at", [0.0, -0.0, 1.0, -1.0])
def test_kinks_follow_pytorch(at: float) -> None:
    torch = require_module("torch")

    def f(xs: list[ag.Value]) -> ag.Value:
        x, y = xs
        return x.relu() * y + abs(x) * y * y + (x * x + y * y) ** 0.5 * 0 + x.relu() ** 2

    def tf(t: Any) -> Any:
        x, y = t
        return x.relu() * y + x.abs() * y * y + (x * x + y * y) ** 0.5 * 0 + x.relu() ** 2

    p = [at, 0.5]
    tp = torch.tensor(p, dtype=torch.float64)
    np.testing.assert_array_equal(F.grad(f)(p), torch.func.grad(tf)(tp).numpy())
    np.testing.assert_array_equal(F.hessian(f)(p), torch.func.hessian(tf)(tp).numpy())


def test_pow_at_zero_follows_pytorch() -> None:
    torch = require_module("torch")
    for k in (0.0, 1.0, 2.0, 3.0):
        def f(xs: list[ag.Value], k: float = k) -> ag.Value:
            return xs[0] ** xs[1] + xs[0] ** k

        def tf(t: Any, k: float = k) -> Any:
            return t[0] ** t[1] + t[0] ** k

        p = [0.0, k]
        tp = torch.tensor(p, dtype=torch.float64)
        np.testing.assert_array_equal(F.grad(f)(p), torch.func.grad(tf)(tp).numpy())
        np.testing.assert_array_equal(F.hessian(f)(p), torch.func.hessian(tf)(tp).numpy())


def test_forward_mode_has_symbolic_zeros() -> None:
    """d/dx of x * sqrt(y) at y = 0 seeding only x: finite (sqrt(y)'s infinite partial never enters)."""
    x, y = ag.Value(2.0), ag.Value(0.0)
    out = x * y**0.5
    assert [t.data for t in ag.tangent(out, [x, y], [1.0, 0.0])] == [0.0]
    assert F.jvp(lambda xs: xs[0] * xs[1].sqrt(), [2.0, 0.0], [1.0, 0.0])[1] == 0.0


def test_grad_of_grad_after_training_takes_the_ordered_sweep_and_fresh_bits() -> None:
    """After a training loop has churned the arena's slots, a Hessian-vector product still takes
    the one-pass ordered sweep, and gives the same bits as in a fresh process."""
    script = textwrap.dedent(
        """
        import random, sys
        import arenagrad as ag
        random.seed(1)
        model = ag.nn.MLP(2, [8, 8, 1])
        data = [([random.uniform(-1, 1), random.uniform(-1, 1)], random.choice([-1.0, 1.0]))
                for _ in range(20)]
        def loss():
            return ag.sum([(model(x) - y) ** 2 for x, y in data])
        if sys.argv[1] == "train":
            opt = ag.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the same point, a churned arena
            for _ in range(30):
                l = loss(); opt.zero_grad(); l.backward(); opt.step()
                junk = [ag.Value(random.random()) * 2 for _ in range(random.randint(0, 50))]
        params = model.parameters()
        before = ag.arena_stats()
        grads = ag.grad(loss(), params, create_graph=True)
        v = [ag.Value(random.Random(7).uniform(-1, 1)) for _ in params]
        hv = ag.grad(grads, params, grad_outputs=v)
        after = ag.arena_stats()
        print(after["sweeps_ordered"] - before["sweeps_ordered"], after["sweeps_dfs"] - before["sweeps_dfs"])
        print([h.data.hex() for h in hv])
        """
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        for mode in ("train", "fresh")
    ]
    assert runs[0][0] == "2 0", runs[0][0]  # both passes ordered, no search
    assert runs[0][1] == runs[1][1]

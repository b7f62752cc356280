"""arenagrad.grad and arenagrad.tangent (cpp/derivatives.cpp) against the reference engine's grad and tangent.

The reference writes each vjp rule once over floats and over its own Values, as cpp/ops.hpp does over double
and Node, and runs the passes of derivatives.cpp step for step, so the two engines give the same bits: first
derivatives, recorded derivatives (create_graph) and derivatives of those, in reverse and forward mode. Random
programs (shared subexpressions, every op and mask, special numbers) come from tests/test_determinism.py's
generators.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_determinism import BINARY, FAILURES, NARY, SPECIAL, UNARY, Program, assert_same, same
from test_determinism import apply as apply_step

import arenagrad
from arenagrad import reference

ENGINES = (arenagrad, reference)
MASKS = ("step", "sign", "nonzero", "isfinite")
OPS = UNARY + MASKS + BINARY + NARY


def apply(engine: ModuleType, nodes: list[Any], step: tuple[Any, ...]) -> Any:
    op, idx, _ = step
    if op in MASKS:
        return getattr(nodes[idx[0]], op)()
    return apply_step(engine, nodes, step)


def build(engine: ModuleType, program: Program) -> tuple[list[Any], list[type | None]]:
    """The program's nodes, leaves first; a step that raises is stood in for by its first operand."""
    nodes: list[Any] = [engine.Value(x) for x in program.leaves]
    outcomes: list[type | None] = []
    for step in program.steps:
        try:
            nodes.append(apply(engine, nodes, step))
            outcomes.append(None)
        except FAILURES as exc:
            nodes.append(nodes[step[1][0]])
            outcomes.append(type(exc))
    return nodes, outcomes


def random_program(rng: random.Random, steps: int, special: bool) -> Program:
    """As test_determinism._random_program, with the masks among the ops."""

    def number() -> float:
        return rng.choice(SPECIAL) if special and rng.random() < 0.3 else rng.uniform(-2, 2)

    leaves = tuple(number() for _ in range(rng.randrange(1, 6)))
    out = []
    for _ in range(steps):
        n = len(leaves) + len(out)
        op = rng.choice(OPS)
        count = (rng.randrange(1, 5) * (2 if op == "dot" else 1)) if op in NARY else 2
        low = max(0, n - 5) if rng.random() < 0.8 else 0
        out.append((op, tuple(rng.randrange(low, n) for _ in range(count)), number()))
    return Program(leaves, tuple(out))


@dataclass(frozen=True)
class Case:
    """A program and what to differentiate: roots with seeds, inputs (leaves, inner nodes, a node nothing
    depends on, repeats) and per input a tangent."""

    program: Program
    roots: tuple[int, ...]
    seeds: tuple[float, ...]
    inputs: tuple[int, ...]  # -1: a fresh leaf the roots do not depend on


SEEDS = (1.0, -1.0, 0.5, 2.0, 0.0, -0.0, 1e-310, math.inf)


@st.composite
def cases(draw: Any, max_steps: int = 16, special: bool = True) -> Case:
    rng = random.Random(draw(st.integers(0, 2**64 - 1)))
    program = random_program(rng, draw(st.integers(1, max_steps)), special and rng.random() < 0.6)
    count = len(program.leaves) + len(program.steps)
    node = st.integers(0, count - 1)
    roots = tuple(draw(st.lists(node, min_size=1, max_size=4)))
    seeds = tuple(draw(st.lists(st.sampled_from(SEEDS), min_size=len(roots), max_size=len(roots))))
    extra = draw(st.lists(st.one_of(node, st.just(-1)), max_size=3))
    return Case(program, roots, seeds, (*range(len(program.leaves)), *extra))


def setup(engine: ModuleType, case: Case) -> tuple[list[Any], list[Any], list[Any], list[type | None]]:
    """Nodes, roots and inputs of the case on one engine, and which steps raised."""
    nodes, outcomes = build(engine, case.program)
    unused = engine.Value(0.25)
    inputs = [nodes[i] if i >= 0 else unused for i in case.inputs]
    return nodes, [nodes[r] for r in case.roots], inputs, outcomes


def has_mask(program: Program) -> bool:
    return any(step[0] in MASKS for step in program.steps)


def data(values: list[Any]) -> list[float]:
    return [v.data for v in values]


def assert_bits(got: list[float], expected: list[float], what: str) -> None:
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if not same(a, b)]
    assert len(got) == len(expected) and not bad, f"{what} differ (index, native, reference): {bad}"


def same_up_to_zero_sign(x: float, y: float) -> bool:
    return same(x, y) or (x == 0 and y == 0)


# -- reverse mode --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(case=cases())
def test_gradient_native_equals_reference_bit_for_bit(case: Case) -> None:
    """Several roots and seeds, inputs that are leaves, inner nodes, unreached or repeated: the same bits, and
    with one root and seed 1 the bits of .backward() on zeroed grads."""
    got = {}
    for engine in ENGINES:
        nodes, roots, inputs, outcomes = setup(engine, case)
        grads = engine.grad(roots, inputs, list(case.seeds))
        assert all(type(g) is engine.Value and not g._op for g in grads)
        got[engine] = (outcomes, data(grads))
        root = roots[0]
        leaves = nodes[: len(case.program.leaves)]
        for leaf in leaves:
            leaf.grad = 0.0
        root.backward()
        expected = [leaf.grad for leaf in leaves]
        assert_bits(data(engine.grad(root, leaves)), expected, "grad and backward")
    assert got[arenagrad][0] == got[reference][0]
    assert_bits(got[arenagrad][1], got[reference][1], "gradients")


@settings(max_examples=120, deadline=None)
@given(case=cases(), outer=st.lists(st.sampled_from((1.0, -0.5, 2.0)), min_size=1, max_size=1))
def test_recorded_gradients_and_their_derivatives_are_the_same_bits(case: Case, outer: list[float]) -> None:
    """create_graph: the recorded gradient has the double pass's value (up to the sign of a zero; see below),
    the same bits on both engines, and so do its derivatives, numbers or recorded again (third order)."""
    results: dict[ModuleType, list[list[float]]] = {}
    for engine in ENGINES:
        nodes, roots, inputs, _ = setup(engine, case)
        seeds = [engine.Value(s) for s in case.seeds]  # differentiable seeds: a vector-Jacobian product
        numbers = data(engine.grad(roots, inputs, list(case.seeds)))
        recorded = engine.grad(roots, inputs, seeds, create_graph=True)
        assert all(type(g) is engine.Value for g in recorded)
        for d, r in zip(numbers, data(recorded)):
            # The double pass adds a mask's zero into its input, as backward() does, so 0 * inf makes NaN
            # there where the recorded pass, which gives masks no node, stays finite.
            assert same_up_to_zero_sign(d, r) or (math.isnan(d) and has_mask(case.program)), (d, r)
        leaves = nodes[: len(case.program.leaves)]
        wrt = [*leaves, *seeds]
        weights = [outer[0] * (k + 1) for k in range(len(recorded))]
        second = engine.grad(recorded, wrt, weights)
        second_graph = engine.grad(recorded, wrt, weights, create_graph=True)
        third = engine.grad(second_graph, leaves)
        results[engine] = [data(recorded), data(second), data(second_graph), data(third)]
    for what, n, r in zip(("recorded", "second", "second recorded", "third"), *results.values()):
        assert_bits(n, r, what)


# -- forward mode --------------------------------------------------------------------------------------------

TANGENTS = st.sampled_from((1.0, -0.5, 0.25, 0.0, 2.0))


@settings(max_examples=150, deadline=None)
@given(case=cases(), tangents=st.lists(TANGENTS, min_size=6, max_size=6))
def test_tangent_native_equals_reference_and_the_contracted_gradient(
    case: Case, tangents: list[float]
) -> None:
    """Forward mode: the same bits on both engines (numbers and recorded), and, where finite, grad . v."""
    leaves_count = len(case.program.leaves)
    ts = tangents[:leaves_count]
    results: dict[ModuleType, list[list[float]]] = {}
    for engine in ENGINES:
        nodes, roots, _, _ = setup(engine, case)
        leaves = nodes[:leaves_count]
        numbers = data(engine.tangent(roots, leaves, ts))
        recorded = data(engine.tangent(roots, leaves, [engine.Value(t) for t in ts], create_graph=True))
        results[engine] = [numbers, recorded]
        for root, jv in zip(roots, numbers):
            grads = data(engine.grad(root, leaves))
            # Symbolic zeros: inputs with a zero tangent drop out (no 0 * inf).
            terms = [g * t for g, t in zip(grads, ts) if t != 0.0]
            if not math.isfinite(jv) or not all(math.isfinite(x) and abs(x) < 1e12 for x in terms):
                continue
            scale = math.fsum(abs(x) for x in terms)
            assert jv == pytest.approx(math.fsum(terms), rel=1e-12, abs=1e-12 * max(1.0, scale))
    for what, n, r in zip(("tangents", "recorded tangents"), *results.values()):
        assert_bits(n, r, what)


@settings(max_examples=250, deadline=None)
@given(case=cases(special=False), v=st.lists(st.floats(-1, 1), min_size=6, max_size=6))
def test_forward_over_reverse_equals_reverse_over_reverse(case: Case, v: list[float]) -> None:
    """Hessian-vector products: the tangent of the recorded gradient along v, and the gradient of
    (recorded gradient . v), agree to rounding, and each is the same bits on both engines."""
    leaves_count = len(case.program.leaves)
    vs = v[:leaves_count]
    results: dict[ModuleType, list[list[float]]] = {}
    for engine in ENGINES:
        nodes, roots, _, _ = setup(engine, case)
        leaves = nodes[:leaves_count]
        g = engine.grad(roots, leaves, create_graph=True)
        forward = data(engine.tangent(g, leaves, vs))
        reverse = data(engine.grad(g, leaves, vs))
        results[engine] = [forward, reverse]
        for f, r in zip(forward, reverse):
            if math.isfinite(f) and math.isfinite(r) and max(abs(f), abs(r)) < 1e8:
                assert f == pytest.approx(r, rel=1e-10, abs=1e-10)
    for what, n, r in zip(("forward over reverse", "reverse over reverse"), *results.values()):
        assert_bits(n, r, what)


def test_many_random_graphs_agree() -> None:
    """The checks above on 1000 seeded programs of every kind, cheaply: first and second order, both modes."""
    for seed in range(1000):
        rng = random.Random(seed)
        program = random_program(rng, 12, special=seed % 2 == 0)
        count = len(program.leaves) + len(program.steps)
        roots = tuple(rng.randrange(count) for _ in range(rng.randrange(1, 4)))
        seeds = tuple(rng.choice(SEEDS) for _ in roots)
        case = Case(program, roots, seeds, (*range(len(program.leaves)), rng.randrange(count), -1))
        ts = [rng.choice((1.0, 0.0, -0.5)) for _ in program.leaves]
        results = {}
        for engine in ENGINES:
            nodes, roots, inputs, outcomes = setup(engine, case)
            leaves = nodes[: len(program.leaves)]
            g = engine.grad(roots, inputs, list(case.seeds), create_graph=True)
            results[engine] = [
                [outcomes, data(engine.grad(roots, inputs, list(case.seeds)))],
                [[], data(g)],
                [[], data(engine.grad(g, leaves))],
                [[], data(engine.tangent(roots, leaves, ts))],
                [[], data(engine.tangent(g, leaves, ts))],
            ]
        for n, r in zip(results[arenagrad], results[reference]):
            assert_same(n, r)


# -- cases by hand -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES, ids=["native", "reference"])
def test_symbolic_zeros(engine: ModuleType) -> None:
    """d/dx of x * sqrt(y) at y = 0 with only x seeded is sqrt(0) = 0, not 0 * inf = NaN (JAX's symbolic
    zeros); seeding y gives d/dy sqrt(y) = inf."""
    x, y = engine.Value(3.0), engine.Value(0.0)
    out = x * y**0.5
    assert engine.tangent(out, [x, y], [1.0, 0.0])[0].data == 0.0
    assert engine.tangent(out + x, [x, y], [1.0, 0.0])[0].data == 1.0
    assert engine.tangent(out, [x, y], [0.0, 1.0])[0].data == math.inf
    assert engine.tangent(out, [x, y], [0.0, 0.0])[0].data == 0.0
    recorded = engine.tangent(out + x, [x, y], [engine.Value(1.0), engine.Value(0.0)], create_graph=True)
    assert math.isnan(recorded[0].data)  # recorded tangents are all active: 0 * inf
    assert engine.grad(out, x)[0].data == 0.0


@pytest.mark.parametrize("engine", ENGINES, ids=["native", "reference"])
def test_masks(engine: ModuleType) -> None:
    """step, sign, nonzero and isfinite: values as in cpp/ops.hpp; backward adds 0.0 to the input, the
    derivative passes give it zero."""
    for a in (2.0, -3.0, 0.0, -0.0, math.inf, -math.inf, math.nan, 1e-310):
        x = engine.Value(a)
        expected = {
            "step": 1.0 if a > 0 else 0.0,
            "sign": 1.0 if a > 0 else (-1.0 if a < 0 else (0.0 if a == 0 else math.nan)),
            "nonzero": 1.0 if a != 0 else 0.0,
            "isfinite": 1.0 if math.isfinite(a) else 0.0,
        }
        for name, value in expected.items():
            y = getattr(x, name)()
            assert y._op == name and y._prev == {x}
            assert same(y.data, value)
            x.grad = -0.0
            y.backward()
            assert same(x.grad, 0.0)  # -0.0 + 0.0
            assert same(engine.grad(y, x)[0].data, 0.0)
            assert same(engine.tangent(y, x, 1.0)[0].data, 0.0)
            assert engine.grad(y, x, create_graph=True)[0]._op == ""


@pytest.mark.parametrize("engine", ENGINES, ids=["native", "reference"])
def test_higher_order_derivatives(engine: ModuleType) -> None:
    """Recorded derivatives differentiate again, to any order, in either mode."""
    x = engine.Value(2.0)
    y = x**3 + x.sin() * x
    d = [y]
    for _ in range(4):
        d.append(engine.grad(d[-1], x, create_graph=True)[0])
    s, c = math.sin(2.0), math.cos(2.0)
    expected = [8 + 2 * s, 12 + s + 2 * c, 12 + 2 * c - 2 * s, 6 - 3 * s - 2 * c, -4 * c + 2 * s]
    assert data(d) == pytest.approx(expected, rel=1e-14)
    t = [y]
    for _ in range(4):
        t.append(engine.tangent(t[-1], x, 1.0, create_graph=True)[0])
    assert data(t) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("engine", ENGINES, ids=["native", "reference"])
def test_what_the_results_are(engine: ModuleType) -> None:
    x, w = engine.Value(1.5), engine.Value(-2.0)
    y = x * w
    seed = engine.Value(3.0)
    # A recorded gradient that is a seed is that seed; an unreached input gets a new zero leaf.
    assert engine.grad(y, y, seed, create_graph=True)[0] is seed
    zero = engine.grad(y, engine.Value(1.0), create_graph=True)[0]
    assert (zero.data, zero._op) == (0.0, "")
    # Numbers are new leaves; .grad is neither read nor written.
    x.grad = 7.0
    g = engine.grad(y, [x, w, x])
    assert data(g) == [-2.0, 1.5, -2.0] and x.grad == 7.0 and w.grad == 0.0
    assert all(not v._op and v.grad == 0.0 for v in g)
    # Seeds sum over repeated roots; grad_outputs may hold Values (their numbers count).
    assert data(engine.grad([y, y], x, [1.0, engine.Value(2.0)])) == [-6.0]
    # Forward mode: an input keeps its seed, even an inner node.
    z = (y + x).tanh()
    assert engine.tangent([y, z], y, 1.0)[0].data == 1.0
    assert engine.tangent(z, [y], [1.0])[0].data == pytest.approx(1 - math.tanh(-1.5) ** 2)


def test_recorded_ops_are_the_native_ones() -> None:
    """The nodes a recorded derivative is made of carry the native engine's names."""

    def ops(root: Any) -> set[str]:
        seen, stack = {root}, [root]
        while stack:
            for child in stack.pop()._prev:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return {v._op for v in seen if v._op}

    found = []
    for engine in ENGINES:
        x, y = engine.Value(0.7), engine.Value(1.3)
        f = (x**y).sqrt().relu() + abs(x / y) * x.log()
        dx, dy = engine.grad(f, [x, y], create_graph=True)
        found.append(ops(dx) | ops(dy))
    assert found[0] == found[1]
    assert {"*", "/", "**", "xlogy", "select", "step", "sign"} <= found[0]


# -- argument errors -----------------------------------------------------------------------------------------


def _grad_calls(E: ModuleType, other: ModuleType) -> list[Any]:
    x, y = E.Value(1.0), E.Value(2.0)
    z = x * y
    foreign = other.Value(1.0)
    return [
        lambda: E.grad(3.0, x),
        lambda: E.grad([], x),
        lambda: E.grad(z, "xy"),
        lambda: E.grad([z, 2.0], x),
        lambda: E.grad(z, foreign),
        lambda: E.grad(foreign, x),
        lambda: E.grad([z, z], x, [1.0]),
        lambda: E.grad(z, x, "a"),
        lambda: E.grad(z, x, [True]),
        lambda: E.grad(z, x, [foreign]),
        lambda: E.grad(z, x, [None], create_graph=True),
        lambda: E.grad(z, x, create_graph=1),
        lambda: E.grad(z, x, 1.0, create_graph="yes"),
        lambda: E.tangent(z, [x, x], [1.0, 1.0]),
        lambda: E.tangent(z, x, None),
        lambda: E.tangent(z, [x, y], [1.0]),
        lambda: E.tangent(z, [x, y], 1.0),
        lambda: E.tangent(z, [x, y], ["a", 1.0]),
        lambda: E.tangent(z, foreign, 1.0),
        lambda: E.tangent(z, x, foreign, create_graph=True),
        lambda: E.tangent([], x, 1.0),
    ]


def _outcome(call: Any, own: str, other: str) -> tuple[type, str]:
    """The exception type and message, with the engines' Value types named OWN and OTHER."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    message = str(info.value).replace(f"arenagrad.{other}Value", "OTHER")
    message = message.replace(f"arenagrad.{own}Value", "OWN")
    return type(info.value), message


def test_argument_errors_are_the_same_on_both_engines() -> None:
    """The checks of arenagrad.autodiff, with the same exception types and messages (each engine naming its
    own Value type); the other engine's Values are refused."""
    native = [_outcome(c, "", "reference.") for c in _grad_calls(arenagrad, reference)]
    ref = [_outcome(c, "reference.", "") for c in _grad_calls(reference, arenagrad)]
    assert native == ref

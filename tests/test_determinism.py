"""Backward's result is a function of the graph alone: the same bits whatever the arena's history.

Random programs (ops over earlier nodes, so subexpressions are shared) are run on the reference engine, which
has no history, and on the native engine after random churn of the arena (freed slots below and between
the new nodes), in threads racing other graphs, and through Tape replay. Every value and gradient must be
bit-identical (docs/guarantees.md).
"""

from __future__ import annotations

import math
import random
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arenagrad
from arenagrad import reference

UNARY = ("neg", "exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "relu", "sin", "cos", "abs")
BINARY = ("+", "-", "*", "/", "**", "**k", "r-", "r/")
NARY = ("sum", "dot", "logsumexp")
FAILURES = (ZeroDivisionError, ValueError, OverflowError)
SPECIAL = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-310, -1e-310, 700.0, -700.0, math.inf, -math.inf, math.nan)


@dataclass(frozen=True)
class Program:
    leaves: tuple[float, ...]
    steps: tuple[tuple[Any, ...], ...]  # (op, operand indexes, constant)


def same(x: float, y: float) -> bool:
    """Bit-identical up to NaN payloads, which Python cannot observe portably; the sign of zero counts."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def apply(engine: ModuleType, nodes: list[Any], step: tuple[Any, ...]) -> Any:
    op, idx, const = step
    a = nodes[idx[0]]
    if op in UNARY:
        return -a if op == "neg" else getattr(a, op)()
    if op in NARY:
        args = [nodes[i] for i in idx]
        if op == "dot":
            half = len(args) // 2
            return engine.dot(args[:half], args[half : 2 * half])
        return getattr(engine, op)([*args, const])
    b = nodes[idx[1]]
    if op == "**k":
        return a**const
    if op == "r-":
        return const - a
    if op == "r/":
        return const / a
    return {"+": a + b, "-": a - b, "*": a * b}[op] if op in "+-*" else (a / b if op == "/" else a**b)


def build(
    engine: ModuleType,
    program: Program,
    leaves: tuple[float, ...] | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[list, list]:
    """The program's nodes (leaves first) and, per step, the exception type it raised or None.

    ``between`` runs after every step (the churn below frees slots there, mid-build)."""
    nodes: list[Any] = [engine.Value(x) for x in (leaves if leaves is not None else program.leaves)]
    outcomes: list[type | None] = []
    for step in program.steps:
        try:
            nodes.append(apply(engine, nodes, step))
            outcomes.append(None)
        except FAILURES as exc:
            nodes.append(nodes[step[1][0]])  # the operand stands in, so later steps still have a node
            outcomes.append(type(exc))
        if between is not None:
            between()
    return nodes, outcomes


def gradients(
    engine: ModuleType, program: Program, roots: list[int], churn: random.Random | None = None
) -> list:
    """Values, then for each root: every leaf's grad after that root's backward (grads zeroed between).

    With ``churn``, the arena is given a history first: junk nodes occupy slots, some are freed before the
    build (holes the graph fills) and some while it is being built (so later nodes land below earlier
    ones, in new allocation runs, and backward must take its sorted path)."""
    junk: list[Any] = []
    between = None
    if churn is not None:
        junk = [engine.Value(1.0).tanh() for _ in range(churn.randrange(1, 100))]
        for _ in range(churn.randrange(len(junk) + 1) // 2):
            del junk[churn.randrange(len(junk))]
        rate = churn.random()

        def between() -> None:
            if junk and churn.random() < rate:
                del junk[churn.randrange(len(junk))]

    nodes, outcomes = build(engine, program, between=between)
    leaves = nodes[: len(program.leaves)]
    result: list = [outcomes, [n.data for n in nodes]]
    for r in roots:
        for leaf in leaves:
            leaf.grad = 0.0
        nodes[r].backward()
        result.append([leaf.grad for leaf in leaves])
    junk.clear()
    return result


def assert_same(got: list, expected: list) -> None:
    assert got[0] == expected[0], "the engines raised differently"
    for k, (g, e) in enumerate(zip(got[1:], expected[1:])):
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(g, e)) if not same(a, b)]
        assert not bad, (
            f"{'values' if k == 0 else f'grads of root {k - 1}'} differ (index, got, expected): {bad}"
        )


numbers = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(-3, 3, allow_nan=False),
    st.integers(-3, 3).map(float),
)


@st.composite
def programs(draw: Any, max_steps: int = 40) -> Program:
    leaves = tuple(draw(st.lists(numbers, min_size=1, max_size=6)))
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        n = len(leaves) + len(steps)
        # Mostly recent nodes, so graphs grow deep, with shared subexpressions.
        index = st.one_of(st.integers(max(0, n - 4), n - 1), st.integers(0, n - 1))
        op = draw(st.sampled_from(UNARY + BINARY + NARY))
        count = draw(st.integers(1, 5)) * (2 if op == "dot" else 1) if op in NARY else 2
        idx = tuple(draw(index) for _ in range(count))
        steps.append((op, idx, draw(numbers)))
    return Program(leaves, tuple(steps))


def every_root(program: Program) -> list[int]:
    return list(range(len(program.leaves), len(program.leaves) + len(program.steps)))


MAX_STEPS = 40


@settings(max_examples=300, deadline=None)
@given(program=programs(MAX_STEPS), seed=st.integers(0, 2**32 - 1))
def test_native_equals_reference_bit_for_bit_whatever_the_arena_history(program: Program, seed: int) -> None:
    """Values, errors and every leaf grad (every step is a root) are the same bits; hypothesis shrinks a
    failure to a small program."""
    roots = every_root(program)
    expected = gradients(reference, program, roots)
    assert_same(gradients(arenagrad, program, roots, churn=random.Random(seed)), expected)


GRAPHS = 100_000


@settings(max_examples=GRAPHS // MAX_STEPS, deadline=None)
@given(seed=st.integers(0, 2**64 - 1))
def test_native_equals_reference_on_1e5_graphs(seed: int) -> None:
    """The same check on 1e5 graphs: hypothesis draws one seed per 40-step program (drawing every step
    through hypothesis costs 40x more), so a failure reports the seed that rebuilds it."""
    rng = random.Random(seed)
    program = _random_program(rng, MAX_STEPS, special=True)
    roots = every_root(program)
    expected = gradients(reference, program, roots)
    assert_same(gradients(arenagrad, program, roots, churn=rng), expected)


def test_the_churn_drives_both_backward_paths() -> None:
    """The 1e5-graph check means something only if its churn sends backward down both paths."""
    stats = arenagrad.arena_stats()
    before = stats["sweeps_ordered"], stats["sweeps_dfs"]
    for seed in range(50):
        rng = random.Random(seed)
        program = _random_program(rng, MAX_STEPS, special=True)
        gradients(arenagrad, program, every_root(program), churn=rng)
    stats = arenagrad.arena_stats()
    ordered, sorted_ = stats["sweeps_ordered"] - before[0], stats["sweeps_dfs"] - before[1]
    assert ordered > 100 and sorted_ > 100, (ordered, sorted_)


def test_both_backward_paths_are_exercised_and_agree() -> None:
    """The same expression through the one-pass sweep (fresh slots) and the sorted path (a graph split
    across allocation runs by slots freed mid-build): identical bits, and each path was really taken."""
    x, w = arenagrad.Value(0.3), arenagrad.Value(-1.7)

    def expression(split: bool) -> tuple[float, float]:
        x.grad = w.grad = 0.0
        hole = (x * 3.0).exp()
        a = x * w
        if split:
            del hole  # frees slots below `a`: b lands there, in a new allocation run
        b = (a + x).tanh()
        root = (a * b + (b * w).sigmoid() * a).softplus()
        root.backward()
        return x.grad, w.grad

    def counts() -> tuple[int, int]:
        stats = arenagrad.arena_stats()
        return stats["sweeps_ordered"], stats["sweeps_dfs"]

    before = counts()
    results = [expression(split) for split in (False, True, False, True)]
    after = counts()
    assert after[0] > before[0] and after[1] > before[1], "both paths must run for this test to mean anything"
    assert all(r == results[0] for r in results)


def test_threads_building_other_graphs_do_not_change_the_bits() -> None:
    rng = random.Random(7)
    programs_ = [_random_program(rng) for _ in range(40)]
    expected = [gradients(reference, p, every_root(p)) for p in programs_]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for k in range(len(programs_)):
                i = (k + offset) % len(programs_)
                assert_same(gradients(arenagrad, programs_[i], every_root(programs_[i])), expected[i])
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, mid-graph
    try:
        threads = [threading.Thread(target=worker, args=(t * 10,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


def _leaves_below(root: Any) -> set:
    seen, stack, leaves = {root}, [root], set()
    while stack:
        for child in stack.pop()._prev:
            if child not in seen:
                seen.add(child)
                stack.append(child)
                if not child._op:
                    leaves.add(child)
    return leaves


def _random_program(rng: random.Random, steps: int = 30, special: bool = False) -> Program:
    """Steps over mostly recent nodes (deep graphs, shared subexpressions); with ``special``, a third of the
    numbers are zeros of both signs, subnormals, huge values, infinities or NaN."""

    def number() -> float:
        return rng.choice(SPECIAL) if special and rng.random() < 0.3 else rng.uniform(-2, 2)

    leaves = tuple(number() for _ in range(rng.randrange(1, 6)))
    out = []
    for _ in range(steps):
        n = len(leaves) + len(out)
        op = rng.choice(UNARY + BINARY + NARY)
        count = (rng.randrange(1, 5) * (2 if op == "dot" else 1)) if op in NARY else 2
        low = max(0, n - 5) if rng.random() < 0.8 else 0
        out.append((op, tuple(rng.randrange(low, n) for _ in range(count)), number()))
    return Program(leaves, tuple(out))


@pytest.mark.parametrize("seed", range(30))
def test_tape_replay_equals_eager_bit_for_bit(seed: int) -> None:
    """Scalar and batched replay at new inputs give eager evaluation's values and input grads, exactly."""
    rng = random.Random(seed)
    program = _random_program(rng)
    while build(arenagrad, program)[1] != [None] * len(program.steps):
        program = _random_program(rng)
    nodes, _ = build(arenagrad, program)
    root = nodes[-1]
    used = _leaves_below(root)
    inputs = [i for i in range(len(program.leaves)) if nodes[i] in used]
    leaves = [nodes[i] for i in inputs]
    tape = arenagrad.Tape(root, leaves)
    samples = [tuple(x + rng.uniform(-0.3, 0.3) for x in program.leaves) for _ in range(16)]
    eager = []
    for sample in samples:
        fresh, outcomes = build(arenagrad, program, sample)
        if any(outcomes):
            continue
        fresh[-1].backward()
        eager.append(([sample[i] for i in inputs], fresh[-1].data, [fresh[i].grad for i in inputs]))
    assert eager, "no replayable sample"
    for sample, value, grads in eager:
        for leaf in leaves:
            leaf.grad = 0.0
        tape.forward(list(sample))
        tape.backward()
        assert same(root.data, value)
        assert all(same(leaf.grad, g) for leaf, g in zip(leaves, grads))
    x = np.array([s for s, _, _ in eager])
    out = tape.forward_batch(x)
    input_grads = tape.backward_batch()
    for k, (_, value, grads) in enumerate(eager):
        assert same(float(out[k]), value)
        assert all(same(float(a), b) for a, b in zip(input_grads[k], grads))

"""The native arena's promises: memory is reclaimed, handles never dangle, errors leave it intact.

These tests talk to the native engine only; the API contract shared with the reference engine is
tested in test_reference.py and test_crosscheck.py.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest

import arenagrad
from arenagrad import Value, arena_stats


def live() -> int:
    return arena_stats()["live"]


def settled() -> int:
    """Live nodes once cyclic garbage left by earlier tests (tracebacks holding Values) is gone, so that
    no collection mid-test can move the count: the baseline for tests that count nodes."""
    gc.collect()
    return live()


def build_graph(params: list[Value], n_nodes: int) -> Value:
    """A graph of about n_nodes nodes, mixing every kind of op, over the given parameters."""
    acc = params[0] * 0.5
    i = 0
    while i < n_nodes:
        p = params[i % len(params)]
        acc = (acc * p + 0.25).tanh() + arenagrad.dot(params[:4], [1.0, 2.0, 3.0, 4.0]).relu()
        acc = acc / 3.0 - p.sigmoid() ** 2
        i += 16
    return acc


def test_a_training_loop_returns_every_node_and_stops_growing_the_arena() -> None:
    params = [Value(0.1 * k, label=f"p{k}") for k in range(8)]
    baseline = settled()
    capacities = []
    for _ in range(1000):
        loss = build_graph(params, 10_000)
        loss.backward()
        for p in params:
            p.data -= 1e-6 * p.grad
            p.grad = 0.0
        del loss
        assert live() == baseline
        stats = arena_stats()
        capacities.append((stats["capacity"], stats["pool_capacity"]))
    assert capacities[10:] == [capacities[10]] * len(capacities[10:])


def test_a_million_op_chain_backpropagates_and_frees_without_recursion() -> None:
    baseline = settled()
    x = Value(1.0)
    root = x
    for _ in range(1_000_000):
        x = x * 1.000001 + 0.0
    x.backward()
    assert root.grad == pytest.approx(1.000001**1_000_000, rel=1e-9)
    assert live() > baseline + 1_000_000
    del x, root
    assert live() == baseline


def test_a_handle_keeps_its_node_while_other_slots_are_reused() -> None:
    keep = (Value(3.0) * 2.0).tanh()
    expected = math.tanh(6.0)
    for _ in range(100):
        junk = [Value(float(i)) * 7.0 for i in range(100)]
        del junk
    assert keep.data == expected
    assert keep._op == "tanh"
    (child,) = keep._prev
    assert child.data == 6.0 and child._op == "*"


def test_a_node_without_handles_lives_as_long_as_a_parent_needs_it() -> None:
    a = Value(2.0)
    out = (a * 3.0).exp()  # the '*' node has no Python handle after this line
    gc.collect()
    (mul,) = out._prev
    assert mul.data == 6.0
    assert {c.data for c in mul._prev} == {2.0, 3.0}


def test_one_python_object_per_node_makes_prev_identity_work_like_micrograd() -> None:
    a = Value(2.0, label="a")
    b = Value(-3.0, label="b")
    c = a * b
    assert a in c._prev and b in c._prev
    d = c + a
    (first,) = [v for v in d._prev if v is c]
    assert first is c
    assert len({*d._prev, *c._prev}) == 3


def test_x_times_x_has_one_child_and_power_hides_its_constant_exponent() -> None:
    x = Value(3.0)
    assert len((x * x)._prev) == 1
    assert (x**2)._prev == {x}
    assert (x**2)._op == "**2"
    assert (x**0.5)._op == "**0.5"
    assert (x**-1)._op == "**-1"


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        (lambda v: v / 0, ZeroDivisionError),
        (lambda v: 1 / (v - 2.0), ZeroDivisionError),
        (lambda v: (v - 2.0) ** -1, ZeroDivisionError),
        (lambda v: (-v).log(), ValueError),
        (lambda v: (-v).sqrt(), ValueError),
        (lambda v: (-v) ** 0.5, ValueError),
        (lambda v: (v * 500).exp(), OverflowError),
        (lambda v: v**5000, OverflowError),
        (lambda v: v + "a", TypeError),
        (lambda v: "a" * v, TypeError),
        (lambda v: v ** [2], TypeError),
        (lambda v: pow(v, 2, 3), TypeError),
        (lambda v: arenagrad.sum([v, "a"]), TypeError),
        (lambda v: arenagrad.dot([v, v], [1.0]), ValueError),
        (lambda v: arenagrad.dot([v], ["x"]), TypeError),
        (lambda v: arenagrad.sum(5), TypeError),
        (lambda v: v + 10**400, OverflowError),
    ],
)
def test_bad_input_raises_and_leaves_the_arena_intact(expression, error) -> None:  # type: ignore[no-untyped-def]
    v = Value(2.0)
    before = arena_stats()
    with pytest.raises(error):
        expression(v)
    after = arena_stats()
    assert after["live"] == before["live"]
    assert after["pool_used"] == before["pool_used"]
    # and the engine still computes correctly
    y = (v * v + 1.0).log()
    y.backward()
    assert y.data == pytest.approx(math.log(5.0), rel=1e-15)
    assert v.grad == pytest.approx(4.0 / 5.0, rel=1e-15)


def test_setting_data_grad_and_label_checks_types() -> None:
    v = Value(1.0)
    with pytest.raises(TypeError, match="data must be a real number"):
        v.data = "x"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="grad must be a real number"):
        v.grad = None  # type: ignore[assignment]
    with pytest.raises(TypeError, match="label must be a str"):
        v.label = 3  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        del v.data
    with pytest.raises(TypeError):
        Value(1.0, label=5)  # type: ignore[arg-type]
    v.label = "weight"
    assert repr(v) == "Value(data=1.0, grad=0.0, label='weight')"


def test_labels_are_dropped_with_their_node() -> None:
    # Labels live in a table keyed by slot. The test is only meaningful if the new nodes reuse the slots of
    # the labelled ones, so it makes that certain: with no free slot left, the freed ones are the only ones.
    gc.collect()
    gc.disable()  # no collection may free other slots in between
    try:
        fillers = [Value(0.0) for _ in range(arena_stats()["free"])]
        assert arena_stats()["free"] == 0
        labelled = [Value(float(i), label=f"temporary {i}") for i in range(3)]
        labelled.append(labelled[0] + 1.0)  # an op's result and its constant leaf: 2 more slots
        labelled[-1].label = "sum"
        del labelled
        assert arena_stats()["free"] == 5
        reused = [Value(2.0) for _ in range(3)]  # no label given, and the leaf of x * 3.0 gets none either
        product = reused[0] * 3.0
        assert arena_stats()["free"] == 0, "every new node must sit in a freed, once labelled slot"
        assert [v.label for v in [*reused, product, *product._prev]] == [""] * 6
        assert repr(reused[0]) == "Value(data=2.0, grad=0.0)"
        del fillers
    finally:
        gc.enable()


def test_values_are_invisible_to_the_cyclic_gc_but_support_weakrefs() -> None:
    v = Value(1.0) + 2.0
    assert not gc.is_tracked(v)
    ref = weakref.ref(v)
    assert ref() is v
    del v
    assert ref() is None


def test_n_ary_child_pool_is_compacted_when_nodes_die() -> None:
    xs = [Value(float(i)) for i in range(64)]
    kept = arenagrad.dot(xs[:3], xs[3:6])  # a live n-ary node, whose children compaction moves around
    used = arena_stats()["pool_used"]
    capacities: list[int] = []
    # At least 2000 rounds, and enough that the entries dying after round 100 would fill the pool twice
    # over: without compaction its capacity would have to grow, whatever earlier tests left it at.
    while len(capacities) < 2000 or 192 * (len(capacities) - 100) <= 2 * capacities[100]:
        s = arenagrad.dot(xs, xs) + arenagrad.sum(xs)
        assert arena_stats()["pool_used"] == used + 2 * 64 + 64
        del s
        assert arena_stats()["pool_used"] == used  # a dead node's children are garbage at once
        capacities.append(arena_stats()["pool_capacity"])
    assert max(capacities[100:]) == capacities[100]
    assert kept.data == 0 * 3 + 1 * 4 + 2 * 5
    assert kept._prev == set(xs[:6])
    kept.backward()
    assert [x.grad for x in xs[:6]] == [3.0, 4.0, 5.0, 0.0, 1.0, 2.0]


def test_dot_and_sum_are_single_nodes_with_the_right_gradients() -> None:
    ws = [Value(1.0), Value(2.0), Value(3.0)]
    xs = [Value(4.0), Value(5.0), Value(6.0)]
    d = arenagrad.dot(ws, xs)
    assert d._op == "dot" and d.data == 32.0
    assert d._prev == {*ws, *xs}
    d.backward()
    assert [w.grad for w in ws] == [4.0, 5.0, 6.0]
    assert [x.grad for x in xs] == [1.0, 2.0, 3.0]
    s = arenagrad.sum(v for v in ws)  # any iterable
    assert s._op == "sum" and s.data == 6.0
    empty = arenagrad.sum([])
    assert empty.data == 0.0 and empty._prev == set()


def test_backward_from_a_leaf_accumulates_one() -> None:
    v = Value(5.0)
    v.backward()
    v.backward()
    assert v.grad == 2.0


def sweeps() -> tuple[int, int]:
    stats = arena_stats()
    return stats["sweeps_ordered"], stats["sweeps_dfs"]


def graph_with_reused_low_slot() -> tuple[list[Value], Value]:
    """A graph whose newest node sits in a freed slot below its child: ids are not a topological
    order any more, so backward must search the graph instead of sweeping ids."""
    a, b = Value(0.3), Value(-1.2)
    shared = (a * b).tanh()
    filler = [a + float(i) for i in range(8)]
    u = shared * a + b.exp()
    del filler  # frees slots below u
    v = (u.sigmoid() + shared) * u  # lands in a freed slot with an id below u's
    return [a, b], v


def test_backward_falls_back_to_graph_search_when_slot_reuse_breaks_id_order() -> None:
    leaves, root = graph_with_reused_low_slot()
    before = sweeps()
    root.backward()
    after = sweeps()
    assert after[1] == before[1] + 1, "expected the depth-first fallback"
    search_grads = [leaf.grad for leaf in leaves]

    # The same function built in fresh slots takes the one-pass sweep and must agree exactly.
    a, b = Value(0.3), Value(-1.2)
    shared = (a * b).tanh()
    u = shared * a + b.exp()
    v = (u.sigmoid() + shared) * u
    before = sweeps()
    v.backward()
    assert sweeps()[0] == before[0] + 1
    assert v.data == root.data
    assert [a.grad, b.grad] == pytest.approx(search_grads, rel=1e-15)


def test_a_training_loop_keeps_to_the_one_pass_sweep() -> None:
    import random

    rng = random.Random(0)
    weights = [[Value(rng.uniform(-1, 1)) for _ in range(3)] for _ in range(8)]
    head = [Value(rng.uniform(-1, 1)) for _ in range(8)]
    data = [([rng.uniform(-1, 1) for _ in range(3)], rng.choice([-1.0, 1.0])) for _ in range(20)]
    before = sweeps()
    for _ in range(10):
        losses = []
        for x, y in data:
            hidden = [sum((wi * xi for wi, xi in zip(w, x)), Value(0.0)).tanh() for w in weights]
            score = sum((h * v for h, v in zip(hidden, head)), Value(0.0))
            losses.append((1.0 - y * score).relu())
        loss = sum(losses) * (1.0 / len(losses))
        _ = (loss * 2.0).data  # a temporary that dies mid-step
        loss.backward()
        for p in [*head, *(w for row in weights for w in row)]:
            p.data -= 0.05 * p.grad
            p.grad = 0.0
    after = sweeps()
    assert after[0] - before[0] == 10 and after[1] == before[1]


# Regressions found in review: each of these once corrupted the arena or the Python heap.


def test_a_weakref_callback_never_revives_a_dying_handle() -> None:
    a = Value(1.0)
    b = a * 2.0
    kept: list[Value] = []
    ref = weakref.ref(a, lambda _: kept.extend(b._prev))  # reaches a's node while a is dying
    del a
    junk = Value(5.0)
    assert ref() is None
    assert all(k is not junk for k in kept)
    assert sorted(k.data for k in kept) == [1.0, 2.0]


def test_sum_reads_a_snapshot_of_a_list_that_user_code_mutates() -> None:
    import numbers

    class Shrinker:
        """A number whose conversion deletes the list's first Value (the last reference to it)."""

        def __init__(self, items: list[object]) -> None:
            self.items = items

        def __float__(self) -> float:
            if self.items:
                del self.items[0]
            return 1.0

    numbers.Real.register(Shrinker)
    items: list[object] = [Value(5.0) + 0.0]
    items.append(Shrinker(items))
    total = arenagrad.sum(items)
    decoys = [Value(100.0 + i) for i in range(3)]
    assert total.data == 6.0
    assert sorted(c.data for c in total._prev) == [1.0, 5.0]
    assert all(c is not d for c in total._prev for d in decoys)


def test_values_from_a_generator_stay_alive_until_retained() -> None:
    group = arenagrad.ParamGroup(Value(float(i)) for i in range(3))
    decoy = Value(42.0)
    assert group.data.tolist() == [0.0, 1.0, 2.0]
    assert decoy.data == 42.0


def test_a_batch_too_large_to_allocate_fails_cleanly_every_time() -> None:
    import numpy as np

    w = Value(2.0)
    tape = arenagrad.Tape(w * w + 1.0)  # no inputs: a (rows, 0) batch costs numpy nothing
    for _ in range(2):  # the second call once wrote into the first call's stale buffers
        with pytest.raises(MemoryError):
            tape.forward_batch(np.zeros((10**13, 0)))
    assert tape.forward_batch(np.zeros((3, 0))).tolist() == [5.0, 5.0, 5.0]


def test_micrograds_internal_constructor_form_is_explained() -> None:
    a = Value(1.0)
    with pytest.raises(TypeError, match="internal to micrograd"):
        Value(2.0, (a, a), "+")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="label must be a str, not tuple"):
        Value(2.0, (a,))  # type: ignore[arg-type]

"""pickle, copy.deepcopy and copy.copy of modules and Values, on both engines."""

from __future__ import annotations

import copy
import math
import pickle
import types
from typing import Any, Callable

import pytest

from arenagrad.nn import MLP, Layer, Module, Neuron

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def _pickled(protocol: int) -> Callable[[Any], Any]:
    return lambda obj: pickle.loads(pickle.dumps(obj, protocol))


# Every way of making an independent copy: deepcopy and a pickle round trip with each protocol.
DEEP_COPIES = [pytest.param(copy.deepcopy, id="deepcopy")] + [
    pytest.param(_pickled(p), id=f"pickle{p}") for p in PROTOCOLS
]
# copy.copy of a leaf is a new leaf as well: a Value is a node, not a container.
VALUE_COPIES = [*DEEP_COPIES, pytest.param(copy.copy, id="copy")]

BUILDERS = [
    pytest.param(lambda e: MLP(3, [4, 2], "tanh", out_activation="sigmoid", seed=1, engine=e), id="MLP"),
    pytest.param(lambda e: Layer(3, 2, "relu", seed=1, engine=e), id="Layer"),
    pytest.param(lambda e: Neuron(3, "linear", seed=1, engine=e), id="Neuron"),
]

INPUTS = [[0.5, -1.25, 2.0], [1e-3, 3.0, -0.7], [0.0, 0.0, 0.0]]


def _bits(x: float) -> str:
    return x.hex()  # equal only for the very same double: -0.0 and 0.0 differ, every NaN matches itself


def _outputs(model: Module) -> list[list[str]]:
    outs = [model(x) for x in INPUTS]
    return [[_bits(v.data) for v in (out if isinstance(out, list) else [out])] for out in outs]


def _weights(model: Module) -> dict[str, str]:
    return {name: _bits(value) for name, value in model.state_dict().items()}


@pytest.mark.parametrize("duplicate", DEEP_COPIES)
@pytest.mark.parametrize("build", BUILDERS)
def test_a_module_copy_is_independent_and_computes_the_same(engine, build, duplicate) -> None:
    model = build(engine)
    model.parameters()[0].data = -0.0  # a sign bit only an exact copy keeps
    model.parameters()[1].grad = 0.25
    clone = duplicate(model)
    assert type(clone) is type(model) and clone.engine is engine
    assert clone.config() == model.config()
    assert _weights(clone) == _weights(model)
    assert [p.grad for p in clone.parameters()] == [p.grad for p in model.parameters()]
    assert [p.label for p in clone.parameters()] == [p.label for p in model.parameters()]
    assert _outputs(clone) == _outputs(model)
    assert all(c is not p for c, p in zip(clone.parameters(), model.parameters()))

    before = _weights(model)
    for p in clone.parameters():
        p.data += 1.0
    out = clone(INPUTS[0])
    (sum(out[1:], out[0]) if isinstance(out, list) else out).backward()
    assert _weights(model) == before
    assert model.parameters()[2].grad == 0.0


@pytest.mark.parametrize("duplicate", DEEP_COPIES)
def test_a_value_shared_inside_a_module_stays_shared_in_the_copy(engine, duplicate) -> None:
    model = MLP(2, [3, 1], seed=0, engine=engine)
    model.layers[1].neurons[0].b = model.layers[0].neurons[2].b  # tied biases
    clone = duplicate(model)
    assert clone.layers[1].neurons[0].b is clone.layers[0].neurons[2].b
    assert clone.layers[1].neurons[0].b is not model.layers[0].neurons[2].b


def test_a_shallow_module_copy_shares_the_parameters(engine) -> None:
    model = Neuron(2, seed=0, engine=engine)
    clone = copy.copy(model)
    assert clone is not model and clone.engine is engine
    assert clone.w is model.w and clone.b is model.b


def test_a_pickle_stores_the_engine_by_name(engine) -> None:
    data = pickle.dumps(Neuron(2, seed=0, engine=engine))
    assert engine.__name__.encode() in data
    assert pickle.loads(data).engine is engine


@pytest.mark.parametrize("name", ["not_an_importable_engine", "json"])
def test_a_model_on_another_engine_is_refused_when_pickled(reference, name) -> None:
    """Only the two engines pickle: unpickling imports the stored name, and would import nothing else."""
    fake = types.ModuleType(name)
    fake.Value, fake.sum, fake.dot = reference.Value, reference.sum, reference.dot
    model = Neuron(2, seed=0, engine=fake)
    with pytest.raises(TypeError, match=r"neither arenagrad nor arenagrad\.reference"):
        pickle.dumps(model)
    with pytest.raises(TypeError, match=r"neither arenagrad nor arenagrad\.reference"):
        copy.deepcopy(model)


@pytest.mark.parametrize("duplicate", VALUE_COPIES)
@pytest.mark.parametrize("data", [1.5, -0.0, math.inf, math.nan, 5e-324])
def test_a_leaf_copies_as_a_new_leaf(engine, duplicate, data) -> None:
    v = engine.Value(data, label="w")
    v.grad = -2.5
    c = duplicate(v)
    assert type(c) is engine.Value and c is not v
    assert (_bits(c.data), c.grad, c.label) == (_bits(data), -2.5, "w")
    assert c._op == "" and c._prev == set()
    c.data, c.grad = 7.0, 1.0
    assert (_bits(v.data), v.grad) == (_bits(data), -2.5)


@pytest.mark.parametrize("duplicate", VALUE_COPIES)
def test_a_copied_leaf_takes_part_in_new_graphs_only(engine, duplicate) -> None:
    v = engine.Value(3.0)
    c = duplicate(v)
    (c * c).backward()
    assert (c.grad, v.grad) == (6.0, 0.0)


@pytest.mark.parametrize("duplicate", VALUE_COPIES)
@pytest.mark.parametrize(
    "make", [lambda a: a * 2.0, lambda a: a.tanh(), lambda a: -a], ids=["mul", "tanh", "neg"]
)
def test_a_graph_node_refuses_to_be_copied_and_says_what_to_do(engine, duplicate, make) -> None:
    node = make(engine.Value(0.5))
    with pytest.raises(TypeError, match=r"only leaf Values can be copied or pickled.*Use Value\(v\.data\)"):
        duplicate(node)


def test_deepcopy_keeps_one_leaf_one_leaf(engine) -> None:
    v = engine.Value(2.0)
    pair = copy.deepcopy([v, v])
    assert pair[0] is pair[1] and pair[0] is not v
    pair = pickle.loads(pickle.dumps([v, v]))
    assert pair[0] is pair[1]


class _Affine(Module):
    """A module written micrograd's way: parameters() only, no engine attribute."""

    def __init__(self, engine) -> None:
        self.a, self.b = engine.Value(2.0), engine.Value(-1.0)

    def __call__(self, x):
        return self.a * x + self.b

    def parameters(self):
        return [self.a, self.b]


@pytest.mark.parametrize("duplicate", DEEP_COPIES)
def test_a_micrograd_style_module_copies_too(engine, duplicate) -> None:
    model = _Affine(engine)
    clone = duplicate(model)
    assert [p.data for p in clone.parameters()] == [2.0, -1.0]
    assert clone(3.0).data == model(3.0).data == 5.0
    assert clone.a is not model.a

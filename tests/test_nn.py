"""arenagrad.nn: micrograd's Neuron/Layer/MLP on both engines."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from conftest import require_module

from arenagrad.losses import hinge_loss, l2_penalty
from arenagrad.nn import MLP, Layer, Neuron, engine_of, resolve_engine
from arenagrad.optim import SGD, LinearLR


def test_parameter_names_follow_the_module_tree(engine):
    model = MLP(2, [3, 1], seed=0, engine=engine)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(model.parameters()) == (2 + 1) * 3 + (3 + 1) * 1
    assert names[:4] == [
        "layers.0.neurons.0.w.0",
        "layers.0.neurons.0.w.1",
        "layers.0.neurons.0.b",
        "layers.0.neurons.1.w.0",
    ]
    assert names[-1] == "layers.1.neurons.0.b"
    # Labels carry the full path so a drawn graph shows which weight is which.
    assert [p.label for p in model.parameters()] == names
    assert [name for name, _ in Neuron(2, seed=0, engine=engine).named_parameters()] == ["w.0", "w.1", "b"]


def test_micrograd_defaults(engine):
    model = MLP(2, [4, 4, 1], engine=engine, seed=1)
    assert [layer.activation for layer in model.layers] == ["relu", "relu", "linear"]
    assert all(n.b.data == 0.0 for layer in model.layers for n in layer.neurons)
    assert all(-1.0 <= w.data < 1.0 for layer in model.layers for n in layer.neurons for w in n.w)
    out = model([0.5, -0.25])
    assert isinstance(out, engine.Value)
    several = Layer(2, 3, engine=engine, seed=1)([0.5, -0.25])
    assert isinstance(several, list) and len(several) == 3
    assert isinstance(Layer(2, 1, engine=engine, seed=1)([0.5, -0.25]), engine.Value)


def test_weights_match_micrograd_for_the_same_seed():
    micrograd_nn = require_module("micrograd.nn")
    random.seed(1337)
    theirs = micrograd_nn.MLP(2, [16, 16, 1])
    ours = MLP(2, [16, 16, 1], seed=1337, engine="reference")
    assert [p.data for p in ours.parameters()] == [p.data for p in theirs.parameters()]


def test_seed_sources_are_reproducible(engine):
    def weights(seed):
        return [p.data for p in MLP(3, [4, 2], seed=seed, engine=engine).parameters()]

    assert weights(7) == weights(7)
    assert weights(7) != weights(8)
    assert weights(random.Random(7)) == weights(7)
    assert weights(np.random.default_rng(7)) == weights(np.random.default_rng(7))
    random.seed(99)
    first = weights(None)
    random.seed(99)
    assert weights(None) == first
    # A shared Random advances: two models built from it differ, and the pair is reproducible.
    rng = random.Random(3)
    a, b = weights(rng), weights(rng)
    assert a != b
    rng = random.Random(3)
    assert (weights(rng), weights(rng)) == (a, b)


@pytest.mark.parametrize(
    ("activation", "op", "fn"),
    [
        ("relu", "ReLU", lambda z: max(z, 0.0)),
        ("tanh", "tanh", math.tanh),
        ("sigmoid", "sigmoid", lambda z: 1.0 / (1.0 + math.exp(-z))),
        ("linear", "+", lambda z: z),
    ],
)
def test_neuron_is_one_fused_dot_plus_bias(engine, activation, op, fn):
    neuron = Neuron(3, activation, seed=5, engine=engine)
    neuron.b.data = 0.25
    x = [0.5, -1.5, 2.0]
    out = neuron(x)
    assert out._op == op
    pre = out if activation == "linear" else next(iter(out._prev))
    assert pre._op == "+"
    assert sorted(child._op for child in pre._prev) == ["", "dot"]
    z = math.fsum(w.data * xi for w, xi in zip(neuron.w, x)) + 0.25
    assert out.data == pytest.approx(fn(z), rel=1e-15, abs=1e-15)


def test_forward_matches_numpy(engine):
    model = MLP(3, [5, 4, 2], "tanh", out_activation="sigmoid", seed=11, engine=engine)
    x = np.array([0.3, -0.7, 1.1])
    h = x
    for k, layer in enumerate(model.layers):
        W = np.array([[w.data for w in n.w] for n in layer.neurons])
        b = np.array([n.b.data for n in layer.neurons])
        z = W @ h + b
        h = np.tanh(z) if k < len(model.layers) - 1 else 1.0 / (1.0 + np.exp(-z))
    out = model(x)
    assert [v.data for v in out] == pytest.approx(h.tolist(), rel=1e-14)


def test_inputs_as_list_tuple_array_or_values(engine):
    model = MLP(2, [4, 1], seed=2, engine=engine)
    xs = [0.4, -1.2]
    expected = model(xs).data
    assert model(tuple(xs)).data == expected
    assert model(np.array(xs)).data == expected
    assert model([np.float64(v) for v in xs]).data == expected
    single = np.array(xs, dtype=np.float32)
    assert model(single).data == model([float(v) for v in single]).data
    inputs = [engine.Value(v) for v in xs]
    out = model(inputs)
    assert out.data == expected
    out.backward()
    # Gradients reach Value inputs, as a saliency or adversarial-example workflow needs.
    eps = 1e-6
    numeric = (model([xs[0] + eps, xs[1]]).data - model([xs[0] - eps, xs[1]]).data) / (2 * eps)
    assert inputs[0].grad == pytest.approx(numeric, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("build", "who"),
    [
        (lambda e: MLP(2, [4, 1], seed=0, engine=e), "MLP(2, [4, 1]) expects 2 inputs, got 3"),
        (lambda e: Layer(2, 4, seed=0, engine=e), "Layer expects 2 inputs, got 3"),
        (lambda e: Neuron(2, seed=0, engine=e), "Neuron expects 2 inputs, got 3"),
    ],
)
def test_wrong_input_length_is_an_error_not_a_truncation(engine, build, who):
    module = build(engine)
    with pytest.raises(ValueError, match=r"expects 2 inputs, got 3") as info:
        module([2.0, 3.0, -1.0])  # the notebooks' three inputs into an MLP(2, ...)
    assert str(info.value) == who
    with pytest.raises(ValueError, match="expects 2 inputs, got 1"):
        module(np.array([1.0]))


def test_malformed_inputs(engine):
    model = MLP(2, [1], seed=0, engine=engine)
    with pytest.raises(ValueError, match=r"1-D input of 2 values, got an array of shape \(1, 2\)"):
        model(np.array([[1.0, 2.0]]))
    with pytest.raises(TypeError, match="expects a sequence of 2 inputs"):
        model(1.0)
    with pytest.raises(TypeError, match="expects a sequence of 2 inputs"):
        model("ab")
    with pytest.raises(TypeError):
        model(["a", "b"])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e: MLP(0, [1], engine=e), ValueError, "nin must be at least 1, got 0"),
        (lambda e: MLP(2.0, [1], engine=e), TypeError, "nin must be an int, got float"),
        (lambda e: MLP(True, [1], engine=e), TypeError, "nin must be an int, got bool"),
        (lambda e: MLP(2, [], engine=e), ValueError, "nouts must list at least one layer size"),
        (lambda e: MLP(2, 3, engine=e), TypeError, "nouts must be a sequence of layer sizes, got int"),
        (
            lambda e: MLP(2, [4, 0], engine=e),
            ValueError,
            "each layer size in nouts must be at least 1, got 0",
        ),
        (lambda e: MLP(2, [1], "softmax", engine=e), ValueError, "unknown activation 'softmax'"),
        (lambda e: Layer(2, 1, out_activation="relu", engine=e), TypeError, "out_activation"),
        (lambda e: Neuron(2, seed="1337", engine=e), TypeError, "seed must be None, an int"),
        (lambda e: Neuron(2, seed=1.5, engine=e), TypeError, "got float"),
    ],
)
def test_bad_constructor_arguments(engine, call, error, message):
    with pytest.raises(error, match=message):
        call(engine)


def test_engine_selection(reference):
    assert resolve_engine("reference") is reference
    assert resolve_engine(reference) is reference
    with pytest.raises(ValueError, match="unknown engine 'gpu'"):
        resolve_engine("gpu")
    with pytest.raises(TypeError, match="exporting Value, sum and dot"):
        resolve_engine(math)
    assert engine_of(reference.Value(1.0)) is reference
    with pytest.raises(TypeError, match="expected an arenagrad Value, got float"):
        engine_of(1.0)


def test_default_engine_is_native(native):
    model = MLP(2, [1], seed=0)
    assert model.engine is native
    assert engine_of(model([1.0, 2.0])) is native


def test_inputs_from_the_other_engine_are_rejected(native, reference):
    model = MLP(2, [1], seed=0, engine=reference)
    with pytest.raises(TypeError):
        model([native.Value(1.0), native.Value(2.0)])


def test_zero_grad(engine):
    model = MLP(2, [3, 1], seed=0, engine=engine)
    model([1.0, -2.0]).backward()
    assert any(p.grad != 0.0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_state_dict_round_trip(engine):
    source = MLP(2, [4, 3, 1], "tanh", seed=1, engine=engine)
    target = MLP(2, [4, 3, 1], "tanh", seed=2, engine=engine)
    x = [0.3, -0.8]
    assert target(x).data != source(x).data
    state = source.state_dict()
    assert all(type(v) is float for v in state.values())
    assert list(state) == [name for name, _ in source.named_parameters()]
    target.load_state_dict(state)
    assert target(x).data == source(x).data
    assert target.state_dict() == state


def test_load_state_dict_rejects_mismatches_and_changes_nothing(engine):
    model = MLP(2, [3, 1], seed=1, engine=engine)
    before = model.state_dict()
    bigger = MLP(2, [4, 1], seed=1, engine=engine).state_dict()
    with pytest.raises(ValueError, match=r"missing keys \[\]") as info:
        model.load_state_dict(bigger)
    assert (
        "unexpected keys ['layers.0.neurons.3.w.0', 'layers.0.neurons.3.w.1', 'layers.0.neurons.3.b', "
        in str(info.value)
    )
    partial = dict(before)
    del partial["layers.1.neurons.0.w.2"]
    with pytest.raises(ValueError, match=r"missing keys \['layers.1.neurons.0.w.2'\] \(1\)"):
        model.load_state_dict(partial)
    bad = {**before, "layers.0.neurons.0.b": "0.5"}
    bad["layers.0.neurons.0.w.0"] = 0.123
    with pytest.raises(
        TypeError, match=r"state_dict\['layers.0.neurons.0.b'\] must be a real number, got str"
    ):
        model.load_state_dict(bad)
    with pytest.raises(TypeError, match="must be a mapping"):
        model.load_state_dict(list(before.values()))
    assert model.state_dict() == before


def _train_losses(engine, steps: int = 20) -> list[float]:
    from arenagrad.datasets import moons

    X, y = moons(n_samples=16, noise=0.1, seed=3)
    rows, labels = X.tolist(), (2 * y - 1).tolist()
    model = MLP(2, [8, 8, 1], seed=1337, engine=engine)
    optimizer = SGD(model.parameters(), lr=0.5, momentum=0.9)
    schedule = LinearLR(optimizer, start_factor=1.0, end_factor=0.1, total_iters=steps)
    losses = []
    for _ in range(steps):
        loss = hinge_loss([model(x) for x in rows], labels) + l2_penalty(model, 1e-4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.data)
    return losses


def test_same_code_same_seed_same_losses_on_both_engines(native, reference):
    native_losses = _train_losses(native)
    reference_losses = _train_losses(reference)
    assert native_losses[-1] < native_losses[0]  # it trains, so the comparison is about something
    assert native_losses == pytest.approx(reference_losses, rel=0, abs=1e-9)


def test_repr():
    assert repr(MLP(2, [16, 16, 1], seed=0, engine="reference")) == "MLP(2, [16, 16, 1], activation='relu')"
    assert repr(Layer(2, 3, "tanh", seed=0, engine="reference")) == "Layer(2, 3, activation='tanh')"
    assert repr(Neuron(2, "linear", seed=0, engine="reference")) == "Neuron(2, activation='linear')"


def test_micrograd_spellings_of_the_activation_work() -> None:
    from arenagrad.nn import Layer, Neuron

    assert Neuron(2, nonlin=False).activation == "linear"
    assert Neuron(2, False).activation == "linear"
    assert Neuron(2, nonlin=True).activation == "relu"
    assert Layer(2, 3, nonlin=False).activation == "linear"
    assert Neuron(2).nonlin and not Neuron(2, nonlin=False).nonlin


def test_a_module_written_micrograds_way_needs_only_parameters_and_call() -> None:
    from arenagrad import Value
    from arenagrad.nn import Module

    class Scale(Module):
        def __init__(self) -> None:
            self.w = Value(3.0)

        def __call__(self, x: float) -> Value:
            return self.w * x

        def parameters(self) -> list[Value]:
            return [self.w]

    model = Scale()
    model(2.0).backward()
    assert model.w.grad == 2.0
    model.zero_grad()
    assert model.w.grad == 0.0
    assert model.state_dict() == {"0": 3.0}
    with pytest.raises(NotImplementedError, match="cannot be saved"):
        model.config()


def test_load_state_dict_changes_nothing_when_a_value_is_bad() -> None:
    from arenagrad.nn import MLP

    model = MLP(2, [3, 1], seed=0)
    before = model.state_dict()
    state = dict(before)
    first, last = next(iter(state)), list(state)[-1]
    state[first] = 5.0
    state[last] = 10**400  # an int too large for a float, as a corrupt JSON file can hold
    with pytest.raises(ValueError, match="too large for a float"):
        model.load_state_dict(state)
    assert model.state_dict() == before


def test_star_import_leaves_the_builtin_sum_alone() -> None:
    namespace: dict[str, object] = {}
    exec("from arenagrad import *\nresult = sum([1, 2, 3], 10)", namespace)
    assert namespace["result"] == 16

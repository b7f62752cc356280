"""MLP.to_torch / MLP.from_torch: same weights, same outputs to 1e-12, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import require_module

from arenagrad.nn import MLP

torch = require_module("torch")
nn = torch.nn


def _inputs(nin: int) -> np.ndarray:
    return np.random.default_rng(1).normal(scale=2.0, size=(6, nin))


def _our_outputs(model: MLP, X: np.ndarray) -> list[float]:
    outs = [model(x) for x in X]
    return [v.data for out in outs for v in (out if isinstance(out, list) else [out])]


@pytest.mark.parametrize(
    ("activation", "out_activation"), [("relu", "linear"), ("tanh", "sigmoid"), ("sigmoid", "tanh")]
)
def test_to_torch_computes_the_same_function(engine, activation, out_activation):
    model = MLP(3, [6, 5, 2], activation, out_activation=out_activation, seed=4, engine=engine)
    seq = model.to_torch()
    assert isinstance(seq, nn.Sequential)
    assert all(p.dtype == torch.float64 for p in seq.parameters())
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(3, 6), (6, 5), (5, 2)]
    assert linears[0].weight[2, 1].item() == model.layers[0].neurons[2].w[1].data
    X = _inputs(3)
    with torch.no_grad():
        theirs = seq(torch.tensor(X)).flatten().tolist()
    assert _our_outputs(model, X) == pytest.approx(theirs, rel=0, abs=1e-12)


def test_default_mlp_layout():
    seq = MLP(2, [16, 16, 1], seed=0, engine="reference").to_torch()
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]


def test_to_torch_does_not_touch_torchs_random_state():
    state = torch.get_rng_state()
    MLP(2, [8, 1], seed=0, engine="reference").to_torch()
    assert torch.equal(torch.get_rng_state(), state)


def test_from_torch_computes_the_same_function(engine):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    model = MLP.from_torch(seq, engine=engine)
    assert model.config() == {"nin": 4, "nouts": [8, 8, 3], "activation": "tanh", "out_activation": "linear"}
    assert model.engine is engine
    X = _inputs(4)
    with torch.no_grad():
        theirs = seq(torch.tensor(X)).flatten().tolist()
    assert _our_outputs(model, X) == pytest.approx(theirs, rel=0, abs=1e-12)


def test_round_trip_is_exact(engine):
    model = MLP(2, [5, 1], "sigmoid", seed=8, engine=engine)
    back = MLP.from_torch(model.to_torch(), engine=engine)
    assert back.config() == model.config()
    assert back.state_dict() == model.state_dict()


def test_float32_sequential_without_bias_and_identity():
    torch.manual_seed(1)
    seq = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1), nn.Identity())
    model = MLP.from_torch(seq, engine="reference")
    assert all(n.b.data == 0.0 for n in model.layers[0].neurons)
    # float32 -> float64 is exact, so the weights are the same numbers.
    assert model.layers[0].neurons[1].w[0].data == float(seq[0].weight[1, 0].item())
    X = _inputs(2)
    with torch.no_grad():
        theirs = seq.double()(torch.tensor(X)).flatten().tolist()
    assert _our_outputs(model, X) == pytest.approx(theirs, rel=0, abs=1e-12)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: nn.Sequential(), "contains no Linear layer"),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.Dropout(), nn.Linear(3, 1)),
            r"Sequential\[1\] is Dropout",
        ),
        (
            lambda: nn.Sequential(nn.ReLU(), nn.Linear(2, 1)),
            r"Sequential\[0\] is ReLU, but an activation must come",
        ),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Tanh(), nn.Linear(3, 1)),
            r"Sequential\[2\] is Tanh",
        ),
        (lambda: nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)), "previous Linear has 3 outputs"),
        (
            lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)),
            r"hidden layers must share one activation, got \['relu', 'tanh'\]",
        ),
    ],
)
def test_from_torch_rejects_what_an_mlp_cannot_express(build, message):
    with pytest.raises(ValueError, match=message):
        MLP.from_torch(build(), engine="reference")


def test_wrong_types():
    with pytest.raises(TypeError, match=r"expects a torch\.nn\.Sequential, got Linear"):
        MLP.from_torch(nn.Linear(2, 1), engine="reference")
    from arenagrad.torch_interop import to_torch

    with pytest.raises(TypeError, match="expects an arenagrad MLP, got list"):
        to_torch([1.0])


def test_missing_torch_gives_a_clear_import_error(monkeypatch):
    model = MLP(2, [1], seed=0, engine="reference")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"PyTorch is required .*pip install torch"):
        model.to_torch()

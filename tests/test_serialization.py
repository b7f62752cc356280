"""arenagrad.serialization: exact round trips and clear errors for bad files."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from arenagrad.nn import MLP, Layer, Neuron
from arenagrad.serialization import FORMAT, VERSION, load, save


def _inputs(n: int = 5, nin: int = 3) -> list[list[float]]:
    return np.random.default_rng(0).normal(size=(n, nin)).tolist()


def _outputs(model, inputs):
    outs = [model(x) for x in inputs]
    return [[v.data for v in out] if isinstance(out, list) else out.data for out in outs]


def test_mlp_round_trip_is_bit_exact(engine, tmp_path):
    model = MLP(3, [7, 5, 2], "tanh", out_activation="sigmoid", seed=3, engine=engine)
    # Weights with long decimal expansions: only a repr-exact writer brings them back unchanged.
    for p in model.parameters():
        p.data = p.data / 3.0 + 1e-17
    path = tmp_path / "model.json"
    save(model, path)
    loaded = load(path, engine=engine)
    assert isinstance(loaded, MLP)
    assert loaded.config() == model.config()
    assert loaded.state_dict() == model.state_dict()
    assert _outputs(loaded, _inputs()) == _outputs(model, _inputs())


def test_load_on_the_other_engine(native, reference, tmp_path):
    model = MLP(3, [4, 1], seed=3, engine=native)
    save(model, tmp_path / "m.json")
    loaded = load(tmp_path / "m.json", engine=reference)
    assert loaded.engine is reference
    assert loaded.state_dict() == model.state_dict()


@pytest.mark.parametrize(
    "build",
    [lambda e: Layer(3, 4, "sigmoid", seed=1, engine=e), lambda e: Neuron(3, "linear", seed=1, engine=e)],
    ids=["Layer", "Neuron"],
)
def test_layer_and_neuron_round_trip(engine, tmp_path, build):
    model = build(engine)
    save(model, str(tmp_path / "m.json"))
    loaded = load(str(tmp_path / "m.json"), engine=engine)
    assert type(loaded) is type(model)
    assert _outputs(loaded, _inputs()) == _outputs(model, _inputs())


def test_file_format_is_documented_json(reference, tmp_path):
    model = MLP(2, [2, 1], seed=0, engine=reference)
    model.layers[0].neurons[0].w[0].data = 0.1
    save(model, tmp_path / "m.json")
    document = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert document["format"] == FORMAT == "arenagrad-model"
    assert document["version"] == VERSION == 1
    assert document["module"] == "MLP"
    assert document["config"] == {"nin": 2, "nouts": [2, 1], "activation": "relu", "out_activation": "linear"}
    assert document["parameters"] == model.state_dict()
    assert '"layers.0.neurons.0.w.0": 0.1,' in (tmp_path / "m.json").read_text(encoding="utf-8")


def test_non_finite_weights_survive(reference, tmp_path):
    model = Neuron(2, seed=0, engine=reference)
    model.w[0].data, model.w[1].data = math.inf, math.nan
    save(model, tmp_path / "m.json")
    loaded = load(tmp_path / "m.json", engine=reference)
    assert loaded.w[0].data == math.inf and math.isnan(loaded.w[1].data)


def test_load_leaves_the_global_random_state_alone(reference, tmp_path):
    save(MLP(2, [3, 1], seed=0, engine=reference), tmp_path / "m.json")
    state = random.getstate()
    load(tmp_path / "m.json", engine=reference)
    assert random.getstate() == state


def _document(reference) -> dict:
    model = MLP(2, [3, 1], seed=0, engine=reference)
    return {
        "format": FORMAT,
        "version": VERSION,
        "module": "MLP",
        "config": model.config(),
        "parameters": model.state_dict(),
    }


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def _drop_parameter(d: dict) -> dict:
    params = dict(d["parameters"])
    del params["layers.1.neurons.0.w.2"]
    return {**d, "parameters": params}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: [d], "not an arenagrad model file"),
        (lambda d: {**d, "format": "keras"}, "not an arenagrad model file"),
        (lambda d: {**d, "version": 2}, "has format version 2; this arenagrad reads version 1"),
        (lambda d: _without(d, "config"), "is missing config"),
        (lambda d: {**d, "module": "Conv2d"}, "unknown module 'Conv2d'"),
        (lambda d: {**d, "config": {**d["config"], "nin": "2"}}, "invalid MLP config"),
        (lambda d: {**d, "config": {**d["config"], "depth": 3}}, "invalid MLP config"),
        (lambda d: {**d, "config": {**d["config"], "nouts": [4, 1]}}, "parameters do not fit"),
        (_drop_parameter, r"missing keys \['layers.1.neurons.0.w.2'\]"),
        (
            lambda d: {**d, "parameters": {**d["parameters"], "layers.0.neurons.0.b": "0"}},
            "must be a real number",
        ),
        (lambda d: {**d, "parameters": [1.0, 2.0]}, "config and parameters must be JSON objects"),
    ],
)
def test_mismatched_files_raise_value_error(reference, tmp_path, mutate, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(mutate(_document(reference))), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load(path, engine=reference)


def test_truncated_and_corrupt_files_raise_value_error(reference, tmp_path):
    path = tmp_path / "m.json"
    save(MLP(2, [3, 1], seed=0, engine=reference), path)
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"is not an arenagrad model file \(corrupt or truncated"):
        load(path, engine=reference)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load(path, engine=reference)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load(path, engine=reference)


def test_missing_file_and_unsupported_objects(reference, tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.json", engine=reference)
    with pytest.raises(TypeError, match="save supports MLP, Layer, Neuron, got list"):
        save([1.0], tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_save_replaces_an_existing_file_and_leaves_no_temporary(reference, tmp_path):
    path = tmp_path / "m.json"
    path.write_text("old", encoding="utf-8")
    save(Neuron(2, seed=0, engine=reference), path)
    assert load(path, engine=reference).nin == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_save_keeps_the_permissions_a_file_would_normally_get(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    import arenagrad
    from arenagrad.nn import MLP

    model = MLP(2, [3, 1], seed=0)
    existing = tmp_path / "existing.json"
    existing.write_text("old")
    existing.chmod(0o640)
    arenagrad.save(model, existing)
    assert existing.stat().st_mode & 0o777 == 0o640
    fresh = tmp_path / "fresh.json"
    arenagrad.save(model, fresh)
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_corrupt_size_is_rejected_before_any_model_is_built(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import arenagrad
    from arenagrad.nn import MLP

    path = tmp_path / "model.json"
    arenagrad.save(MLP(2, [3, 1], seed=0), path)
    document = json.loads(path.read_text())
    document["config"]["nouts"] = [10**6, 10**3]  # a billion parameters, were it built
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="1003001000 parameters but the file holds 13"):
        arenagrad.load(path)

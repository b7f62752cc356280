"""arenagrad.serialization: exact round trips and clear errors for bad files."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import random
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

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


def _top(**changes: Any) -> Callable[[dict], dict]:
    return lambda d: {**d, **changes}


def _without(key: str) -> Callable[[dict], dict]:
    return lambda d: {k: v for k, v in d.items() if k != key}


def _config(**changes: Any) -> Callable[[dict], dict]:
    return lambda d: {**d, "config": {**d["config"], **changes}}


def _raw_config(key: str, text: str) -> Callable[[dict], str]:
    """The config entry ``key`` spelled as ``text``, which json.dumps cannot write (1e400, deep nesting)."""
    return lambda d: json.dumps(_config(**{key: "@@"})(d)).replace('"@@"', text)


def _parameters(change: Callable[[dict], dict]) -> Callable[[dict], dict]:
    return lambda d: {**d, "parameters": change(dict(d["parameters"]))}


def _drop_parameter(p: dict) -> dict:
    del p["layers.1.neurons.0.w.2"]
    return p


def _rename_parameter(p: dict) -> dict:
    p["layers.0.neurons.0.w.9"] = p.pop("layers.0.neurons.0.w.1")
    return p


def _half(d: dict) -> str:
    text = json.dumps(d)
    return text[: len(text) // 2]


DEEP = "[" * 100_000 + "]" * 100_000

HOSTILE_FILES = [
    # Not JSON, or not UTF-8.
    pytest.param(lambda d: b"", r"not an arenagrad model file \(corrupt or truncated", id="empty"),
    pytest.param(
        _half, r"corrupt or truncated: Unterminated|corrupt or truncated: Expecting", id="truncated"
    ),
    pytest.param(
        lambda d: b"\xff\xfe{\x00", r"corrupt or truncated: 'utf-8' codec can't decode", id="latin-1"
    ),
    pytest.param(lambda d: b"\x89PNG\r\n\x1a\n\x00\xff", "corrupt or truncated", id="png"),
    pytest.param(lambda d: "\ufeff" + json.dumps(d), "corrupt or truncated: Unexpected UTF-8 BOM", id="bom"),
    pytest.param(lambda d: DEEP, r"not an arenagrad model file \(its JSON is nested too deeply\)", id="deep"),
    pytest.param(_raw_config("nin", DEEP), "its JSON is nested too deeply", id="deep-in-config"),
    pytest.param(
        lambda d: json.dumps(d).replace('"version": 1,', '"version": 2, "version": 1,'),
        "corrupt or truncated: duplicate key 'version'",
        id="duplicate-key",
    ),
    # Not an arenagrad file, or another version.
    pytest.param(lambda d: [d], "not an arenagrad model file", id="array"),
    pytest.param(lambda d: "null", "not an arenagrad model file", id="null"),
    pytest.param(_top(format="keras"), "not an arenagrad model file", id="format-keras"),
    pytest.param(_without("format"), "not an arenagrad model file", id="format-missing"),
    pytest.param(
        _top(version=True), "has format version True; this arenagrad reads version 1", id="version-true"
    ),
    pytest.param(_top(version=1.0), "has format version 1.0;", id="version-float"),
    pytest.param(_top(version="1"), "has format version '1';", id="version-string"),
    pytest.param(_top(version=2), "has format version 2; this arenagrad reads version 1", id="version-2"),
    pytest.param(_without("version"), "has format version None;", id="version-missing"),
    # The document's keys.
    pytest.param(_without("config"), "is missing config", id="config-missing"),
    pytest.param(_without("parameters"), "is missing parameters", id="parameters-missing"),
    pytest.param(_top(comment="hi"), r"has unknown keys \['comment'\]", id="extra-key"),
    pytest.param(
        _top(module="Conv2d"), "unknown module 'Conv2d' \\(expected one of MLP", id="module-unknown"
    ),
    pytest.param(_top(module="Module"), "unknown module 'Module'", id="module-base-class"),
    pytest.param(_top(module=1), "unknown module 1 ", id="module-number"),
    pytest.param(_top(module=["MLP"]), r"unknown module \['MLP'\]", id="module-array"),
    pytest.param(_top(config=[2, [3, 1]]), "config and parameters must be JSON objects", id="config-array"),
    pytest.param(
        _top(parameters=[1.0, 2.0]), "config and parameters must be JSON objects", id="parameters-array"
    ),
    # The config: exact keys, sizes as JSON integers of at least 1, activations by name.
    pytest.param(
        _config(nin="2"),
        "invalid MLP config: 'nin' must be an integer from 1 to 4294967295, got '2'",
        id="nin-string",
    ),
    pytest.param(_config(nin=True), "'nin' must be an integer from 1 to 4294967295, got True", id="nin-true"),
    pytest.param(_config(nin=2.0), "'nin' must be an integer from 1 to 4294967295, got 2.0", id="nin-float"),
    pytest.param(_config(nin=None), "'nin' must be an integer from 1 to 4294967295, got None", id="nin-null"),
    pytest.param(_config(nin=0), "'nin' must be an integer from 1 to 4294967295, got 0", id="nin-zero"),
    pytest.param(_config(nin=-2), "'nin' must be an integer from 1 to 4294967295, got -2", id="nin-negative"),
    pytest.param(
        _raw_config("nin", "Infinity"),
        "'nin' must be an integer from 1 to 4294967295, got inf",
        id="nin-Infinity",
    ),
    pytest.param(
        _raw_config("nin", "1e400"), "'nin' must be an integer from 1 to 4294967295, got inf", id="nin-1e400"
    ),
    pytest.param(
        _raw_config("nin", "-1e400"),
        "'nin' must be an integer from 1 to 4294967295, got -inf",
        id="nin-minus-1e400",
    ),
    pytest.param(
        _raw_config("nin", "NaN"), "'nin' must be an integer from 1 to 4294967295, got nan", id="nin-NaN"
    ),
    pytest.param(_config(nin=2**32), "'nin' must be .*, got 4294967296", id="nin-2**32"),
    pytest.param(
        _raw_config("nin", "1" + "0" * 100), "'nin' must be .*, got 1000+\\.\\.\\.0+", id="nin-1e100"
    ),
    pytest.param(
        # Python refuses to read integers of over 4300 digits (since 3.11 and in security releases before).
        _raw_config("nin", "9" * 5000),
        r"corrupt or truncated: Exceeds the limit|'nin' must be",
        id="nin-5000-digits",
    ),
    pytest.param(
        _config(nin=2**32 - 1), f"has {2**32 * 3 + 4} parameters but the file holds 13", id="nin-widest"
    ),
    pytest.param(
        _config(nouts=[]),
        "'nouts' must be a non-empty array of integers from 1 to 4294967295",
        id="nouts-empty",
    ),
    pytest.param(
        _config(nouts=3),
        "'nouts' must be a non-empty array of integers from 1 to 4294967295, got 3",
        id="nouts-int",
    ),
    pytest.param(_config(nouts=[3, True]), r"'nouts' must be .*, got \[3, True\]", id="nouts-bool"),
    pytest.param(_config(nouts=[3, -1]), r"'nouts' must be .*, got \[3, -1\]", id="nouts-negative"),
    pytest.param(_config(nouts=[[3], 1]), r"'nouts' must be .*, got \[\[3\], 1\]", id="nouts-nested"),
    pytest.param(
        _config(activation="gelu"),
        "'activation' must be one of 'relu', 'tanh', 'sigmoid', 'linear', got 'gelu'",
        id="activation-unknown",
    ),
    pytest.param(_config(activation=True), "'activation' must be one of .*, got True", id="activation-bool"),
    pytest.param(_config(out_activation=None), "'out_activation' must be one of .*, got None", id="out-null"),
    pytest.param(
        _config(depth=3), r"invalid MLP config: unknown keys \['depth'\] \(it must have exactly", id="depth"
    ),
    pytest.param(
        lambda d: {**d, "config": {k: v for k, v in d["config"].items() if k != "out_activation"}},
        r"invalid MLP config: missing keys \['out_activation'\]",
        id="config-key-missing",
    ),
    pytest.param(
        _top(config={"nin": 2, "nout": 1, "activation": "relu"}), r"missing keys \['nouts", id="layer-config"
    ),
    # The parameters: names and count from the config, values real numbers.
    pytest.param(_config(nouts=[4, 1]), "parameters do not fit the saved architecture", id="wrong-count"),
    pytest.param(
        _parameters(_drop_parameter), r"missing keys \['layers.1.neurons.0.w.2'\]", id="param-missing"
    ),
    pytest.param(
        _parameters(_rename_parameter), r"unexpected keys \['layers.0.neurons.0.w.9'\]", id="param-name"
    ),
    pytest.param(
        _parameters(lambda p: {**p, "extra": 1.0}), r"unexpected keys \['extra'\]", id="param-extra"
    ),
    pytest.param(
        _parameters(lambda p: {**p, "layers.0.neurons.0.b": "0"}),
        "must be a real number, got str",
        id="param-str",
    ),
    pytest.param(
        _parameters(lambda p: {**p, "layers.0.neurons.0.b": True}),
        "must be a real number, got bool",
        id="param-bool",
    ),
    pytest.param(
        _parameters(lambda p: {**p, "layers.0.neurons.0.b": None}),
        "must be a real number, got NoneType",
        id="param-null",
    ),
    pytest.param(
        _parameters(lambda p: {**p, "layers.0.neurons.0.b": [0.5]}),
        "must be a real number, got list",
        id="param-array",
    ),
    pytest.param(
        _parameters(lambda p: {**p, "layers.0.neurons.0.b": 10**400}),
        "is too large for a float",
        id="param-huge-int",
    ),
]


@pytest.mark.parametrize(("make", "message"), HOSTILE_FILES)
def test_every_malformed_file_raises_a_value_error_naming_the_problem(
    reference, tmp_path, make, message
) -> None:
    content = make(_document(reference))
    if isinstance(content, (dict, list)):
        content = json.dumps(content)
    path = tmp_path / "m.json"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    with pytest.raises(ValueError, match=message) as excinfo:
        load(path, engine=reference)
    assert type(excinfo.value) is ValueError  # not a JSONDecodeError or UnicodeDecodeError leaking through
    assert repr(str(path)) in str(excinfo.value)


def test_parameters_may_be_non_finite_in_any_spelling_and_integers(reference, tmp_path) -> None:
    path = tmp_path / "m.json"
    text = json.dumps(_document(reference)).replace(
        '"layers.0.neurons.0.b": 0.0', '"layers.0.neurons.0.b": 1e400'
    )
    text = text.replace('"layers.0.neurons.1.b": 0.0', '"layers.0.neurons.1.b": -Infinity')
    text = text.replace('"layers.0.neurons.2.b": 0.0', '"layers.0.neurons.2.b": NaN')
    text = text.replace('"layers.1.neurons.0.b": 0.0', '"layers.1.neurons.0.b": 3')
    path.write_text(text, encoding="utf-8")
    biases = [n.b.data for layer in load(path, engine=reference).layers for n in layer.neurons]
    assert biases[0] == math.inf and biases[1] == -math.inf and math.isnan(biases[2]) and biases[3] == 3.0


def test_unsupported_objects_are_not_saved(tmp_path):
    with pytest.raises(TypeError, match="save supports MLP, Layer, Neuron, got list"):
        save([1.0], tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        pytest.param(lambda p: None, FileNotFoundError, id="missing"),
        pytest.param(lambda p: p.mkdir(), IsADirectoryError, id="directory"),
        pytest.param(lambda p: os.symlink(p.parent / "absent", p), FileNotFoundError, id="dangling-symlink"),
    ],
)
def test_load_raises_the_os_error_naming_the_path(reference, tmp_path, setup, error) -> None:
    path = tmp_path / "m.json"
    setup(path)
    with pytest.raises(error, match=re.escape(str(path))):
        load(path, engine=reference)


def test_load_of_an_unreadable_file_raises_permission_error(reference, tmp_path, monkeypatch) -> None:
    path = tmp_path / "m.json"
    save(Neuron(2, seed=0, engine=reference), path)
    path.chmod(0)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root reads any file: make the OS refuse as it would
        real_open = os.open

        def refusing_open(file, *args, **kwargs):
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(PermissionError, match=re.escape(str(path))):
        load(path, engine=reference)


def test_save_replaces_an_existing_file_and_leaves_no_temporary(reference, tmp_path):
    path = tmp_path / "m.json"
    path.write_text("old", encoding="utf-8")
    save(Neuron(2, seed=0, engine=reference), path)
    assert load(path, engine=reference).nin == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_failed_save_keeps_the_old_file_and_names_the_callers_path(
    reference, tmp_path, monkeypatch
) -> None:
    path = tmp_path / "m.json"
    path.write_text("old", encoding="utf-8")

    def replace(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match=re.escape(str(path))) as excinfo:
        save(Neuron(2, seed=0, engine=reference), path)
    assert excinfo.value.errno == errno.EXDEV and ".arenagrad-" not in str(excinfo.value)
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_save_into_a_missing_directory_names_the_callers_path(reference, tmp_path) -> None:
    path = tmp_path / "absent" / "m.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))) as excinfo:
        save(Neuron(2, seed=0, engine=reference), path)
    assert ".arenagrad-" not in str(excinfo.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("via_symlink", [False, True], ids=["fifo", "symlink-to-fifo"])
def test_save_refuses_a_fifo_and_leaves_it_alone(reference, tmp_path, via_symlink) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    path = tmp_path / "m.json" if via_symlink else fifo
    if via_symlink:
        path.symlink_to(fifo)
    with pytest.raises(
        OSError, match=rf"{re.escape(repr(str(path)))} is not a regular file \(it is a FIFO\)"
    ):
        save(Neuron(2, seed=0, engine=reference), path)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert path.is_symlink() == via_symlink
    assert len(list(tmp_path.iterdir())) == 1 + via_symlink  # no temporary left behind


@pytest.mark.parametrize("via_symlink", [False, True], ids=["directory", "symlink-to-directory"])
def test_save_refuses_a_directory_and_leaves_it_alone(reference, tmp_path, via_symlink) -> None:
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / "keep.txt").write_text("keep", encoding="utf-8")
    path = tmp_path / "m.json" if via_symlink else directory
    if via_symlink:
        path.symlink_to(directory)
    with pytest.raises(IsADirectoryError, match=re.escape(str(path))):
        save(Neuron(2, seed=0, engine=reference), path)
    assert directory.is_dir() and [p.name for p in directory.iterdir()] == ["keep.txt"]
    assert path.is_symlink() == via_symlink


def test_save_to_a_path_ending_in_a_separator_creates_nothing(reference, tmp_path) -> None:
    path = str(tmp_path / "models") + os.sep
    with pytest.raises(IsADirectoryError, match=re.escape(path)):
        save(Neuron(2, seed=0, engine=reference), path)
    assert list(tmp_path.iterdir()) == []


def test_save_writes_through_a_symlink_to_its_target(reference, tmp_path) -> None:
    (tmp_path / "links").mkdir()
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "model.json"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    link = tmp_path / "links" / "m.json"
    link.symlink_to(os.path.join("..", "store", "model.json"))  # relative, as `ln -s` users write them
    model = Neuron(2, seed=0, engine=reference)
    save(model, link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "store", "model.json")
    assert load(target, engine=reference).state_dict() == model.state_dict()
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in (tmp_path / "links").iterdir()] == ["m.json"]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["model.json"]


def test_save_through_a_dangling_symlink_creates_its_target_like_open(reference, tmp_path) -> None:
    link, target = tmp_path / "m.json", tmp_path / "target.json"
    link.symlink_to(target)
    save(Neuron(2, seed=0, engine=reference), link)
    assert link.is_symlink() and target.is_file()
    assert load(link, engine=reference).nin == 2


def _umask_must_not_be_called(*args: object) -> int:
    raise AssertionError("os.umask changes the mode of files every thread creates meanwhile")


@pytest.fixture(params=[0o022, 0o002, 0o027, 0o077], ids=oct)
def umask(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Each umask in turn, with os.umask made to fail while the test runs."""
    real_umask = os.umask
    old = real_umask(request.param)
    monkeypatch.setattr(os, "umask", _umask_must_not_be_called)
    yield request.param
    real_umask(old)


def test_a_new_file_gets_the_mode_open_gives_and_the_umask_is_left_alone(reference, tmp_path, umask) -> None:
    with open(tmp_path / "by-open.json", "w", encoding="utf-8"):
        pass
    save(Neuron(2, seed=0, engine=reference), tmp_path / "m.json")
    mode = (tmp_path / "m.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "by-open.json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("mode", [0o640, 0o666, 0o600, 0o444], ids=oct)
def test_a_replaced_file_keeps_its_mode(reference, tmp_path, umask, mode) -> None:
    path = tmp_path / "m.json"
    path.write_text("old", encoding="utf-8")
    path.chmod(mode)
    save(Neuron(2, seed=0, engine=reference), path)
    assert path.stat().st_mode & 0o777 == mode
    assert load(path, engine=reference).nin == 2


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


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "fifo"])
def test_load_refuses_special_files_instead_of_blocking_or_reading_forever(reference, tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "pipe")
        os.mkfifo(special)  # opening it for reading would block until a writer came
    with pytest.raises(OSError, match="not a regular file"):
        load(special, engine=reference)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_checks_the_file_it_opened_so_a_swapped_in_fifo_cannot_block_it(
    reference, tmp_path, monkeypatch
) -> None:
    # A path that was a regular file when checked and a FIFO when opened: checking with os.stat, then opening
    # the path again, would block until a writer came. Here os.stat reports the regular file it saw before the
    # swap; a watchdog thread plays the writer after a few seconds, so that a blocked load fails, not hangs.
    regular, fifo = tmp_path / "m.json", tmp_path / "swapped.json"
    save(Neuron(2, seed=0, engine=reference), regular)
    os.mkfifo(fifo)
    real_stat = os.stat

    def stale_stat(path, *args, **kwargs):
        return real_stat(regular if os.fspath(path) == str(fifo) else path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stale_stat)
    done = threading.Event()

    def unblock() -> None:
        if not done.wait(5):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Thread(target=unblock)
    watchdog.start()
    try:
        with pytest.raises(OSError, match=r"is not a regular file \(it is a FIFO\)"):
            load(fifo, engine=reference)
    finally:
        done.set()
        watchdog.join()


def test_save_syncs_the_data_to_disk_before_the_rename(reference, tmp_path, monkeypatch) -> None:
    # Without the fsync, a crash can leave the rename on disk but not the data: an empty or truncated model.
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.isdir("/proc/self/fd") else ""))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(Neuron(2, seed=0, engine=reference), tmp_path / "m.json")
    assert [what for what, _ in events] == ["fsync", "replace"]
    if events[0][1]:
        assert events[0][1] == events[1][1]  # the temporary file's data is what was synced


def test_save_to_an_empty_path_raises_file_not_found_like_open(reference, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as excinfo:
        open("", "w")  # what save must match
    with pytest.raises(FileNotFoundError) as saved:
        save(Neuron(2, seed=0, engine=reference), "")
    assert (saved.value.errno, saved.value.filename) == (excinfo.value.errno, "")
    assert os.listdir(tmp_path) == []


def test_unpickling_imports_no_engine_but_the_two(reference, tmp_path, monkeypatch) -> None:
    # A pickle names its engine module; loading it must not import whatever module the bytes name.
    (tmp_path / "planted_engine.py").write_text("raise AssertionError('the planted module was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = pickle.dumps(Neuron(2, seed=0, engine=reference), protocol=0)
    name = b"\nVarenagrad.reference\n"  # protocol 0 writes the engine's name as a text line
    assert data.count(name) == 1
    with pytest.raises(TypeError, match="unknown engine 'planted_engine'"):
        pickle.loads(data.replace(name, b"\nVplanted_engine\n"))
    assert "planted_engine" not in sys.modules
    assert pickle.loads(data).engine is reference

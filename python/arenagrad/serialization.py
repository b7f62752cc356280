"""Saving and loading models (`MLP`, `Layer`, `Neuron`) as JSON files.

Format, version 1: one UTF-8 JSON object::

    {
      "format": "arenagrad-model",
      "version": 1,
      "module": "MLP",
      "config": {"nin": 2, "nouts": [16, 16, 1], "activation": "relu", "out_activation": "linear"},
      "parameters": {"layers.0.neurons.0.w.0": -0.2397..., ..., "layers.2.neurons.0.b": 0.4...}
    }

``module`` is ``MLP``, ``Layer`` (config ``nin``, ``nout``, ``activation``) or ``Neuron`` (``nin``,
``activation``); ``parameters`` is the module's ``state_dict()``. Floats are written by Python's ``repr``, the
shortest text that reads back to the same double, so a loaded model computes bit-identical outputs. Non-finite
weights are written as ``NaN``/``Infinity``, which Python's json reads back. Readers reject other versions.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Union

from .nn import MLP, EngineLike, Layer, Module, Neuron, resolve_engine

__all__ = ["FORMAT", "VERSION", "load", "save"]

FORMAT = "arenagrad-model"
VERSION = 1
_MODULES: dict[str, type[Module]] = {"MLP": MLP, "Layer": Layer, "Neuron": Neuron}

PathLike = Union[str, "os.PathLike[str]"]


def save(model: Module, path: PathLike) -> None:
    """Write ``model``'s architecture and weights to ``path`` (replacing the file atomically)."""
    name = type(model).__name__
    if _MODULES.get(name) is not type(model):
        raise TypeError(f"save supports {', '.join(_MODULES)}, got {name}")
    document = {
        "format": FORMAT,
        "version": VERSION,
        "module": name,
        "config": model.config(),
        "parameters": {key: float(value) for key, value in model.state_dict().items()},
    }
    text = json.dumps(document, indent=1)
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    # Write to a temporary file and rename, so a crash never leaves a truncated model behind.
    fd, tmp = tempfile.mkstemp(prefix=".arenagrad-", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; keep what open() would have given
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _file_mode(path: PathLike) -> int:
    """The permissions of the file being replaced, or those a new file gets under the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _parameter_count(name: str, config: dict[str, Any]) -> int | None:
    """How many parameters the saved architecture has, or None when the config is malformed (the
    constructor then says what is wrong)."""
    try:
        if name == "Neuron":
            return int(config["nin"]) + 1
        if name == "Layer":
            return (int(config["nin"]) + 1) * int(config["nout"])
        sizes = [int(config["nin"]), *(int(n) for n in config["nouts"])]
        return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    except (KeyError, TypeError, ValueError):
        return None


def load(path: PathLike, *, engine: EngineLike = None) -> Module:
    """Rebuild the model saved at ``path`` on ``engine`` (None: native). Raises ValueError for a bad file."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both derive from ValueError
        raise ValueError(
            f"{os.fspath(path)!r} is not an arenagrad model file (corrupt or truncated: {exc})"
        ) from None
    return _from_document(document, os.fspath(path), engine)


def _from_document(document: Any, where: str, engine: EngineLike) -> Module:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f'{where!r} is not an arenagrad model file (no "format": {FORMAT!r} marker)')
    version = document.get("version")
    if version != VERSION:
        raise ValueError(f"{where!r} has format version {version!r}; this arenagrad reads version {VERSION}")
    missing = [key for key in ("module", "config", "parameters") if key not in document]
    if missing:
        raise ValueError(f"{where!r} is missing {', '.join(missing)}")
    cls = _MODULES.get(document["module"]) if isinstance(document["module"], str) else None
    if cls is None:
        raise ValueError(
            f"{where!r}: unknown module {document['module']!r} (expected one of {', '.join(_MODULES)})"
        )
    config, parameters = document["config"], document["parameters"]
    if not isinstance(config, dict) or not isinstance(parameters, dict):
        raise ValueError(f"{where!r}: config and parameters must be JSON objects")
    expected = _parameter_count(cls.__name__, config)
    # Small mismatches are built and reported key by key by load_state_dict; a size far beyond what the
    # file holds is refused before anything is allocated.
    if expected is not None and expected > 2 * len(parameters) + 64:
        raise ValueError(
            f"{where!r}: the {cls.__name__} config {config!r} has {expected} parameters but the file holds "
            f"{len(parameters)}"
        )
    engine_module = resolve_engine(engine)
    try:
        # seed=0: the weights are overwritten at once; a private stream leaves the global random state alone.
        model = cls(**config, seed=0, engine=engine_module)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where!r}: invalid {cls.__name__} config {config!r}: {exc}") from None
    try:
        model.load_state_dict(parameters)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where!r}: parameters do not fit the saved architecture: {exc}") from None
    return model

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
weights are written as ``NaN``/``Infinity``, which Python's json reads back.

Readers are strict: exactly the five keys above and the module's config keys, sizes as JSON integers of at
least 1, activations as strings, no repeated keys. Any other file, or another version, is rejected with a
ValueError that names the problem.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import reprlib
import secrets
import stat
from collections.abc import Callable
from types import ModuleType
from typing import Any, Union

from .nn import ACTIVATIONS, MLP, EngineLike, Layer, Module, Neuron, resolve_engine

__all__ = ["FORMAT", "VERSION", "load", "save"]

FORMAT = "arenagrad-model"
VERSION = 1
# Constructors taking (**config, seed=, engine=): Module's own signature does not promise those keywords.
_MODULES: dict[str, Callable[..., Module]] = {"MLP": MLP, "Layer": Layer, "Neuron": Neuron}
_DOCUMENT_KEYS = ("format", "version", "module", "config", "parameters")

PathLike = Union[str, "os.PathLike[str]"]


def save(model: Module, path: PathLike) -> None:
    """Write ``model``'s architecture and weights to ``path``, replacing the file atomically.

    A symlink is written through: its target is replaced and the link stays a link. A path that names anything
    but a regular file (a directory, FIFO, device or socket) raises an OSError and is left untouched. A new
    file gets the permissions ``open(path, "w")`` would give it; a replaced file keeps its own."""
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
    where = os.fsdecode(path)
    try:
        _replace(where, text)
    except OSError as exc:
        if exc.errno is None or (exc.filename == where and exc.filename2 is None):
            raise
        # An error about the temporary file would name it; the caller only knows the path they passed.
        raise OSError(exc.errno, exc.strerror, where) from exc


def _replace(where: str, text: str) -> None:
    """Atomically replace the regular file at ``where`` (or its symlink's target) with ``text``."""
    if where.endswith(os.sep) or (os.altsep and where.endswith(os.altsep)):
        # realpath would drop the slash and save() would create a file where the caller meant a directory.
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
    # Like open(path, "w"), follow symlinks: the file replaced is the link's target, and the link survives.
    target = os.path.realpath(where)
    try:
        mode: int | None = _regular_file_mode(target, where)
    except FileNotFoundError:
        mode = None
    directory = os.path.dirname(target)
    # The temporary file lives next to the target so that the rename stays on one filesystem and is atomic:
    # a crash never leaves a truncated model behind. O_EXCL makes a new file, never one planted there.
    tmp = os.path.join(directory, f".arenagrad-{secrets.token_hex(8)}.tmp")
    # 0o666 less the umask (applied by the kernel) is exactly what open(path, "w") gives a new file. Reading
    # the umask would mean setting it, for a moment, for every thread of the process.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # a replaced file keeps its permissions
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _regular_file_mode(target: str, where: str) -> int:
    """The permission bits of the existing file ``target`` (the resolved ``where``), which must be regular."""
    mode = os.stat(target).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
    if not stat.S_ISREG(mode):
        # Renaming over a device or FIFO would destroy it (saving to /dev/null as root replaced the device),
        # and writing into one cannot be atomic. It is an OSError, like shutil's SpecialFileError: what sits
        # at a path is a fact about the filesystem, not a bad argument, and callers that handle failed writes
        # already catch OSError.
        kind = _KINDS.get(stat.S_IFMT(mode), "special file")
        raise OSError(
            f"{where!r} is not a regular file (it is a {kind}); save() writes model files only, replacing "
            "them atomically"
        )
    return mode & 0o777


_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


def load(path: PathLike, *, engine: EngineLike = None) -> Module:
    """Rebuild the model saved at ``path`` on ``engine`` (None: native).

    A malformed file raises ValueError saying what is wrong with it; a file that cannot be read raises the
    OSError of ``open(path)``, which names ``path``."""
    engine_module = resolve_engine(engine)  # the caller's mistake, reported before any file's
    where = os.fsdecode(path)
    mode = os.stat(path).st_mode  # FileNotFoundError etc. name the path
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a directory gets open()'s IsADirectoryError
        # Reading a FIFO blocks until a writer comes, and a device like /dev/zero never ends.
        kind = _KINDS.get(stat.S_IFMT(mode), "special file")
        raise OSError(f"{where!r} is not a regular file (it is a {kind}); load() reads model files only")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:  # the json module recurses once per nesting level
        raise ValueError(
            f"{where!r} is not an arenagrad model file (its JSON is nested too deeply)"
        ) from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError and _unique_keys' errors
        raise ValueError(f"{where!r} is not an arenagrad model file (corrupt or truncated: {exc})") from None
    return _from_document(document, where, engine_module)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of repeated keys silently; another reader may keep the first. Refuse ambiguity.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document


# No module can be wider: the native arena numbers its nodes with 32-bit ids. The bound also keeps the
# parameter count computed from a hostile config a printable number.
_MAX_SIZE = 2**32 - 1


def _is_size(value: Any) -> bool:
    # Exactly int: json reads true as a bool, which is an int subclass.
    return type(value) is int and 1 <= value <= _MAX_SIZE


# Per module, every config key with what its value must be; save() writes them all, load() wants them all.
_Check = tuple[Callable[[Any], bool], str]
_SIZE: _Check = (_is_size, f"an integer from 1 to {_MAX_SIZE}")
_SIZES: _Check = (
    lambda v: type(v) is list and len(v) > 0 and all(_is_size(n) for n in v),
    f"a non-empty array of integers from 1 to {_MAX_SIZE}",
)
_ACTIVATION: _Check = (
    lambda v: type(v) is str and v in ACTIVATIONS,
    f"one of {', '.join(repr(a) for a in ACTIVATIONS)}",
)
_CONFIGS: dict[str, dict[str, _Check]] = {
    "MLP": {"nin": _SIZE, "nouts": _SIZES, "activation": _ACTIVATION, "out_activation": _ACTIVATION},
    "Layer": {"nin": _SIZE, "nout": _SIZE, "activation": _ACTIVATION},
    "Neuron": {"nin": _SIZE, "activation": _ACTIVATION},
}


def _config_problem(name: str, config: dict[str, Any]) -> str | None:
    """What is wrong with a ``name`` module's config, or None."""
    checks = _CONFIGS[name]
    missing = [key for key in checks if key not in config]
    unknown = [key for key in config if key not in checks]
    if missing or unknown:
        wrong = f"missing keys {missing}" if missing else f"unknown keys {reprlib.repr(unknown)}"
        return f"{wrong} (it must have exactly {list(checks)})"
    for key, (check, what) in checks.items():
        if not check(config[key]):
            # reprlib: a hostile value may be huge or deeply nested.
            return f"{key!r} must be {what}, got {reprlib.repr(config[key])}"
    return None


def _parameter_count(name: str, config: dict[str, Any]) -> int:
    """How many parameters a validated ``name`` config describes."""
    if name == "Neuron":
        return config["nin"] + 1
    if name == "Layer":
        return (config["nin"] + 1) * config["nout"]
    sizes = [config["nin"], *config["nouts"]]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def _from_document(document: Any, where: str, engine: ModuleType) -> Module:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f'{where!r} is not an arenagrad model file (no "format": {FORMAT!r} marker)')
    version = document.get("version")
    if type(version) is not int or version != VERSION:  # true == 1 and 1.0 == 1, but neither is version 1
        raise ValueError(
            f"{where!r} has format version {reprlib.repr(version)}; this arenagrad reads version {VERSION}"
        )
    missing = [key for key in _DOCUMENT_KEYS if key not in document]
    if missing:
        raise ValueError(f"{where!r} is missing {', '.join(missing)}")
    # Unknown keys are refused like unknown config and state_dict keys: a version 1 file holds nothing else,
    # so one is a typo, corruption or a newer writer's data that would otherwise be dropped silently.
    unknown = [key for key in document if key not in _DOCUMENT_KEYS]
    if unknown:
        raise ValueError(f"{where!r} has unknown keys {reprlib.repr(unknown)}")
    module = document["module"]
    cls = _MODULES.get(module) if type(module) is str else None
    if cls is None:
        raise ValueError(
            f"{where!r}: unknown module {reprlib.repr(module)} (expected one of {', '.join(_MODULES)})"
        )
    config, parameters = document["config"], document["parameters"]
    if not isinstance(config, dict) or not isinstance(parameters, dict):
        raise ValueError(f"{where!r}: config and parameters must be JSON objects")
    problem = _config_problem(module, config)
    if problem:
        raise ValueError(f"{where!r}: invalid {module} config: {problem}")
    expected = _parameter_count(module, config)
    # Small mismatches are built and reported key by key by load_state_dict; a size far beyond what the
    # file holds is refused before anything is allocated.
    if expected > 2 * len(parameters) + 64:
        raise ValueError(
            f"{where!r}: the {module} config {reprlib.repr(config)} has {expected} parameters but the file "
            f"holds {len(parameters)}"
        )
    # seed=0: the weights are overwritten at once; a private stream leaves the global random state alone.
    model = cls(**config, seed=0, engine=engine)
    try:
        model.load_state_dict(parameters)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where!r}: parameters do not fit the saved architecture: {exc}") from None
    return model

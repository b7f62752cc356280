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
    but a regular file (a directory, FIFO, device or socket) raises an OSError and is left untouched, and so
    does a path ending in a separator; an empty path raises FileNotFoundError, as ``open("")`` does. A new
    file gets the permissions ``open(path, "w")`` would give it; a replaced file keeps its own. The data
    reaches the disk (fsync) before the rename, so a crash leaves the old file or the new one, never a
    truncated one."""
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
    _atomic_write_bytes(path, json.dumps(document, indent=1).encode("utf-8"))


def _atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically, by save()'s rules (its docstring).

    The one writer of every file arenagrad makes: models (save), plots (``train --plot``) and graphs
    (``draw -o``). An error is an OSError naming ``path`` as the caller gave it."""
    where = os.fsdecode(path)
    try:
        target, mode = _resolve_target(where)
        _replace(target, mode, data)
    except OSError as exc:
        if exc.errno is None or (exc.filename == where and exc.filename2 is None):
            raise
        # An error about the temporary file would name it; the caller only knows the path they passed.
        raise OSError(exc.errno, exc.strerror, where) from exc


def _resolve_target(where: str) -> tuple[str, int | None]:
    """The file that writing ``where`` replaces, symlinks resolved, and its mode bits (None: no file yet).

    Raises the OSError that writing would: FileNotFoundError for an empty path (as open("") does),
    IsADirectoryError for a directory or a path ending in a separator, _NotRegularFile for a FIFO, device or
    socket, and whatever os.stat raises but FileNotFoundError (a missing file is created)."""
    if not where:
        # realpath("") is the current directory: without this, "" would read as a directory.
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), where)
    if where.endswith(os.sep) or (os.altsep and where.endswith(os.altsep)):
        # realpath would drop the separator and a file would be created where the caller meant a directory.
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
    # Like open(path, "w"), follow symlinks: the file replaced is the link's target, and the link survives.
    target = os.path.realpath(where)
    try:
        return target, _regular_file_mode(target, where)
    except FileNotFoundError:
        return target, None


def _create_temporary(directory: str) -> tuple[int, str]:
    """A new, empty file in ``directory``, opened for writing: its descriptor and path."""
    tmp = os.path.join(directory, f".arenagrad-{secrets.token_hex(8)}.tmp")
    # O_EXCL makes a new file, never one planted there. 0o666 less the umask (applied by the kernel) is
    # exactly what open(path, "w") gives a new file; reading the umask would mean setting it, for a moment,
    # for every thread of the process.
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp


def _replace(target: str, mode: int | None, data: bytes) -> None:
    """Atomically replace the file ``target`` (mode ``mode``, None: new) with ``data``."""
    # The temporary file lives next to the target so that the rename stays on one filesystem and is atomic.
    fd, tmp = _create_temporary(os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # a replaced file keeps its permissions
            f.write(data)
            # On disk before the rename: after a crash the path holds the old file or the whole new one,
            # never a truncated one (without it, the rename can reach the disk before the data).
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_problem(path: PathLike) -> str | None:
    """Why _atomic_write_bytes (and so save) would refuse or fail to write ``path``, or None.

    For checks made before long work (``train --save/--plot``): the same rules, then a file created and
    removed where the temporary file would go, since os.access says yes to root everywhere and pseudo file
    systems (/proc, /sys) refuse new files whatever the permissions say."""
    where = os.fsdecode(path)
    if not where:
        return "the path is empty"
    try:
        target, _ = _resolve_target(where)
    except _NotRegularFile as exc:
        return f"it is a {exc.kind}, not a regular file"
    except IsADirectoryError:
        if os.path.isdir(where):
            return "it is a directory"
        return "it ends in a path separator, so it names a directory"
    except NotADirectoryError:  # a parent is a file: named below
        target = os.path.realpath(where)
    except OSError as exc:
        return exc.strerror or str(exc)
    directory = os.path.dirname(target)
    if not os.path.exists(directory):
        return f"directory {directory!r} does not exist"
    if not os.path.isdir(directory):
        return f"{directory!r} is not a directory"
    if not os.access(directory, os.W_OK):
        return "permission denied"
    try:
        fd, probe = _create_temporary(directory)
    except OSError as exc:
        # /proc answers ENOENT, which would read as if the directory were missing.
        reason = "it does not accept new files" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
        return f"cannot create a file in {directory!r} ({reason})"
    os.close(fd)
    os.unlink(probe)
    return None


class _NotRegularFile(OSError):
    """A FIFO, device or socket where a file was to be read or written: ``kind`` says which."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


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
        kind = _kind(mode)
        raise _NotRegularFile(
            f"{where!r} is not a regular file (it is a {kind}); only a regular file can be replaced "
            "atomically",
            kind,
        )
    return mode & 0o777


_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "special file")


def load(path: PathLike, *, engine: EngineLike = None) -> Module:
    """Rebuild the model saved at ``path`` on ``engine`` (None: native).

    A malformed file raises ValueError saying what is wrong with it; a file that cannot be read raises the
    OSError of ``open(path)``, which names ``path``."""
    engine_module = resolve_engine(engine)  # the caller's mistake, reported before any file's
    where = os.fsdecode(path)
    # One descriptor for the check and the read: a path checked, then opened, could be swapped for a FIFO in
    # between. O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; it changes
    # nothing for a regular file. Errors name ``where``, the caller's path.
    fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # Linux opens a directory for reading; open(path) raises this
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), where)
        if not stat.S_ISREG(mode):
            # Reading a FIFO blocks until a writer comes, and a device like /dev/zero never ends.
            kind = _kind(mode)
            raise _NotRegularFile(
                f"{where!r} is not a regular file (it is a {kind}); load() reads model files only", kind
            )
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
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

"""The ``arenagrad`` command line (also ``python -m arenagrad``).

Subcommands: ``train`` (the default: the main demo), ``draw`` (render an example graph to a file) and
``neuron`` (print the notebooks' tanh neuron forward and backward).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["build_parser", "main"]

ENGINES = {"native": "arenagrad", "reference": "arenagrad.reference"}
# File suffix -> format. "dot" is the graph's DOT source, written as text: it needs no Graphviz program.
DRAW_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
# The status of a command that stopped because its reader went away (`arenagrad neuron | head -1`): what a
# shell reports for a program killed by SIGPIPE (128 + 13), so a pipeline with `set -o pipefail` sees it too.
BROKEN_PIPE_EXIT = 141
# The bias the notebooks pick so that n = atanh(1/sqrt(2)) = 0.8814 and every gradient is a round number.
NEURON_BIAS = 6.8813735870195432


def _engine(name: str) -> ModuleType:
    return importlib.import_module(ENGINES[name])


def neuron_graph(engine: ModuleType) -> list[Any]:
    """The notebooks' neuron ``o = tanh(x1*w1 + x2*w2 + b)``, its Values listed inputs first, ``o`` last."""
    value = engine.Value
    x1, x2 = value(2.0, label="x1"), value(0.0, label="x2")
    w1, w2 = value(-3.0, label="w1"), value(1.0, label="w2")
    b = value(NEURON_BIAS, label="b")
    x1w1 = x1 * w1
    x1w1.label = "x1*w1"
    x2w2 = x2 * w2
    x2w2.label = "x2*w2"
    x1w1x2w2 = x1w1 + x2w2
    x1w1x2w2.label = "x1*w1 + x2*w2"
    n = x1w1x2w2 + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    return [x1, w1, x2, w2, b, x1w1, x2w2, x1w1x2w2, n, o]


def expression_graph(engine: ModuleType) -> list[Any]:
    """The notebooks' first expression ``L = (a*b + c) * f``, its Values listed inputs first, ``L`` last."""
    value = engine.Value
    a, b = value(2.0, label="a"), value(-3.0, label="b")
    c, f = value(10.0, label="c"), value(-2.0, label="f")
    e = a * b
    e.label = "e"
    d = e + c
    d.label = "d"
    L = d * f
    L.label = "L"
    return [a, b, c, f, e, d, L]


EXAMPLES: dict[str, Callable[[ModuleType], list[Any]]] = {
    "neuron": neuron_graph,
    "expression": expression_graph,
}


def _error(message: str) -> None:
    print(f"arenagrad: error: {message}", file=sys.stderr)


def _run_neuron(args: argparse.Namespace) -> int:
    values = neuron_graph(_engine(args.engine))
    o = values[-1]
    o.backward()
    n = values[-2]
    print(f"tanh neuron ({args.engine} engine): o = tanh(n), n = x1*w1 + x2*w2 + b")
    print(f"forward:  n = {n.data:.4f}, o = tanh(n) = {o.data:.4f}  (1/sqrt(2) = {1 / math.sqrt(2):.4f})")
    print("backward: o.backward() fills every grad with do/d(value):")
    width = max(len(v.label) for v in values)
    print(f"  {'value':<{width}}  {'data':>8}  {'grad':>8}")
    for v in values:
        print(f"  {v.label:<{width}}  {v.data:>8.4f}  {v.grad:>8.4f}")
    return 0


def _run_draw(args: argparse.Namespace) -> int:
    output = Path(args.output)
    fmt = DRAW_FORMATS.get(output.suffix.lower())
    if fmt is None:
        _error(
            f"cannot tell the format of {str(output)!r}: the file name must end in {', '.join(DRAW_FORMATS)}"
        )
        return 2
    values = EXAMPLES[args.example](_engine(args.engine))
    values[-1].backward()
    from .draw import draw_dot

    try:
        dot = draw_dot(values[-1], format=fmt, rankdir=args.rankdir)
    except ImportError as exc:
        _error(str(exc))
        return 1
    import graphviz

    if fmt == "dot":  # the source itself; rendering it with `dot -Tdot` would only add layout positions
        rendered = dot.source.encode()
    else:
        try:
            # quiet: dot's messages go into the error below rather than, unannounced, straight to stderr.
            rendered = dot.pipe(format=fmt, quiet=True)
        except graphviz.ExecutableNotFound:
            _error(
                "Graphviz's `dot` program was not found on PATH; install Graphviz "
                "(e.g. apt-get install graphviz, brew install graphviz) to render graphs, "
                "or write the DOT source with -o FILE.dot"
            )
            return 1
        except graphviz.CalledProcessError as exc:
            status = _exit_status(exc.returncode)
            _error(f"Graphviz's `dot` failed to render {fmt} ({status}){_dot_says(exc)}")
            return 1
    from .serialization import _atomic_write_bytes

    try:
        # Through a temporary file and a rename, as save() writes models: a failed write leaves an existing
        # file as it was.
        _atomic_write_bytes(output, rendered)
    except OSError as exc:
        _error(f"cannot write {str(output)!r}: {exc.strerror or exc}")
        return 1
    print(f"wrote the {args.example} graph ({len(values)} Values, {fmt}) to {output}")
    return 0


def _exit_status(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"


def _dot_says(exc: Any) -> str:
    """What the failed ``dot`` wrote to stderr, as the end of an error message ("" if nothing)."""
    stderr = exc.stderr
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    stderr = (stderr or "").strip()
    return f": {stderr}" if stderr else ""


def _load_train() -> tuple[ModuleType | None, BaseException | None]:
    try:
        return importlib.import_module("arenagrad.train"), None
    except Exception as exc:  # any failure in train.py must leave the other subcommands usable
        return None, exc


def _add_train(subparsers: Any, load: bool) -> None:
    if load:
        train, failure = _load_train()
    else:
        train, failure = None, RuntimeError("build_parser(load_train=False) left its options out")
    help_text = "train an MLP on a toy data set (the default command)"
    if train is not None:
        parser = subparsers.add_parser("train", help=help_text, description=help_text)
        train.add_arguments(parser)
        parser.set_defaults(_handler=train.run)
        return
    parser = subparsers.add_parser("train", help=help_text, description=help_text)

    def unavailable(_: argparse.Namespace) -> int:
        _error(f"the train command could not be loaded: {type(failure).__name__}: {failure}")
        return 1

    # Accept any options, so that the import failure, not an argparse complaint about them, is what users see.
    parser.set_defaults(_handler=unavailable, _accepts_any=True)


def build_parser(load_train: bool = True) -> argparse.ArgumentParser:
    """The full parser; ``load_train=False`` skips importing ``arenagrad.train`` (and so its options)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="arenagrad",
        description="arenagrad: a scalar autograd engine (micrograd's API, a C++ node arena underneath). "
        "Without a subcommand, runs `train` with its defaults.",
    )
    parser.add_argument("--version", action="version", version=f"arenagrad {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="{train,draw,neuron}")
    _add_train(subparsers, load_train)

    draw = subparsers.add_parser(
        "draw",
        help="render an example graph after backward() (.svg, .png and .pdf need Graphviz's dot)",
        description="Render an example computation graph, after backward(), as the notebooks draw it.",
    )
    draw.add_argument(
        "-o",
        "--output",
        required=True,
        help="file to write; the extension picks the format: " + ", ".join(DRAW_FORMATS),
    )
    draw.add_argument(
        "--example",
        choices=sorted(EXAMPLES),
        default="neuron",
        help="neuron: o = tanh(x1*w1 + x2*w2 + b) (the default); expression: L = (a*b + c) * f",
    )
    draw.add_argument(
        "--rankdir",
        choices=["LR", "TB", "RL", "BT"],
        default="LR",
        help="layout direction (default: LR, left to right)",
    )
    draw.add_argument("--engine", choices=sorted(ENGINES), default="native", help="default: native")
    draw.set_defaults(_handler=_run_draw)

    neuron = subparsers.add_parser(
        "neuron",
        help="print the tanh neuron's forward and backward pass",
        description="The notebooks' neuron: x1=2, x2=0, w1=-3, w2=1, b=6.8813735870195432, o = tanh(x1*w1 + "
        "x2*w2 + b) = 0.7071, then o.backward() and every gradient.",
    )
    neuron.add_argument("--engine", choices=sorted(ENGINES), default="native", help="default: native")
    neuron.set_defaults(_handler=_run_neuron)
    return parser


def _wants_train(argv: Sequence[str]) -> bool:
    # Top-level options take no values, so the first word that is not an option names the subcommand.
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first is None or first == "train"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    try:
        status = _main(argv)
        # Flush inside the try: a reader that has gone away would otherwise show up only at interpreter exit,
        # as an "Exception ignored ... BrokenPipeError" message and status 120.
        if sys.stdout is not None:  # None under pythonw
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    return status


def _silence_stdout() -> None:
    """Point stdout at devnull, so that the flush at exit of what is still buffered cannot fail again.

    This is the recipe of Python's docs ("Note on SIGPIPE", in the signal module's documentation).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (an io.StringIO): nothing to break
        pass


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["train", *argv]  # `arenagrad --steps 5` means the default command with options
    parser = build_parser(load_train=_wants_train(argv))
    try:
        args, unknown = parser.parse_known_args(argv)
        if args.subcommand is None:
            args, unknown = parser.parse_known_args([*argv, "train"])
        if unknown and not getattr(args, "_accepts_any", False):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, --version and usage errors: hand back argparse's status
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return int(args._handler(args))


if __name__ == "__main__":
    sys.exit(main())

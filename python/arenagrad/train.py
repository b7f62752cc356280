"""The ``arenagrad train`` command: train an MLP on a 2-D toy data set and report how it went.

With no options it is micrograd's demo: 100 moons with noise 0.1, an MLP 2-16-16-1 with ReLU, the max-margin
loss plus a 1e-4 L2 penalty, full-batch SGD with the learning rate decaying linearly from 1.0 to 0.1 over 100
steps, seed 1337 for the data and the weights.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import numpy as np

from ._core import Value
from .losses import bce_with_logits, hinge_loss, l2_penalty
from .nn import ACTIVATIONS, MLP, resolve_engine
from .optim import SGD, Adam, LinearLR, Optimizer
from .serialization import _atomic_write_bytes, _write_problem, save
from .vectorize import vectorize

__all__ = [
    "History",
    "TrainResult",
    "TrainingDiverged",
    "TrainingSetupError",
    "add_arguments",
    "run",
    "train_model",
]

DATASETS = ("moons", "blobs", "circles")
DEFAULT_LR = {"sgd": 1.0, "adam": 0.05}
FINAL_LR_FACTOR = 0.1  # micrograd's demo ends at a tenth of its starting learning rate
# A loss this many times its first value (or than 1, if it started lower) means the run has diverged. It may
# never reach inf (--lr 100 peaks near 1e30, then ends with a model that predicts one class), and no run on
# these toy problems comes back from there, so stopping is more honest than reporting it as a result.
DIVERGENCE_FACTOR = 1e6
# Upper bounds of the options that size the run, far beyond what a scalar engine trains in reasonable time
# (the demo has 100 samples and 337 parameters; a million parameters take about 4 s and 0.5 GB to build,
# and a forward pass over 100 samples then makes 10^8 nodes). They turn a typo such as --samples
# 100000000000000000000 or --hidden 100000 100000 into a usage error instead of a traceback or an
# allocation that takes the machine's memory.
MAX_SAMPLES = 10_000_000
MAX_HIDDEN = 100_000  # neurons in one hidden layer
MAX_PARAMETERS = 1_000_000  # in the whole MLP 2-hidden...-1


def _int_in(low: int, high: float = float("inf")) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            bound = f">= {low}" if high == float("inf") else f"in [{low}, {int(high)}]"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {value}")
        return value

    return parse


_positive_int = _int_in(1)


def _parameter_count(hidden: Sequence[int]) -> int:
    """How many parameters the ``train`` MLP has: 2 inputs, the ``hidden`` layers, one output."""
    sizes = [2, *hidden, 1]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


class _HiddenSizes(argparse.Action):
    """Stores the --hidden sizes, refusing a model over MAX_PARAMETERS parameters (a usage error)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        count = _parameter_count(values)
        if count > MAX_PARAMETERS:
            raise argparse.ArgumentError(
                self,
                f"an MLP {'-'.join(map(str, [2, *values, 1]))} has {count:,} parameters; at most "
                f"{MAX_PARAMETERS:,} are allowed",
            )
        setattr(namespace, self.dest, values)


def _float_at_least(low: float, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not np.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'>' if strict else '>='} {low}, got {text}"
            )
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``; the defaults reproduce micrograd's demo."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="moons", help="toy data set (default: moons)")
    data.add_argument(
        "--samples",
        type=_int_in(2, MAX_SAMPLES),
        default=100,
        help=f"number of points, at most {MAX_SAMPLES:,} (default: 100)",
    )
    data.add_argument(
        "--noise",
        type=_float_at_least(0.0, False),
        default=None,
        help="noise level (default: the data set's own, 0.1 for moons and circles, 1.0 for blobs)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--hidden",
        type=_int_in(1, MAX_HIDDEN),
        nargs="*",
        action=_HiddenSizes,
        default=[16, 16],
        metavar="SIZE",
        help=f"hidden layer sizes, each at most {MAX_HIDDEN:,}, with at most {MAX_PARAMETERS:,} parameters "
        "in all (default: 16 16); the output layer is one linear neuron",
    )
    model.add_argument(
        "--activation", choices=ACTIVATIONS, default="relu", help="hidden activation (default: relu)"
    )
    fit = parser.add_argument_group("training")
    fit.add_argument(
        "--loss",
        choices=("hinge", "bce"),
        default="hinge",
        help="hinge: micrograd's max-margin loss; bce: binary cross-entropy on the logit (default: hinge)",
    )
    fit.add_argument(
        "--alpha",
        type=_float_at_least(0.0, False),
        default=1e-4,
        help="L2 penalty alpha * sum(p*p) (default: 1e-4)",
    )
    fit.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="default: sgd")
    fit.add_argument(
        "--lr",
        type=_float_at_least(0.0, True),
        default=None,
        help=f"initial learning rate (default: {DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adam']} for adam)",
    )
    fit.add_argument(
        "--schedule",
        choices=("linear", "constant"),
        default="linear",
        help=f"linear: decay the learning rate to {FINAL_LR_FACTOR} x lr over the run (default)",
    )
    fit.add_argument(
        "--momentum", type=_float_at_least(0.0, False), default=0.0, help="SGD momentum (default: 0)"
    )
    fit.add_argument("--steps", type=_positive_int, default=100, help="optimizer steps (default: 100)")
    fit.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="random samples per step (default: the full data set)",
    )
    fit.add_argument(
        "--seed",
        type=_int_in(0, 2**32 - 1),
        default=1337,
        help="seeds the data, the weights and the batches (default: 1337)",
    )
    fit.add_argument(
        "--engine",
        choices=("native", "reference"),
        default="native",
        help="native: the C++ engine; reference: the pure-Python one (default: native)",
    )
    fit.add_argument(
        "--eager",
        action="store_true",
        help="native engine: build the graph of every sample at every step, as micrograd does, instead of "
        "replaying one recorded sample natively over the batch (same results up to rounding, slower)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="write the decision boundary with the data, and the loss curve, to this image",
    )
    out.add_argument(
        "--save", metavar="FILE", default=None, help="save the trained model (load with arenagrad.load)"
    )


@dataclass
class History:
    """Per step, before that step's update (as micrograd prints them): the batch loss and accuracy."""

    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    model: MLP
    X: np.ndarray
    y: np.ndarray
    history: History
    final_loss: float  # on the full data set, after the last update
    final_accuracy: float
    seconds: float  # the training loop and the final evaluation only: no data, model set-up or output


class TrainingSetupError(RuntimeError):
    """The data set or the model could not be made (out of memory, or values the data generator refuses)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf, or grew ``DIVERGENCE_FACTOR`` times: training stopped at ``step``."""

    def __init__(self, step: int, loss: float, first_loss: float, message: str) -> None:
        super().__init__(message)
        # 1-based: the step whose loss (taken before its update) gave up; steps + 1 for the final evaluation.
        self.step = step
        self.loss = loss
        self.first_loss = first_loss


def _error(message: str) -> int:
    print(f"arenagrad train: error: {message}", file=sys.stderr)
    return 1


def _objective(model: MLP, X: list[list[float]], y: np.ndarray, loss: str, alpha: float) -> tuple[Any, float]:
    """The loss Value on a batch and the batch accuracy (a positive score predicts class 1)."""
    scores: list[Any] = [model(x) for x in X]
    if loss == "hinge":
        data_loss = hinge_loss(scores, (2 * y - 1).tolist())
    else:
        data_loss = bce_with_logits(scores, y.tolist())
    total = data_loss + l2_penalty(model, alpha) if alpha else data_loss
    correct = sum((s.data > 0) == (label == 1) for s, label in zip(scores, y.tolist()))
    return total, correct / len(X)


class _EagerObjective:
    """The objective's graph built for the whole batch at every step, as micrograd does."""

    def __init__(self, model: MLP, loss: str, alpha: float) -> None:
        self.model, self.loss, self.alpha = model, loss, alpha
        self.total: Any = None

    def __call__(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """The loss on a batch and the batch accuracy; backward() then adds its gradient into .grad."""
        self.total, accuracy = _objective(self.model, X.tolist(), y, self.loss, self.alpha)
        return self.total.data, accuracy

    def backward(self) -> None:
        self.total.backward()


class _ReplayedObjective:
    """The objective of ``_objective`` as one sample's loss term recorded once and replayed natively over the
    batch (``Tape.forward_batch``/``backward_batch``), the penalty as a tape of its own: no graph is built per
    step. Labels are an input of the recording, so one recording serves every sample (hinge: relu(1 - y*s),
    which is (1 - s) or (1 + s) exactly; bce: t*softplus(-s) + (1-t)*softplus(s) for hard targets t). Values
    equal the eager objective's up to the order of the batch's sums (a few ulps)."""

    def __init__(self, model: MLP, loss: str, alpha: float, engine: ModuleType) -> None:
        x = [engine.Value(0.0), engine.Value(0.0)]
        label = engine.Value(1.0)
        self.score: Any = cast(Any, model(x))  # the MLP has one output: a Value
        if loss == "hinge":
            term = (1.0 - label * self.score).relu()
        else:
            term = label * (-self.score).softplus() + (1.0 - label) * self.score.softplus()
        self.loss = loss
        self.tape = engine.Tape(term, [*x, label])
        self.penalty = engine.Tape(l2_penalty(model, alpha), []) if alpha else None
        self.n = 0

    def __call__(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """The loss on a batch and the batch accuracy; backward() then adds its gradient into .grad."""
        labels = 2.0 * y - 1.0 if self.loss == "hinge" else y.astype(np.float64)
        terms = self.tape.forward_batch(np.column_stack([X, labels]))
        self.n = len(terms)
        total = sum(terms.tolist()) / self.n  # left to right, as arenagrad.sum adds the eager terms
        if self.penalty is not None:
            total += self.penalty.forward([])
        scores = self.tape.batch_values(self.score)
        return total, float(np.count_nonzero((scores > 0) == (y == 1))) / self.n

    def backward(self) -> None:
        self.tape.backward_batch(1.0 / self.n, input_grads=False)
        if self.penalty is not None:
            self.penalty.backward()


def _progress(steps: int) -> Iterable[int]:
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety: train without it
        return range(steps)
    # disable=None turns the bar off when stderr is not a terminal (logs, CI, pipes).
    return tqdm(range(steps), desc="training", unit="step", disable=None, file=sys.stderr)


def _make_optimizer(args: argparse.Namespace, model: MLP) -> tuple[Optimizer, LinearLR | None]:
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    if args.optimizer == "sgd":
        optimizer: Optimizer = SGD(model.parameters(), lr=lr, momentum=args.momentum)
    else:
        optimizer = Adam(model.parameters(), lr=lr)
    if args.schedule == "constant":
        return optimizer, None
    # Over `steps` scheduler steps: update k uses lr * (1 - 0.9 * k/steps), micrograd's 1.0 - 0.9*k/100.
    return optimizer, LinearLR(
        optimizer, start_factor=1.0, end_factor=FINAL_LR_FACTOR, total_iters=args.steps
    )


def _check_output(path: str | None, what: str) -> str | None:
    """Why ``path`` cannot take the output, or None: checked before training, so no run is wasted.

    The rules are the writer's own (serialization._write_problem): what passes here is what save() and the
    plot's atomic write accept."""
    if path is None:
        return None
    problem = _write_problem(path)
    return None if problem is None else f"cannot write the {what} to {path!r}: {problem}"


def _scores(model: MLP, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The model's score at every point: one native batched replay on the native engine."""
    if isinstance(model.parameters()[0], Value):
        return np.asarray(vectorize(lambda a, b: model([a, b]))(x1, x2))
    return np.array([cast(Any, model([a, b])).data for a, b in zip(x1.tolist(), x2.tolist())])


def _plot(path: str, model: MLP, X: np.ndarray, y: np.ndarray, history: History, title: str) -> None:
    # A Figure without pyplot renders with Agg: no global backend switch, no figure registry to leak into.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    boundary, curve = fig.subplots(1, 2)
    pad = 0.5
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, 90)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, 90)
    grid_x, grid_y = np.meshgrid(xs, ys)
    scores = _scores(model, grid_x.ravel(), grid_y.ravel())
    boundary.contourf(
        grid_x,
        grid_y,
        (scores > 0).reshape(grid_x.shape),
        levels=[-0.5, 0.5, 1.5],
        cmap="Spectral",
        alpha=0.8,
    )
    boundary.scatter(X[:, 0], X[:, 1], c=y, cmap="Spectral", s=30, edgecolors="k")
    boundary.set_title(f"decision boundary: {title}")
    boundary.set_xlabel("x1")
    boundary.set_ylabel("x2")
    curve.plot(np.arange(1, len(history.losses) + 1), history.losses, label="loss")
    curve.set_xlabel("step")
    curve.set_ylabel("loss")
    curve.set_title("training loss")
    accuracy = curve.twinx()
    accuracy.plot(
        np.arange(1, len(history.accuracies) + 1), history.accuracies, color="tab:orange", label="accuracy"
    )
    accuracy.set_ylabel("accuracy")
    accuracy.set_ylim(0.0, 1.05)
    fig.legend(loc="outside lower center", ncols=2)
    # Rendered in memory, then written atomically: a failed write leaves an existing file as it was. The
    # extension names the format, as savefig(path) would read it (_check_plot accepted it).
    image = io.BytesIO()
    fig.savefig(image, format=os.path.splitext(path)[1].lower().lstrip("."), dpi=100)
    _atomic_write_bytes(path, image.getvalue())


def train_model(args: argparse.Namespace, engine: ModuleType | None = None) -> TrainResult:
    """Train as the ``train`` options in ``args`` say (a tqdm bar on a terminal) and return the outcome."""
    from . import datasets

    engine = resolve_engine(args.engine) if engine is None else engine
    try:
        X, y = datasets.load(args.dataset, n_samples=args.samples, noise=args.noise, seed=args.seed)
        model = MLP(2, [*args.hidden, 1], args.activation, seed=args.seed, engine=engine)
    except MemoryError:
        shape = "-".join(map(str, [2, *args.hidden, 1]))
        raise TrainingSetupError(
            f"out of memory making {args.samples:,} samples and an MLP {shape}; try a smaller --samples "
            "or --hidden"
        ) from None
    except ValueError as exc:  # e.g. a generator that refuses the sizes asked for
        raise TrainingSetupError(f"cannot make the data or the model: {exc}") from exc
    optimizer, scheduler = _make_optimizer(args, model)
    batches = np.random.default_rng(args.seed)
    history = History()
    objective: _EagerObjective | _ReplayedObjective
    if args.eager or engine.__name__ != "arenagrad":
        objective = _EagerObjective(model, args.loss, args.alpha)
    else:
        objective = _ReplayedObjective(model, args.loss, args.alpha, engine)

    start = time.perf_counter()
    bar = _progress(args.steps)
    try:
        for step, _ in enumerate(bar, start=1):
            if args.batch_size is None or args.batch_size >= len(X):
                chosen = None
            else:
                # micrograd's sampling: a fresh random subset, without replacement, every step.
                chosen = batches.permutation(len(X))[: args.batch_size]
            loss, accuracy = objective(X, y) if chosen is None else objective(X[chosen], y[chosen])
            # Before the update: a NaN loss would only spread NaN through every weight.
            _check_loss(loss, history.losses[0] if history.losses else loss, step, args.steps)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            history.losses.append(loss)
            history.accuracies.append(accuracy)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.0%}", refresh=False)
        final_loss, final_accuracy = objective(X, y)
        # The last update can still blow up: step steps + 1 stands for "after the last step".
        _check_loss(final_loss, history.losses[0], args.steps + 1, args.steps)
        seconds = time.perf_counter() - start
    finally:
        if hasattr(bar, "close"):
            bar.close()
    return TrainResult(model, X, y, history, final_loss, final_accuracy, seconds)


def _check_loss(loss: float, first_loss: float, step: int, steps: int) -> None:
    """Raise TrainingDiverged if ``loss``, taken at ``step`` of ``steps``, is not finite or has exploded."""
    where = f"at step {step} of {steps}" if step <= steps else f"after the last step ({steps})"
    if not math.isfinite(loss):
        message = f"the loss became {loss} {where}"
    elif loss > DIVERGENCE_FACTOR * max(first_loss, 1.0):
        message = (
            f"the loss reached {loss:.3g} {where}, over {DIVERGENCE_FACTOR:,.0f} times its first value "
            f"({first_loss:.3g})"
        )
    else:
        return
    raise TrainingDiverged(step, loss, first_loss, message)


PLOT_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def _check_plot(path: str) -> str | None:
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in PLOT_FORMATS:
        return (
            f"--plot {path!r}: the file name must end in one of "
            f"{', '.join('.' + f for f in PLOT_FORMATS)}, which sets the image format"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: pip install 'arenagrad[demo]'"
    return None


def _diverged(args: argparse.Namespace, exc: TrainingDiverged) -> int:
    written = [flag for flag, path in (("--save", args.save), ("--plot", args.plot)) if path is not None]
    nothing = f"; nothing was written for {' and '.join(written)}" if written else ""
    if exc.step == 1:  # no update has run yet, so the learning rate is not to blame
        advice = "Try a smaller --alpha or --noise."
    else:
        lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
        advice = (
            f"Try a smaller --lr (this run: {lr:g}) "
            f"or a different --activation (this run: {args.activation})."
        )
    return _error(f"{exc}: training diverged and was stopped{nothing}. {advice}")


def run(args: argparse.Namespace) -> int:
    """The ``train`` command: train, print a summary, save/plot on request; returns the exit code.

    1 for any failure: bad output paths or options found before training, data or a model that cannot be
    made (out of memory), a loss that became NaN, inf or exploded (nothing is then saved or plotted), and
    errors writing the outputs.
    """
    start = time.perf_counter()
    if args.optimizer != "sgd" and args.momentum:
        return _error("--momentum applies to --optimizer sgd only")
    for path, what in ((args.plot, "plot"), (args.save, "model")):
        problem = _check_output(path, what)
        if problem:
            return _error(problem)
    if args.plot is not None:  # before training, not after a long run
        problem = _check_plot(args.plot)
        if problem:
            return _error(problem)
    try:
        engine = resolve_engine(args.engine)
    except ImportError as exc:
        return _error(str(exc))
    try:
        result = train_model(args, engine)
    except TrainingDiverged as exc:
        return _diverged(args, exc)
    except TrainingSetupError as exc:
        return _error(str(exc))
    except MemoryError:  # the graph of a batch: samples times parameters nodes
        return _error("out of memory while training; try a smaller --batch-size, --samples or --hidden")
    # Write the files before printing anything: if stdout is a pipe that closes early (`| head -1`), the
    # command ends at that print, and it must not take the model or the plot down with it.
    written, failure = _write_outputs(args, result)
    total = time.perf_counter() - start  # everything after Python start-up: data, training, files
    n = len(result.y)
    print(
        f"trained {result.model!r} on {args.dataset} ({n} samples): {args.optimizer}, {args.loss} loss, "
        f"{args.engine} engine"
    )
    print(f"steps: {args.steps}")
    print(f"final loss: {result.final_loss:.6f}")
    print(f"accuracy: {result.final_accuracy:.1%} ({round(result.final_accuracy * n)}/{n})")
    for line in written:
        print(line)
    if failure is not None:
        return _error(failure)
    print(f"time: {result.seconds:.2f} s training, {total:.2f} s in all (Python start-up excluded)")
    return 0


def _write_outputs(args: argparse.Namespace, result: TrainResult) -> tuple[list[str], str | None]:
    """Save the model and draw the plot, as asked: the lines reporting what was written, and any failure."""
    written: list[str] = []
    if args.save is not None:
        try:
            save(result.model, args.save)
        except OSError as exc:
            return written, f"cannot write the model to {args.save!r}: {exc.strerror or exc}"
        written.append(f"saved the model to {args.save}")
    if args.plot is not None:
        title = f"{args.dataset}, accuracy {result.final_accuracy:.1%}"
        try:
            _plot(args.plot, result.model, result.X, result.y, result.history, title)
        except ImportError as exc:
            return written, f"{exc} (--plot needs matplotlib: pip install matplotlib)"
        except OSError as exc:
            return written, f"cannot write the plot to {args.plot!r}: {exc.strerror or exc}"
        except ValueError as exc:
            return written, f"cannot write the plot to {args.plot!r}: {exc}"
        written.append(f"wrote the plot to {args.plot}")
    return written, None

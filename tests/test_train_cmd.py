"""The `arenagrad train` command (arenagrad.train): options, summary, micrograd's demo, --plot and --save."""

from __future__ import annotations

import argparse
import re

import pytest

from arenagrad import train
from arenagrad.serialization import load

SMALL = ["--samples", "24", "--hidden", "6", "--steps", "5"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arenagrad train")
    train.add_arguments(parser)
    return parser.parse_args(argv)


def _summary(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(steps|final loss|accuracy|time): (.*)$", text, flags=re.MULTILINE))


def _engine_name(engine) -> str:
    return "reference" if engine.__name__.endswith("reference") else "native"


def test_small_run_prints_a_summary(engine, capsys):
    assert train.run(_parse([*SMALL, "--engine", _engine_name(engine)])) == 0
    out, err = capsys.readouterr()
    summary = _summary(out)
    assert summary["steps"] == "5"
    assert float(summary["final loss"]) > 0
    assert re.fullmatch(r"\d+\.\d% \(\d+/24\)", summary["accuracy"])
    assert re.fullmatch(r"\d+\.\d\d s", summary["time"])
    model = "MLP(2, [6, 1], activation='relu')"
    assert f"trained {model} on moons (24 samples): sgd, hinge loss, {_engine_name(engine)} engine" in out
    assert err == ""  # stderr is not a terminal here, so tqdm stays silent


def test_default_run_is_micrograds_demo_and_reaches_full_accuracy(native, capsys):
    # micrograd's data are scikit-learn's make_moons; datasets' numpy fallback draws other points.
    pytest.importorskip("sklearn")
    args = _parse([])
    assert (args.dataset, args.samples, args.noise, args.hidden, args.activation) == (
        "moons",
        100,
        None,
        [16, 16],
        "relu",
    )
    assert (args.loss, args.alpha, args.optimizer, args.lr, args.steps, args.batch_size) == (
        "hinge",
        1e-4,
        "sgd",
        None,
        100,
        None,
    )
    assert train.run(args) == 0
    summary = _summary(capsys.readouterr().out)
    assert summary["steps"] == "100"
    assert summary["accuracy"] == "100.0% (100/100)"
    assert float(summary["final loss"]) < 0.02


def test_demo_follows_micrograds_trajectory(native):
    micrograd_engine = pytest.importorskip("micrograd.engine")
    micrograd_nn = pytest.importorskip("micrograd.nn")
    import random

    from arenagrad.datasets import moons

    result = train.train_model(_parse(["--steps", "2"]))
    # micrograd's demo loop, seeded as its notebook seeds it, on the same data; the schedule spans --steps.
    X, y = moons(n_samples=100, noise=0.1, seed=1337)
    y = 2 * y - 1
    random.seed(1337)
    model = micrograd_nn.MLP(2, [16, 16, 1])
    losses = []
    for k in range(2):
        scores = [model(list(map(micrograd_engine.Value, row))) for row in X.tolist()]
        data_loss = sum((1 + -yi * si).relu() for yi, si in zip(y.tolist(), scores)) * (1.0 / len(scores))
        total = data_loss + 1e-4 * sum(p * p for p in model.parameters())
        model.zero_grad()
        total.backward()
        for p in model.parameters():
            p.data -= (1.0 - 0.9 * k / 2) * p.grad
        losses.append(total.data)
    assert losses[1] != losses[0]  # the first update changed the model
    assert result.history.losses == pytest.approx(losses, rel=1e-12)


def test_plot_and_save(native, tmp_path, capsys):
    plot, saved = tmp_path / "demo.png", tmp_path / "demo.json"
    argv = [*SMALL, "--plot", str(plot), "--save", str(saved)]
    assert train.run(_parse(argv)) == 0
    out = capsys.readouterr().out
    assert f"wrote the plot to {plot}" in out and f"saved the model to {saved}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    # Training is deterministic, so a second run rebuilds the saved model; the file must match it exactly.
    model = train.train_model(_parse(SMALL)).model
    loaded = load(saved)
    points = [[0.1 * i, -0.05 * i] for i in range(-10, 11)]
    assert [loaded(p).data for p in points] == [model(p).data for p in points]


@pytest.mark.parametrize(
    "extra",
    [
        ["--optimizer", "adam", "--loss", "bce", "--batch-size", "8"],
        ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.1", "--schedule", "constant", "--alpha", "0"],
        ["--dataset", "circles", "--activation", "tanh", "--hidden", "4", "4"],
        ["--dataset", "blobs", "--noise", "0.5", "--hidden"],
    ],
    ids=["adam-bce-minibatch", "momentum-constant", "circles-tanh", "blobs-linear"],
)
def test_option_combinations_are_deterministic(native, extra):
    args = _parse([*SMALL, *extra])
    first, second = train.train_model(args), train.train_model(args)
    assert len(first.history.losses) == 5
    assert first.history.losses == second.history.losses
    assert all(loss == loss and loss < float("inf") for loss in first.history.losses)
    assert 0.0 <= first.final_accuracy <= 1.0


def test_schedule_decays_the_learning_rate_like_micrograd(native, monkeypatch):
    seen = []
    original = train.SGD.step

    def spy(self):
        seen.append(self.lr)
        original(self)

    monkeypatch.setattr(train.SGD, "step", spy)
    train.train_model(_parse([*SMALL, "--steps", "10"]))
    assert seen == [1.0 - 0.9 * k / 10 for k in range(10)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"],
        ["--hidden", "0"],
        ["--samples", "1"],
        ["--seed", "-1"],
        ["--lr", "0"],
        ["--lr", "nan"],
        ["--alpha", "-1"],
        ["--dataset", "spirals"],
        ["--engine", "gpu"],
        ["--batch-size", "two"],
    ],
)
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_unwritable_output_fails_before_training(tmp_path, capsys):
    args = _parse([*SMALL, "--plot", str(tmp_path / "missing" / "p.png")])
    assert train.run(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "cannot write the plot to" in err and "does not exist" in err


def test_momentum_with_adam_is_rejected(capsys):
    assert train.run(_parse([*SMALL, "--optimizer", "adam", "--momentum", "0.9"])) == 1
    assert "--momentum applies to --optimizer sgd only" in capsys.readouterr().err


def test_dispatcher_runs_train(native, capsys):
    from arenagrad.__main__ import main

    assert main(["train", *SMALL]) == 0
    assert _summary(capsys.readouterr().out)["steps"] == "5"

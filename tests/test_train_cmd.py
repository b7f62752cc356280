"""The `arenagrad train` command (arenagrad.train): options, summary, micrograd's demo, --plot and --save."""

from __future__ import annotations

import argparse
import errno
import os
import re
import time

import pytest
from conftest import require_module

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
    assert re.fullmatch(
        r"\d+\.\d\d s training, \d+\.\d\d s in all \(Python start-up excluded\)", summary["time"]
    )
    model = "MLP(2, [6, 1], activation='relu')"
    assert f"trained {model} on moons (24 samples): sgd, hinge loss, {_engine_name(engine)} engine" in out
    assert err == ""  # stderr is not a terminal here, so tqdm stays silent


def test_default_run_is_micrograds_demo_and_reaches_full_accuracy(native, capsys):
    # micrograd's data are scikit-learn's make_moons; datasets' numpy fallback draws other points.
    require_module("sklearn")
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
    micrograd_engine = require_module("micrograd.engine")
    micrograd_nn = require_module("micrograd.nn")
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
    assert sorted(os.listdir(tmp_path)) == ["demo.json", "demo.png"]  # the writability probes left nothing
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


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(train, "train_model", fail)


@pytest.mark.parametrize("option", ["--plot", "--save"])
@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("missing/p.png", "does not exist"),
        ("file.txt/p.png", "is not a directory"),
        ("folder", "it is a directory"),
    ],
)
def test_unwritable_output_fails_before_training(tmp_path, capsys, monkeypatch, option, where, problem):
    (tmp_path / "file.txt").write_text("a file, not a directory")
    (tmp_path / "folder").mkdir()
    _no_training(monkeypatch)
    path = tmp_path / where
    assert train.run(_parse([*SMALL, option, str(path)])) == 1
    out, err = capsys.readouterr()
    assert out == ""
    what = "plot" if option == "--plot" else "model"
    assert f"cannot write the {what} to {str(path)!r}: " in err and problem in err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("option", ["--plot", "--save"])
def test_output_in_a_pseudo_file_system_fails_before_training(capsys, monkeypatch, option):
    # /proc refuses new files even to root, for whom os.access says yes; it answers ENOENT, and the message
    # must not claim that the directory is missing.
    _no_training(monkeypatch)
    assert train.run(_parse([*SMALL, option, "/proc/arenagrad-test.png"])) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "'/proc/arenagrad-test.png': cannot create a file in '/proc' (it does not accept new files)" in err


def test_output_without_write_permission_fails_before_training(tmp_path, capsys, monkeypatch):
    # The tests may run as root, who may write anywhere: stand in for a read-only directory.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    _no_training(monkeypatch)
    assert train.run(_parse([*SMALL, "--save", str(tmp_path / "m.json")])) == 1
    err = capsys.readouterr().err
    assert f"cannot write the model to {str(tmp_path / 'm.json')!r}: permission denied" in err


def _count_updates(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list that gains an item at every SGD update that runs."""
    updates: list[None] = []
    original = train.SGD.step

    def spy(self: train.SGD) -> None:
        updates.append(None)
        original(self)

    monkeypatch.setattr(train.SGD, "step", spy)
    return updates


# SMALL runs 5 steps; the 6th loss is the final evaluation, after the last update.
# Both ways of computing the objective: replayed (the default) and --eager.
OBJECTIVES = [(train._ReplayedObjective, []), (train._EagerObjective, ["--eager"])]


@pytest.mark.parametrize(("objective", "eager"), OBJECTIVES, ids=["replayed", "eager"])
@pytest.mark.parametrize(("nan_call", "where"), [(3, "at step 3 of 5"), (6, "after the last step (5)")])
def test_a_nan_loss_stops_the_run_at_that_step(
    native, tmp_path, capsys, monkeypatch, objective, eager, nan_call, where
):
    real, calls = objective.__call__, []

    def nan_once(self, *args):
        calls.append(None)
        loss, accuracy = real(self, *args)
        return (loss * float("nan") if len(calls) == nan_call else loss), accuracy

    monkeypatch.setattr(objective, "__call__", nan_once)
    updates = _count_updates(monkeypatch)
    saved, plot = tmp_path / "m.json", tmp_path / "p.png"
    assert train.run(_parse([*SMALL, *eager, "--save", str(saved), "--plot", str(plot)])) == 1
    out, err = capsys.readouterr()
    assert len(updates) == min(nan_call - 1, 5)  # a NaN loss never reaches the weights
    assert out == ""
    assert err == (
        f"arenagrad train: error: the loss became nan {where}: training diverged and was stopped; "
        "nothing was written for --save and --plot. Try a smaller --lr (this run: 1) or a different "
        "--activation (this run: relu).\n"
    )
    assert os.listdir(tmp_path) == []


# `--activation linear` (with micrograd's lr 1.0) and `--lr 100` both ended at "accuracy: 50.0%", exit 0. The
# first does reach NaN (at step 14 of the default run); --lr 100 never does, its loss peaks near 1e30. Both
# pass DIVERGENCE_FACTOR times their first loss within a few steps (10 and 3 on scikit-learn's moons).
@pytest.mark.parametrize(
    ("extra", "lr", "activation"),
    [(["--activation", "linear"], "1", "linear"), (["--lr", "100"], "100", "relu")],
    ids=["linear", "lr-100"],
)
def test_a_diverging_run_stops_and_fails(engine, tmp_path, capsys, monkeypatch, extra, lr, activation):
    argv = ["--samples", "8", "--steps", "30", "--engine", _engine_name(engine), *extra]
    with pytest.raises(train.TrainingDiverged) as info:
        train.train_model(_parse(argv))
    step, loss, first = info.value.step, info.value.loss, info.value.first_loss
    assert 1 < step < 30 and not loss < 1e6 * first  # `not <`: NaN counts as diverged

    updates = _count_updates(monkeypatch)
    saved = tmp_path / "m.json"
    assert train.run(_parse([*argv, "--save", str(saved)])) == 1
    out, err = capsys.readouterr()
    assert len(updates) == step - 1  # the step whose loss diverged made no update
    assert out == ""
    assert "arenagrad train: error: the loss " in err and f" at step {step} of 30" in err
    assert (
        f"nothing was written for --save. Try a smaller --lr (this run: {lr}) "
        f"or a different --activation (this run: {activation})." in err
    )
    assert not saved.exists()


def test_a_loss_that_is_inf_before_any_update_blames_the_setup(native, capsys):
    assert train.run(_parse([*SMALL, "--alpha", "1e308"])) == 1
    err = capsys.readouterr().err
    assert "the loss became inf at step 1 of 5" in err and "Try a smaller --alpha or --noise." in err


def test_time_covers_what_the_user_waited_for(native, tmp_path, capsys, monkeypatch):
    # Slow data and a slow save happen outside the training loop; "in all" must count them, "training" not.
    from arenagrad import datasets

    load, save = datasets.load, train.save

    def slow_load(*args, **kwargs):
        time.sleep(0.2)
        return load(*args, **kwargs)

    def slow_save(*args, **kwargs):
        time.sleep(0.2)
        return save(*args, **kwargs)

    monkeypatch.setattr(datasets, "load", slow_load)
    monkeypatch.setattr(train, "save", slow_save)
    assert train.run(_parse([*SMALL, "--save", str(tmp_path / "m.json")])) == 0
    out = capsys.readouterr().out
    match = re.search(
        r"^time: (\d+\.\d\d) s training, (\d+\.\d\d) s in all \(Python start-up excluded\)$", out, re.M
    )
    assert match, out
    training, total = map(float, match.groups())
    assert training < 0.2 and total >= 0.4
    assert out.index("saved the model") < out.index("time: ")  # printed last, once everything is done


def test_momentum_with_adam_is_rejected(capsys):
    assert train.run(_parse([*SMALL, "--optimizer", "adam", "--momentum", "0.9"])) == 1
    assert "--momentum applies to --optimizer sgd only" in capsys.readouterr().err


def test_dispatcher_runs_train(native, capsys):
    from arenagrad.__main__ import main

    assert main(["train", *SMALL]) == 0
    assert _summary(capsys.readouterr().out)["steps"] == "5"


def _only_entry(tmp_path, name: str) -> None:
    """``name`` is all there is in ``tmp_path``: no temporary or probe file was left behind."""
    assert sorted(os.listdir(tmp_path)) == [name]


@pytest.mark.parametrize(
    ("name", "magic"), [("p.svg", b"<?xml"), ("p.PDF", b"%PDF"), ("p.jpg", b"\xff\xd8\xff")]
)
def test_the_plot_format_follows_the_extension(native, tmp_path, name, magic):
    # The plot is rendered in memory before it is written: the format must come from the name, not a default.
    plot = tmp_path / name
    assert train.run(_parse([*SMALL, "--plot", str(plot)])) == 0
    assert plot.read_bytes().startswith(magic)
    _only_entry(tmp_path, name)


def test_a_failed_plot_write_keeps_the_old_file(native, tmp_path, capsys, monkeypatch):
    plot = tmp_path / "p.png"
    plot.write_bytes(b"the old plot")

    def replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert train.run(_parse([*SMALL, "--plot", str(plot)])) == 1
    err = capsys.readouterr().err
    assert f"cannot write the plot to {str(plot)!r}: {os.strerror(errno.ENOSPC)}" in err
    assert plot.read_bytes() == b"the old plot"
    _only_entry(tmp_path, "p.png")


def _special_outputs(tmp_path) -> dict[str, tuple[str, str]]:
    """Paths save() refuses, each with the reason the check before training must give."""
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "missing" / "m.png")
    return {
        "dev-null": (os.devnull, "it is a character device, not a regular file"),
        "fifo": (str(tmp_path / "pipe.png"), "it is a FIFO, not a regular file"),
        "link-into-a-missing-directory": (
            str(tmp_path / "link.png"),
            f"directory {str(tmp_path / 'missing')!r} does not exist",
        ),
        "trailing-separator": (str(tmp_path / "new") + os.sep, "it ends in a path separator"),
        "empty": ("", "the path is empty"),
    }


@pytest.mark.skipif(not hasattr(os, "mkfifo") or os.devnull != "/dev/null", reason="needs FIFOs and /dev")
@pytest.mark.parametrize("option", ["--plot", "--save"])
@pytest.mark.parametrize(
    "case", ["dev-null", "fifo", "link-into-a-missing-directory", "trailing-separator", "empty"]
)
def test_outputs_that_save_refuses_fail_before_training(tmp_path, capsys, monkeypatch, option, case):
    path, problem = _special_outputs(tmp_path)[case]
    _no_training(monkeypatch)
    assert train.run(_parse([*SMALL, option, path])) == 1
    out, err = capsys.readouterr()
    assert out == ""
    what = "plot" if option == "--plot" else "model"
    assert f"cannot write the {what} to {path!r}: {problem}" in err
    assert sorted(os.listdir(tmp_path)) == ["link.png", "pipe.png"]  # nothing created, nothing replaced
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_a_read_only_file_passes_the_check_as_save_replaces_it(native, tmp_path, capsys):
    # save() replaces a file by renaming over it, which needs only the directory's permission: the check
    # before training must not refuse what save() then does.
    saved = tmp_path / "m.json"
    saved.write_text("old", encoding="utf-8")
    saved.chmod(0o444)
    assert train.run(_parse([*SMALL, "--save", str(saved)])) == 0
    assert load(saved).nin == 2 and saved.stat().st_mode & 0o777 == 0o444


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (
            ["--samples", "100000000000000000000"],
            "argument --samples: expected a whole number in [2, 10000000]",
        ),
        (["--samples", str(train.MAX_SAMPLES + 1)], "argument --samples: expected a whole number in"),
        (
            ["--hidden", "8", str(train.MAX_HIDDEN + 1)],
            "argument --hidden: expected a whole number in [1, 100000]",
        ),
        (["--hidden", "1000", "1000"], "argument --hidden: an MLP 2-1000-1000-1 has 1,005,001 parameters"),
    ],
    ids=["samples-1e20", "samples", "hidden-width", "parameters"],
)
def test_sizes_beyond_the_caps_are_usage_errors(argv, problem, capsys):
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == 2
    assert problem in capsys.readouterr().err


def test_the_caps_themselves_are_accepted():
    args = _parse(["--samples", str(train.MAX_SAMPLES), "--hidden", str(train.MAX_HIDDEN)])
    assert (args.samples, args.hidden) == (train.MAX_SAMPLES, [train.MAX_HIDDEN])
    assert _parse(["--hidden"]).hidden == []  # no hidden layer: a linear model, as before


def test_a_huge_sample_count_is_a_usage_error_from_the_command_line(capsys):
    from arenagrad.__main__ import main

    assert main(["train", "--samples", "100000000000000000000"]) == 2
    err = capsys.readouterr().err
    assert "argument --samples" in err and "Traceback" not in err


OUT_OF_MEMORY = "out of memory making 24 samples and an MLP 2-6-1; try a smaller --samples or --hidden"


def _raise(error: BaseException) -> object:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    return fail


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        ("data", MemoryError(), OUT_OF_MEMORY),
        ("model", MemoryError(), OUT_OF_MEMORY),
        ("data", ValueError("n_samples too large"), "cannot make the data or the model: n_samples too large"),
    ],
    ids=["data-memory", "model-memory", "data-value"],
)
def test_data_or_a_model_that_cannot_be_made_fails_cleanly(
    native, tmp_path, capsys, monkeypatch, where, error, message
):
    from arenagrad import datasets

    if where == "data":
        monkeypatch.setattr(datasets, "load", _raise(error))
    else:
        monkeypatch.setattr(train, "MLP", _raise(error))
    updates = _count_updates(monkeypatch)
    saved = tmp_path / "m.json"
    assert train.run(_parse([*SMALL, "--save", str(saved)])) == 1
    out, err = capsys.readouterr()
    assert out == "" and updates == []
    assert err == f"arenagrad train: error: {message}\n"
    assert not saved.exists()
    with pytest.raises(train.TrainingSetupError, match=re.escape(message)):
        train.train_model(_parse(SMALL))


@pytest.mark.parametrize(("objective", "eager"), OBJECTIVES, ids=["replayed", "eager"])
def test_running_out_of_memory_while_training_fails_cleanly(native, capsys, monkeypatch, objective, eager):
    monkeypatch.setattr(objective, "__call__", _raise(MemoryError()))
    assert train.run(_parse([*SMALL, *eager])) == 1
    assert capsys.readouterr().err == (
        "arenagrad train: error: out of memory while training; try a smaller --batch-size, --samples or "
        "--hidden\n"
    )


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--loss", "bce"],
        ["--alpha", "0"],
        ["--batch-size", "9", "--optimizer", "adam"],
        ["--dataset", "blobs"],
    ],
    ids=["demo", "bce", "no-penalty", "minibatch-adam", "blobs"],
)
def test_replayed_training_follows_the_eager_run(native, extra):
    """The default (one recorded sample replayed over the batch) and --eager (the whole graph built every
    step) differ only in the order of the batch's sums: the same trajectory to a few ulps,
    the same accuracy."""
    argv = ["--samples", "40", "--hidden", "8", "8", "--steps", "25", *extra]
    replayed, eager = train.train_model(_parse(argv)), train.train_model(_parse([*argv, "--eager"]))
    assert replayed.history.accuracies == eager.history.accuracies
    assert replayed.history.losses == pytest.approx(eager.history.losses, rel=1e-12, abs=1e-15)
    assert replayed.final_loss == pytest.approx(eager.final_loss, rel=1e-12)
    assert replayed.final_accuracy == eager.final_accuracy
    for p, q in zip(replayed.model.parameters(), eager.model.parameters()):
        assert p.data == pytest.approx(q.data, rel=1e-11, abs=1e-14)

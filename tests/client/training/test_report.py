"""`blackvip report`'s reading of run folders: the curve (evaluations during training, then the final
point), and a clear error for a folder that is not a finished run, before anything is written.
Real runs through the real server: tests/e2e/test_run_logs.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from client._exceptions import BlackVIPError
from client.training.report import CurvePoint, read_run, write_report
from client.training.rundir import RunDir, Spend, Summary
from shared.protocol import cost_of

PRICE = 0.37


def make_run(
    path: Path, evaluated_at: list[int], final_images: int, splits: tuple[str, ...] = ("test",)
) -> RunDir:
    """A finished run's files as the loop writes them: evaluations at those training images."""
    run = RunDir(path)
    run.write_config(
        {
            "config": {"dataset": None, "data": "/x/loc-digits", "seed": 4},
            "server": {"price_per_1k_images": PRICE},
        }
    )
    with run.evals.open("w") as evals:
        for step, images in enumerate(evaluated_at):
            for split in splits:
                evals.write(
                    json.dumps({"step": step, "train_images": images, "split": split, "accuracy": step / 10})
                    + "\n"
                )
    train = Spend(requests=7, images=final_images, bytes=0, cost=cost_of(final_images, PRICE))
    evaluation = Spend(requests=3, images=90, bytes=0, cost=cost_of(90, PRICE))
    final = {split: {"accuracy": 0.9, "loss": 0.1} for split in splits}
    run.write_summary(Summary("blackvip", 6, "steps", 2.0, 1.0, train, evaluation, 1.0, final))
    return run


@pytest.mark.parametrize(
    ("evaluated_at", "final_images", "curve_images"),
    [
        ([0, 240, 480], 720, [0, 240, 480, 720]),  # the final point ends the curve
        ([0, 240, 480, 720], 720, [0, 240, 480, 720]),  # already evaluated there: not twice
        ([], 720, [720]),  # no evaluations during training: the final point alone
    ],
)
def test_the_curve_is_the_evaluations_then_the_final_point(
    tmp_path: Path, evaluated_at: list[int], final_images: int, curve_images: list[int]
) -> None:
    make_run(tmp_path / "run", evaluated_at, final_images)
    row, curve = read_run(tmp_path / "run")
    assert [point.train_images for point in curve] == curve_images
    assert all(point.train_cost == cost_of(point.train_images, PRICE) for point in curve)
    if evaluated_at[-1:] != [final_images]:
        assert curve[-1] == CurvePoint(final_images, cost_of(final_images, PRICE), 0.9)
    assert (row.dataset, row.seed, row.test_accuracy, row.requests) == ("loc-digits", 4, 0.9, 10)
    assert row.cost == cost_of(final_images, PRICE) + cost_of(90, PRICE)


def test_only_the_test_split_draws_the_curve(tmp_path: Path) -> None:
    make_run(tmp_path / "run", [0, 240], 480, splits=("val", "test"))
    _, curve = read_run(tmp_path / "run")
    assert [point.train_images for point in curve] == [0, 240, 480]


def test_folders_that_are_not_finished_runs_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    good = make_run(tmp_path / "good", [0], 120)
    (tmp_path / "empty").mkdir()
    unfinished = make_run(tmp_path / "unfinished", [0], 120)
    unfinished.summary.unlink()
    no_test = make_run(tmp_path / "no-test", [0], 120, splits=("val",))
    cases = {
        tmp_path / "empty": "is not a run folder: it has no config.json",
        unfinished.path: "has not finished (no summary.json)",
        no_test.path: "has no test evaluation (it evaluated val)",
    }
    for path, message in cases.items():
        with pytest.raises(BlackVIPError, match=re.escape(message)) as raised:
            write_report([good.path, path], tmp_path / "out")
        assert str(path) in str(raised.value)
    assert not (tmp_path / "out").exists()

"""TensorBoard scalars of a run: the real writer, read back with TensorBoard's own reader. Every start
rewrites the event file from the run's lines, so a resume never leaves a step twice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from client.training.rundir import RunDir, Spend, Summary
from client.training.scalars import EVAL_METRICS, TRAIN_METRICS, open_scalars
from tests.helpers import read_scalars


def metric_line(step: int, session: int) -> dict[str, float | int]:
    """A step's line; ``session`` changes the values, so a rewritten point is told from the old one."""
    return {
        "step": step,
        "loss": 1.0 / step + session,
        "accuracy": step / 100 + session / 10,
        "lr": 0.5 / step,
        "train_images": 120 * step,
        "requests": step + 1,
        "cost": 0.0012 * step,
        "wall_time": 0.25 * step,
    }


def train_for(run: RunDir, steps: range, session: int) -> None:
    """What the loop does per step: the metric line, then the scalars (the run is left unclosed: killed)."""
    scalars = open_scalars(run, True, elapsed=0.0)
    with run.metrics.open("a") as metrics:
        for step in steps:
            line = metric_line(step, session)
            metrics.write(json.dumps(line) + "\n")
            scalars.step(line)


def assert_points_equal_lines(run: RunDir, session_of: dict[int, int]) -> None:
    points = read_scalars(run.tensorboard)
    lines = run.metric_lines()
    assert [line["step"] for line in lines] == sorted(session_of)
    for key, tag in TRAIN_METRICS.items():
        steps = [step for step, _ in points[f"train/{tag}"]]
        assert steps == sorted(session_of), tag  # one point per step, in order
        expected = np.float32([metric_line(step, session_of[step])[key] for step in steps])
        assert np.array_equal(np.float32([value for _, value in points[f"train/{tag}"]]), expected), tag


def test_each_step_is_one_point_per_tag_with_the_lines_values(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_for(run, range(1, 8), session=0)
    assert_points_equal_lines(run, {step: 0 for step in range(1, 8)})


def test_a_resume_rewrites_the_killed_runs_points_as_its_lines(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_for(run, range(1, 13), session=0)  # killed after step 12; its checkpoint was at step 8
    before = read_scalars(run.tensorboard)["train/loss"]
    assert [step for step, _ in before] == list(range(1, 13))
    run.truncate_after(8)  # what a resume does to the lines
    train_for(run, range(9, 21), session=1)  # the resumed run computes steps 9-12 again
    assert_points_equal_lines(run, {**{s: 0 for s in range(1, 9)}, **{s: 1 for s in range(9, 21)}})
    assert len(list(run.tensorboard.iterdir())) == 1  # the killed session's file is gone


def test_evaluations_are_one_point_per_split_and_step_also_after_a_resume(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    results = {
        "test": {"accuracy": 0.5, "loss": 1.5, "macro_f1": 0.4},
        "val": {"accuracy": 0.6, "loss": 1.2, "macro_f1": 0.5},
    }
    with open_scalars(run, True, elapsed=0.0) as scalars:
        scalars.evaluations(0, results)
        scalars.evaluations(4, results)
        scalars.evaluations(4, results)  # the final evaluation on an evaluation step
    with run.evals.open("w") as evals:
        for step in (0, 4):
            evals.writelines(
                json.dumps({"step": step, "train_images": 10 * step, "split": split, **metrics}) + "\n"
                for split, metrics in results.items()
            )
    spend = Spend(requests=5, images=40, bytes=1, cost=0.0)
    final = {split: {**metrics, "accuracy": 0.75} for split, metrics in results.items()}
    summary = Summary("blackvip", 6, "steps", 2.0, 1.0, spend, spend, 3.0, final)
    run.write_summary(summary)
    with open_scalars(run, True, elapsed=3.0) as scalars:  # a finished run resumed: its files, again
        scalars.evaluations(6, final)  # and its final evaluation, made again: already there
    points = read_scalars(run.tensorboard)
    for split in results:
        for name in EVAL_METRICS:
            assert [step for step, _ in points[f"{split}/{name}"]] == [0, 4, 6], (split, name)
        assert [value for _, value in points[f"{split}/accuracy"]] == [
            np.float32(results[split]["accuracy"]),
            np.float32(results[split]["accuracy"]),
            0.75,
        ]


def test_off_writes_nothing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with open_scalars(run, False, elapsed=0.0) as scalars:
        scalars.step(metric_line(1, 0))
        scalars.evaluations(1, {"test": {"accuracy": 1.0, "loss": 0.0, "macro_f1": 1.0}})
    assert not run.tensorboard.exists()


def test_other_files_in_the_folder_are_kept(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_for(run, range(1, 3), session=0)
    note = run.tensorboard / "notes.txt"
    note.write_text("mine")
    train_for(run, range(3, 5), session=0)
    assert note.read_text() == "mine"
    assert_points_equal_lines(run, {step: 0 for step in range(1, 5)})

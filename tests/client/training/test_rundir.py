"""The run folder: atomic checkpoints and files, summaries, metric lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from client.data import atomic as atomic_module
from client.data.atomic import atomic_write_json
from client.data.sampler import BatchSampler
from client.training.rundir import RunDir, Spend, Summary

# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = RunDir(run_dir)
    assert run.load_checkpoint() is None
    generator = torch.Generator().manual_seed(3)
    sampler = BatchSampler(10, 3, seed=1)
    sampler.next_batch()
    state = {
        "step": 12,
        "params": torch.randn(50, generator=generator),
        "optimizer": {"k": 12, "momentum": torch.randn(50, generator=generator)},
        "rng": generator.get_state(),
        "sampler": sampler.state_dict(),
        "meter": {"loss": {"requests": 1, "images": 2, "bytes": 3}},
    }
    path = run.save_checkpoint(state)
    assert path == run_dir / "checkpoint.pt" and path.is_file()
    assert os.listdir(run_dir) == ["checkpoint.pt"]  # no temp files left behind
    loaded = run.load_checkpoint()
    assert loaded is not None
    assert loaded["step"] == 12 and loaded["meter"] == state["meter"]
    assert torch.equal(loaded["params"], state["params"])
    assert torch.equal(loaded["optimizer"]["momentum"], state["optimizer"]["momentum"])
    assert torch.equal(loaded["rng"], state["rng"])
    assert loaded["sampler"] == state["sampler"]
    # overwrite
    run.save_checkpoint({"step": 13})
    assert run.load_checkpoint() == {"step": 13}
    assert os.listdir(run_dir) == ["checkpoint.pt"]


def test_atomic_write_json_keeps_the_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out" / "metrics.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}

    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})  # not serialisable
    assert json.loads(path.read_text()) == {"b": 2}
    assert os.listdir(path.parent) == ["metrics.json"]

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_json(path, {"b": 3})  # fails after the temp file was written
    assert json.loads(path.read_text()) == {"b": 2}
    assert os.listdir(path.parent) == ["metrics.json"]  # the temp file was removed


# --------------------------------------------------------------------------- summary and metric lines


def _summary() -> Summary:
    return Summary(
        method="blackvip",
        steps=3,
        stopped_because="steps",
        first_loss=2.5,
        last_loss=1.25,
        train=Spend(requests=4, images=3840, bytes=100, cost=3.84, forwards=30),
        eval=Spend(requests=1, images=100, bytes=10, cost=0.1),
        wall_time=1.5,
        evaluations={"test": {"accuracy": 0.5}},
    )


def test_summary_is_written_as_the_documented_json_and_read_back(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert not run.finished()
    path = run.write_summary(_summary())
    assert path == tmp_path / "summary.json" and run.finished()
    data = json.loads(path.read_text())
    assert data["train"] == {"requests": 4, "images": 3840, "bytes": 100, "cost": 3.84, "forwards": 30}
    assert data["eval"]["forwards"] is None
    assert data["evaluations"]["test"]["accuracy"] == 0.5 and data["stopped_because"] == "steps"
    assert run.read_summary() == _summary()
    other = run.write_summary(_summary(), run.evaluation)
    assert other == tmp_path / "evaluation.json" and run.read_summary(other) == _summary()


def test_truncate_after_drops_only_lines_past_the_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4)))
    run.evals.write_text("".join(json.dumps({"step": s, "accuracy": 0.1}) + "\n" for s in (0, 2, 4)))
    run.truncate_after(2)
    assert [line["step"] for line in run.metric_lines()] == [1, 2]
    assert [line["step"] for line in run.eval_lines()] == [0, 2]
    assert RunDir(tmp_path / "empty").metric_lines() == []

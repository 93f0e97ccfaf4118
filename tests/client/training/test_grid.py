"""The grid runner: planning, skipping finished jobs, resuming stopped ones, the two executors, and the
table and plots written from the jobs' summaries."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from client.training import loop
from client.training.config import TrainConfig, build_config
from client.training.grid import GridJob, InProcessExecutor, LocalExecutor, plan_grid, plan_variants, run_grid
from client.training.grid_report import write_report
from client.training.rundir import RunDir, Spend, Summary


def _summary(accuracy: float, train_images: int, wall_time: float = 2.0) -> Summary:
    return Summary(
        method="blackvip",
        steps=3,
        stopped_because="steps",
        first_loss=1.0,
        last_loss=0.5,
        train=Spend(
            requests=4, images=train_images, bytes=10, cost=train_images / 1000, forwards=train_images // 4
        ),
        eval=Spend(requests=2, images=50, bytes=10, cost=0.05),
        wall_time=wall_time,
        evaluations={"test": {"accuracy": accuracy, "macro_f1": accuracy}},
    )


class Recorder:
    def __init__(self) -> None:
        self.ran: list[GridJob] = []

    def run(self, jobs: Sequence[GridJob]) -> list[GridJob]:
        self.ran.extend(jobs)
        return []


def test_plan_nests_datasets_methods_seeds_in_the_documented_folders(tmp_path: Path) -> None:
    jobs = plan_grid(tmp_path, ["eurosat", "dtd"], ["zeroshot", "blackvip"], [1, 2])
    assert [(j.dataset, j.method, j.seed) for j in jobs][:3] == [
        ("eurosat", "zeroshot", 1),
        ("eurosat", "zeroshot", 2),
        ("eurosat", "blackvip", 1),
    ]
    assert len(jobs) == 8
    assert jobs[-1].out.path == tmp_path / "dtd" / "blackvip" / "seed2"
    assert jobs[-1].name == "dtd/blackvip/seed2"


def test_plan_variants_nests_variants_seeds_under_the_task(tmp_path: Path) -> None:
    jobs = plan_variants(tmp_path, "loc-digits-1x1", "blackvip", ["float32", "uint8"], [1, 2])
    assert [(j.variant, j.seed) for j in jobs] == [("float32", 1), ("float32", 2), ("uint8", 1), ("uint8", 2)]
    assert {(j.dataset, j.method) for j in jobs} == {("loc-digits-1x1", "blackvip")}
    assert jobs[-1].out.path == tmp_path / "loc-digits-1x1" / "uint8" / "seed2"
    assert jobs[-1].name == "loc-digits-1x1/uint8/seed2" and jobs[-1].label == "uint8"


def test_finished_jobs_are_skipped_and_stopped_ones_resumed(tmp_path: Path) -> None:
    done, stopped, fresh = plan_grid(tmp_path, ["eurosat"], ["blackvip"], [1, 2, 3])
    done.out.write_summary(_summary(0.5, 120))
    stopped.out.path.mkdir(parents=True)
    stopped.out.checkpoint.write_bytes(b"a checkpoint")
    recorder = Recorder()
    assert run_grid([done, stopped, fresh], recorder) == []
    assert recorder.ran == [stopped, fresh]
    executor = LocalExecutor(["--data", "D"])
    assert executor.argv(stopped)[-1] == "--resume"
    assert "--resume" not in executor.argv(fresh)
    job_flags = ["--dataset", "eurosat", "--method", "blackvip", "--seed", "3", "--out", str(fresh.out.path)]
    assert executor.argv(fresh)[4:] == [*job_flags, "--data", "D"]


def test_local_executor_logs_each_job_and_returns_the_failed_ones(tmp_path: Path) -> None:
    jobs = plan_grid(tmp_path, ["eurosat"], ["zeroshot", "blackvip"], [1])
    # A stand-in for `blackvip train`: prints its flags, fails for blackvip.
    program = "import sys; print(' '.join(sys.argv[1:])); sys.exit('blackvip' in sys.argv)"
    stand_in = (sys.executable, "-c", program)
    failed = run_grid(jobs, LocalExecutor(["--steps", "3"], concurrency=2, command=stand_in))
    assert failed == [jobs[1]]
    for job in jobs:
        assert f"--method {job.method} --seed 1 --out {job.out.path} --steps 3" in job.out.log.read_text()
    run_grid(jobs, LocalExecutor(command=stand_in))  # a rerun appends to the logs
    assert jobs[0].out.log.read_text().count("--method") == 2


def test_in_process_executor_resumes_and_checks_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, bool]] = []
    monkeypatch.setattr(loop, "run_job", lambda config, resume: calls.append((config.out, resume)))
    jobs = plan_grid(tmp_path, ["loc-digits-1x1"], ["blackvip"], [1, 2])
    jobs[1].out.path.mkdir(parents=True)
    jobs[1].out.checkpoint.write_bytes(b"a checkpoint")

    def config_for(job: GridJob) -> TrainConfig:
        return build_config({"data": tmp_path, "out": job.out.path, "seed": job.seed})

    InProcessExecutor(config_for).run(jobs)
    assert calls == [(jobs[0].out.path, False), (jobs[1].out.path, True)]
    elsewhere = InProcessExecutor(lambda job: build_config({"data": tmp_path, "out": tmp_path / "other"}))
    with pytest.raises(ValueError, match="not"):
        elsewhere.run(jobs[:1])


def test_report_tabulates_the_finished_jobs_from_their_summaries(tmp_path: Path) -> None:
    jobs = plan_grid(tmp_path, ["eurosat", "dtd"], ["zeroshot", "blackvip"], [1, 2])
    accuracies = {job: 0.1 * index for index, job in enumerate(jobs)}
    for job in jobs:
        if job.name != "dtd/blackvip/seed2":  # not finished: left out
            job.out.write_summary(_summary(accuracies[job], 0 if job.method == "zeroshot" else 120, job.seed))
    (jobs[2].out.evals).write_text(
        '{"step": 0, "train_images": 0, "split": "test", "accuracy": 0.1}\n'
        '{"step": 3, "train_images": 120, "split": "test", "accuracy": 0.2}\n'
    )
    table = write_report(jobs, tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["dataset"], r["method"], r["seeds"]) for r in rows] == [
        ("eurosat", "zeroshot", "2"),
        ("eurosat", "blackvip", "2"),
        ("dtd", "zeroshot", "2"),
        ("dtd", "blackvip", "1"),
    ]
    blackvip = [100 * accuracies[job] for job in jobs[2:4]]
    assert float(rows[1]["accuracy_mean"]) == pytest.approx(statistics.mean(blackvip))
    assert float(rows[1]["accuracy_std"]) == pytest.approx(statistics.stdev(blackvip))
    assert float(rows[3]["accuracy_std"]) == 0.0
    assert float(rows[1]["requests"]) == 6 and float(rows[1]["cost"]) == pytest.approx(0.12 + 0.05)
    assert float(rows[1]["wall_time"]) == 1.5
    assert float(rows[1]["forwards"]) == 30
    assert table.splitlines()[3] == "| eurosat | blackvip | 2 | 25.0 ± 7.1 | 120 | 30 | 6 | 0.17 | 2 |"
    assert (tmp_path / "results.md").read_text() == table
    for dataset in ("eurosat", "dtd"):
        assert (tmp_path / f"{dataset}.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_from_before_forwards_were_counted_show_none(tmp_path: Path) -> None:
    old, new = plan_grid(tmp_path, ["eurosat"], ["blackvip"], [1, 2])
    old_summary = _summary(0.5, 120).to_json()
    del old_summary["train"]["forwards"]  # as written before the field existed
    old.out.path.mkdir(parents=True)
    old.out.summary.write_text(json.dumps(old_summary))
    assert old.out.read_summary().train.forwards is None
    new.out.write_summary(_summary(0.5, 120))
    table = write_report([old, new], tmp_path)
    assert table.splitlines()[2] == "| eurosat | blackvip | 2 | 50.0 ± 0.0 | 120 | n/a | 6 | 0.17 | 2 |"


def test_a_grid_with_no_finished_job_has_an_empty_table_and_no_plot(tmp_path: Path) -> None:
    jobs = plan_grid(tmp_path, ["eurosat"], ["blackvip"], [1])
    assert write_report(jobs, tmp_path).count("\n") == 2
    assert not (tmp_path / "eurosat.png").exists()
    assert RunDir(tmp_path).log == tmp_path / "job.log"


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrency_runs_that_many_jobs_at_once(tmp_path: Path, concurrency: int) -> None:
    jobs = plan_grid(tmp_path / "runs", ["eurosat"], ["zeroshot", "blackvip"], [1])
    gate = tmp_path / "gate"
    gate.mkdir()
    # Each stand-in job checks in, then waits (up to 5 s) for a second job to check in beside it.
    program = (
        "import pathlib, sys, time, uuid; gate = pathlib.Path(sys.argv[1]); "
        "(gate / uuid.uuid4().hex).touch(); deadline = time.time() + 5\n"
        "while len(list(gate.iterdir())) < 2 and time.time() < deadline: time.sleep(0.01)\n"
        "sys.exit(len(list(gate.iterdir())) < 2)"
    )
    executor = LocalExecutor(concurrency=concurrency, command=(sys.executable, "-c", program, str(gate)))
    failed = run_grid(jobs, executor)
    assert failed == ([] if concurrency == 2 else [jobs[0]])  # one at a time: the first waits alone


def test_a_ray_task_decides_skip_or_resume_when_it_starts(tmp_path: Path) -> None:
    from client.training.grid import job_flags
    from client.training.grid_ray import run_train_job

    done, stopped, fresh = plan_grid(tmp_path, ["eurosat"], ["blackvip"], [1, 2, 3])
    stand_in = (
        sys.executable,
        "-c",
        "import sys; print(' '.join(sys.argv[1:])); sys.exit('--seed 2' in ' '.join(sys.argv))",
    )
    done.out.write_summary(_summary(0.5, 120))
    assert run_train_job(job_flags(done, []), str(done.out.path), stand_in) == 0  # finished: nothing run
    assert not done.out.log.exists()
    stopped.out.path.mkdir(parents=True)
    stopped.out.checkpoint.write_bytes(b"left by the attempt whose worker died")
    assert run_train_job(job_flags(stopped, ["--steps", "3"]), str(stopped.out.path), stand_in) == 1
    assert stopped.out.log.read_text().strip().endswith("--steps 3 --resume")
    assert run_train_job(job_flags(fresh, []), str(fresh.out.path), stand_in) == 0
    assert "--resume" not in fresh.out.log.read_text()


def test_the_bench_takes_its_executor_from_its_flags(tmp_path: Path) -> None:
    import argparse

    from client._exceptions import BlackVIPError
    from client.cli.grid import add_bench_flags, executor_for
    from client.training.grid_ray import RayExecutor

    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    add_bench_flags(parser)
    base = ["--data", str(tmp_path), "--datasets", "eurosat", "--checkpoint-every", "5"]
    local = executor_for(parser.parse_args([*base, "--concurrency", "2"]))
    assert isinstance(local, LocalExecutor) and local.concurrency == 2
    assert local.flags[-2:] == ["--checkpoint-every", "5"]  # passed on to every job
    on_ray = executor_for(
        parser.parse_args([*base, "--executor", "ray", "--ray-address", "head.example:6379"])
    )
    assert isinstance(on_ray, RayExecutor) and on_ray.address == "head.example:6379"
    assert on_ray.flags == local.flags
    with pytest.raises(BlackVIPError, match="--executor ray"):
        executor_for(parser.parse_args([*base, "--ray-address", "head.example:6379"]))

"""A grid of training jobs (datasets x methods x seeds), one run folder each, run by an executor.

A job whose folder holds a summary is finished and skipped; one with a checkpoint is resumed. So a
grid that was interrupted continues where it stopped when it is run again, and finished jobs are never
run twice. Executors: :class:`LocalExecutor` runs each job as a ``blackvip train`` subprocess
(``blackvip bench``), :class:`InProcessExecutor` runs them one after the other in this process (the
benchmark scripts, which build each job's settings themselves), and ``RayExecutor``
(:mod:`client.training.grid_ray`) runs each as a Ray task (``blackvip bench --executor ray``).

Imports no torch: ``blackvip bench`` plans, runs subprocesses and tabulates without it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from client.training.config import TrainConfig
from client.training.rundir import RunDir, Summary

__all__ = [
    "Executor",
    "GridJob",
    "InProcessExecutor",
    "LocalExecutor",
    "finished_summaries",
    "job_flags",
    "plan_grid",
    "plan_variants",
    "run_grid",
]

log = logging.getLogger(__name__)

TRAIN_COMMAND = (sys.executable, "-m", "client.cli", "train")


@dataclass(frozen=True)
class GridJob:
    """One cell of the grid. ``variant`` names what a grid compares when it is not the method (the
    Coordinator encoder in bench/encoders.py); it is only a label, the settings come from the executor."""

    dataset: str
    method: str
    seed: int
    out: RunDir
    variant: str | None = None

    @property
    def label(self) -> str:
        return self.variant or self.method

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.label}/seed{self.seed}"

    def resumes(self) -> bool:
        """A checkpoint: the job was stopped part way (a finished one is skipped before this is asked)."""
        return self.out.checkpoint.exists()


def plan_grid(
    workdir: Path, datasets: Iterable[str], methods: Iterable[str], seeds: Iterable[int]
) -> list[GridJob]:
    """Every (dataset, method, seed), in that nesting order, in ``workdir/<dataset>/<method>/seed<S>``."""
    methods, seeds = list(methods), list(seeds)
    return [
        GridJob(dataset, method, seed, RunDir(workdir / dataset / method / f"seed{seed}"))
        for dataset in datasets
        for method in methods
        for seed in seeds
    ]


def plan_variants(
    workdir: Path, dataset: str, method: str, variants: Iterable[str], seeds: Iterable[int]
) -> list[GridJob]:
    """One method compared across variants (an encoder, a wire dtype): every (variant, seed), in that
    nesting order, in ``workdir/<dataset>/<variant>/seed<S>``."""
    seeds = list(seeds)
    return [
        GridJob(dataset, method, seed, RunDir(workdir / dataset / variant / f"seed{seed}"), variant=variant)
        for variant in variants
        for seed in seeds
    ]


def job_flags(job: GridJob, flags: Sequence[str]) -> list[str]:
    """The ``blackvip train`` flags of one job, before ``--resume`` (which depends on its folder when it
    starts): its cell of the grid, its folder, and the flags every job gets."""
    cell = ["--dataset", job.dataset, "--method", job.method, "--seed", str(job.seed)]
    return [*cell, "--out", str(job.out.path), *flags]


class Executor(Protocol):
    def run(self, jobs: Sequence[GridJob]) -> list[GridJob]:
        """Run the jobs (none of them finished); return those that failed."""
        ...


@dataclass(frozen=True)
class LocalExecutor:
    """Each job a ``blackvip train`` subprocess on this machine, ``concurrency`` at once, its output
    appended to the job's log. ``flags`` are the training flags every job gets (data, server, length);
    ``command`` is the program (tests put a stand-in there)."""

    flags: Sequence[str] = ()
    concurrency: int = 1
    command: Sequence[str] = TRAIN_COMMAND

    def argv(self, job: GridJob) -> list[str]:
        argv = [*self.command, *job_flags(job, self.flags)]
        return argv + ["--resume"] if job.resumes() else argv

    def run(self, jobs: Sequence[GridJob]) -> list[GridJob]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            succeeded = list(pool.map(self._run_one, jobs))
        return [job for job, ok in zip(jobs, succeeded, strict=True) if not ok]

    def _run_one(self, job: GridJob) -> bool:
        job.out.path.mkdir(parents=True, exist_ok=True)
        log.info("start %s / %s / seed %d", job.dataset, job.label, job.seed)
        with job.out.log.open("ab") as output:
            code = subprocess.run(self.argv(job), stdout=output, stderr=subprocess.STDOUT).returncode
        outcome = "done" if code == 0 else f"FAILED ({code})"
        log.info("%s %s / %s / seed %d", outcome, job.dataset, job.label, job.seed)
        return code == 0


@dataclass(frozen=True)
class InProcessExecutor:
    """The jobs one after the other in this process, each with the settings ``config_for`` gives it
    (its ``out`` must be the job's folder). A job that fails raises: the caller stops there, and
    running the grid again resumes that job."""

    config_for: Callable[[GridJob], TrainConfig]

    def run(self, jobs: Sequence[GridJob]) -> list[GridJob]:
        from client.training.loop import run_job  # torch: only for jobs run here

        for job in jobs:
            config = self.config_for(job)
            if config.out != job.out.path:
                raise ValueError(f"{job.name}: its settings write to {config.out}, not {job.out.path}")
            log.info("%s / %s / seed %d", job.dataset, job.label, job.seed)
            run_job(config, resume=job.resumes())
        return []


def run_grid(jobs: Sequence[GridJob], executor: Executor) -> list[GridJob]:
    """Run the jobs that have not finished; returns those that failed."""
    todo = [job for job in jobs if not job.out.finished()]
    log.info("%d jobs, %d finished already, %d to run", len(jobs), len(jobs) - len(todo), len(todo))
    return executor.run(todo) if todo else []


def finished_summaries(jobs: Iterable[GridJob]) -> dict[GridJob, Summary]:
    """The summaries of the jobs that have finished, in the jobs' order."""
    return {job: job.out.read_summary() for job in jobs if job.out.finished()}

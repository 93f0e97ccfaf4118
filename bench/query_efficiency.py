"""Query efficiency of the zeroth-order options: BlackVIP on the offline digit tasks with the seed's
SPSA-GC and with each variant (update rule, clipping, subspace, pairs q, batch size), at equal
training-image budgets, over several seeds, every job through a real toy-digits server started here.

    python bench/query_efficiency.py                                   # every variant, the default budgets
    python bench/query_efficiency.py --variants seed b32 --budgets 64000 160000
    python bench/query_efficiency.py --report-only                     # tabulate what has finished

Each job runs to the largest budget and evaluates val and test every time its training images reach a
multiple of the budgets' greatest common step, so one run gives its accuracy at every budget. Each job
queries under an API key of its own, so the server's ledger tells what it spent (``ledger.json`` in the
job's folder, read after the grid). Finished jobs are reused and a stopped one resumes, so an interrupted
run continues; a finished job is not lengthened by a later, larger budget unless ``--lengthen`` is given
(then it resumes from its final checkpoint: the optimisers' schedules do not depend on the run's length,
and a resume is bit-identical to a straight run, so it ends as a job run to that budget would). The report
(bench/query_efficiency_report.py) covers every variant with a finished job in the work folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial, reduce
from pathlib import Path
from typing import Any

from query_efficiency_report import ReportInputs, write_report
from query_efficiency_rule import render_rule

from client import BlackVIPClient
from client.local_server import local_server
from client.training.config import TrainConfig, build_config
from client.training.grid import GridJob, InProcessExecutor, finished_summaries, run_grid
from client.training.plan import images_per_step, steps_for_images
from client.training.rundir import RunDir
from digits.tasks import write_task_folder

__all__ = ["BUDGETS", "VARIANTS", "Variant", "job_config", "main", "plan", "run_jobs"]

log = logging.getLogger("query_efficiency")

BUDGETS = (64_000, 128_000, 160_000, 256_000, 640_000)  # training images; 160k: the target


@dataclass(frozen=True)
class Variant:
    """Settings over the task's BlackVIP preset (the seed's SPSA-GC: a 0.01, c 0.01, q 5, batch 128)."""

    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# the ES for its first 64,000 images (50 steps of 20 x 64), then SPSA-GC (q 5: 640 images a step)
HYBRID = {"optimizer": "cma-es-spsa-gc", "es_dim": 500, "es_popsize": 20, "batch_size": 64, "es_steps": 50}
VARIANTS: dict[str, Variant] = {
    "seed": Variant({}, "the seed's SPSA-GC"),
    "zeroshot": Variant({"method": "zeroshot"}, "no prompt"),
    # ZIP's update: plain SPSA with the estimate's norm clipped at sqrt(d), in the full space
    "zip-clip": Variant({"optimizer": "spsa", "clip": "zip"}, "SPSA, ZIP's clip"),
    "gc-zip-clip": Variant({"clip": "zip"}, "SPSA-GC, ZIP's clip"),
    # ZIP's recipe: intrinsic dimension 500, rank 5, clip, plain SPSA
    "zip": Variant(
        {"optimizer": "spsa", "clip": "zip", "subspace_dim": 500, "subspace_rank": 5},
        "SPSA, ZIP's clip, low-rank subspace (D 500, rank 5)",
    ),
    "zip-a0.4": Variant(
        {"optimizer": "spsa", "clip": "zip", "subspace_dim": 500, "subspace_rank": 5, "a": 0.4},
        "SPSA, ZIP's clip, low-rank subspace (D 500, rank 5), a 0.4",
    ),
    "subspace-500": Variant({"subspace_dim": 500}, "SPSA-GC in a random 500-d subspace"),
    "adam": Variant({"optimizer": "spsa-adam", "a": 0.001}, "ZO-Adam, a 0.001"),
    "adam-a0.01": Variant({"optimizer": "spsa-adam", "a": 0.01}, "ZO-Adam, a 0.01"),
    "sign": Variant({"optimizer": "spsa-sign", "a": 0.001}, "ZO-signSGD, a 0.001"),
    "sign-a0.003": Variant({"optimizer": "spsa-sign", "a": 0.003}, "ZO-signSGD, a 0.003"),
    "q1": Variant({"q": 1, "a": 0.002}, "SPSA-GC, q 1, a 0.002"),
    # the named optimiser chosen from this screen (presets.toml [optimizers.spsa-gc-q1]: q 1, a 0.002)
    "spsa-gc-q1": Variant({"optimizer": "spsa-gc-q1"}, "--optimizer spsa-gc-q1 (SPSA-GC, q 1, a 0.002)"),
    "q1-clip": Variant({"q": 1, "clip": "zip"}, "SPSA-GC, q 1, ZIP's clip"),
    "b64": Variant({"batch_size": 64}, "SPSA-GC, batch 64"),
    "b32": Variant({"batch_size": 32}, "SPSA-GC, batch 32"),
    "b16": Variant({"batch_size": 16}, "SPSA-GC, batch 16"),
    "b32-a0.02": Variant({"batch_size": 32, "a": 0.02}, "SPSA-GC, batch 32, a 0.02"),
    "b32-a0.005": Variant({"batch_size": 32, "a": 0.005}, "SPSA-GC, batch 32, a 0.005"),
    "b32-clip": Variant({"batch_size": 32, "clip": "zip"}, "SPSA-GC, batch 32, ZIP's clip"),
    # a random subspace needs a larger step: E[P g_z] = P P^T grad, about D / d of the full step
    "subspace-500-a0.4": Variant(
        {"subspace_dim": 500, "a": 0.4}, "SPSA-GC in a random 500-d subspace, a 0.4"
    ),
    "subspace-500-a1": Variant({"subspace_dim": 500, "a": 1.0}, "SPSA-GC in a random 500-d subspace, a 1"),
    "b32-subspace-500-a0.8": Variant(
        {"batch_size": 32, "subspace_dim": 500, "a": 0.8}, "SPSA-GC, batch 32, random 500-d subspace, a 0.8"
    ),
    "b32-subspace-200-a1": Variant(
        {"batch_size": 32, "subspace_dim": 200, "a": 1.0}, "SPSA-GC, batch 32, random 200-d subspace, a 1"
    ),
    "b32-q1": Variant({"batch_size": 32, "q": 1, "a": 0.002}, "SPSA-GC, batch 32, q 1, a 0.002"),
    "q1-subspace-500-a0.08": Variant(
        {"q": 1, "subspace_dim": 500, "a": 0.08}, "SPSA-GC, q 1, random 500-d subspace, a 0.08"
    ),
    "b32-subspace-500-a0.4": Variant(
        {"batch_size": 32, "subspace_dim": 500, "a": 0.4}, "SPSA-GC, batch 32, random 500-d subspace, a 0.4"
    ),
    # evolution strategies (issue 30), r0 10 (the default): sigma0 = r0 / sqrt(dimension searched)
    "cma-d100": Variant(
        {"optimizer": "cma-es", "es_dim": 100, "es_popsize": 10}, "CMA-ES, d 100, sigma0 1.0, lambda 10"
    ),
    "cma-d500": Variant(
        {"optimizer": "cma-es", "es_dim": 500, "es_popsize": 10}, "CMA-ES, d 500, sigma0 0.447, lambda 10"
    ),
    "cma-d500-l20-b64": Variant(
        {"optimizer": "cma-es", "es_dim": 500, "es_popsize": 20, "batch_size": 64},
        "CMA-ES, d 500, sigma0 0.447, lambda 20, batch 64",
    ),
    "sep-cma": Variant(
        {"optimizer": "sep-cma-es", "es_popsize": 10}, "sep-CMA-ES over every value, sigma0 0.067, lambda 10"
    ),
    "cma-d500-then-gc": Variant(HYBRID, "CMA-ES (d 500, lambda 20, batch 64) for 64k images, then SPSA-GC"),
    # the same with SPSA-GC's a at 0.003: its first step about the size the seed's schedule reaches by step 51
    # (0.01 / 52^0.4), so the SPSA phase does not start with steps as large as a fresh run's
    "cma-d500-then-gc-a0.003": Variant(
        {**HYBRID, "a": 0.003},
        "CMA-ES (d 500, lambda 20, batch 64) for 64k images, then SPSA-GC with a 0.003",
    ),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/query_efficiency.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["loc-digits-1x1"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), help="training images")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-query-efficiency"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/query_efficiency.md"))
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="serve these toy-digits weights, not the shipped ones (e.g. an earlier checkpoint from git)",
    )
    parser.add_argument("--note", default="", help="a paragraph to put above the report's tables")
    parser.add_argument("--report-only", action="store_true", help="tabulate finished jobs, run nothing")
    parser.add_argument(
        "--lengthen",
        action="store_true",
        help="resume finished jobs that stopped short of the largest budget (their summary kept aside)",
    )
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[GridJob]:
    """A job per task, variant and seed in WORKDIR/<task>/<variant>/seed<S> (zero-shot: seed 1 only)."""
    jobs = []
    for task in args.tasks:
        for variant in args.variants:
            method = VARIANTS[variant].settings.get("method", "blackvip")
            for seed in args.seeds[:1] if method == "zeroshot" else args.seeds:
                out = RunDir(args.workdir / task / variant / f"seed{seed}")
                jobs.append(GridJob(task, method, seed, out, variant=variant))
    return jobs


def job_key(job: GridJob) -> str:
    """The job's API key: its ledger rows are its own."""
    return f"qe-{job.dataset}-{job.label}-seed{job.seed}"


def job_config(args: argparse.Namespace, url: str, job: GridJob) -> TrainConfig:
    variant = VARIANTS[job.label]
    base = {
        "url": url,
        "api_key": job_key(job),
        "dataset": job.dataset,
        "data": write_task_folder(job.dataset, args.workdir / "data" / job.dataset),  # kept if complete
        "seed": job.seed,
        "out": job.out.path,
        "eval_splits": ["val", "test"],
    }
    config = build_config({**base, **variant.settings})
    if not images_per_step(config):
        return config  # zero-shot: evaluation only
    return config.model_copy(update=phased_run_length(args.budgets, config, job.label))


def run_length(budgets: Sequence[int], per_step: int, label: str) -> dict[str, int]:
    """Steps to the largest budget, and evaluations at every budget (their steps' greatest common divisor)."""
    steps = []
    for budget in budgets:
        if budget % per_step:
            raise SystemExit(f"{label}: {per_step} training images a step do not divide the budget {budget}")
        steps.append(budget // per_step)
    return {"steps": max(steps), "budget_images": max(budgets), "eval_every": reduce(math.gcd, steps)}


def phased_run_length(budgets: Sequence[int], config: TrainConfig, label: str) -> dict[str, int]:
    """:func:`run_length` for images a step that may change within the run (the ES-then-SPSA hybrid):
    every budget must end on a step."""
    steps = []
    for budget in budgets:
        at = steps_for_images(config, budget)
        if at is None:
            raise SystemExit(f"{label}: no step of {config.optimizer} ends at the budget {budget} images")
        steps.append(at)
    return {"steps": max(steps), "budget_images": max(budgets), "eval_every": reduce(math.gcd, steps)}


def record_ledger(url: str, jobs: Sequence[GridJob], key: Callable[[GridJob], str] = job_key) -> None:
    """What the server's ledger charged each finished job's key, per endpoint, into ``ledger.json``."""
    for job in finished_summaries(jobs):
        with BlackVIPClient(url, key(job)) as api:
            usage = api.usage()
        counts = {name: usage.by_endpoint[name].model_dump() for name in usage.by_endpoint}
        record = {"key_id": usage.key_id, "by_endpoint": counts, "total": usage.total.model_dump()}
        (job.out.path / "ledger.json").write_text(json.dumps(record, indent=1) + "\n")


def run_jobs(
    workdir: Path,
    jobs: Sequence[GridJob],
    config_for: Callable[[str, GridJob], TrainConfig],
    key: Callable[[GridJob], str],
    server_flags: Sequence[str] = (),
) -> None:
    """``jobs`` through a toy-digits server started in ``workdir`` with a key per job (``key``), each
    configured by ``config_for(url, job)``; then each finished job's ledger record (:func:`record_ledger`)."""
    keys = ",".join(key(job) for job in jobs)
    with local_server(workdir, "--api-keys", keys, *server_flags) as url:
        failed = run_grid(jobs, InProcessExecutor(partial(config_for, url)))
        record_ledger(url, jobs, key)
    if failed:
        log.warning("%d jobs failed: %s", len(failed), ", ".join(job.name for job in failed))


def reopen_short(jobs: Sequence[GridJob], budget: int) -> list[GridJob]:
    """The finished jobs that stopped short of ``budget`` training images, reopened: each one's summary moved
    to ``summary-<images>.json`` beside it, so the grid resumes it from its final checkpoint."""
    reopened = []
    for job, summary in finished_summaries(jobs).items():
        if summary.train.images < budget:
            job.out.summary.rename(job.out.path / f"summary-{summary.train.images}.json")
            reopened.append(job)
    return reopened


def run_all(args: argparse.Namespace) -> None:
    jobs = plan(args)
    if args.lengthen and (reopened := reopen_short(jobs, max(args.budgets))):
        log.info("lengthening %d finished jobs to %d images", len(reopened), max(args.budgets))
    weights = ["--checkpoint", str(args.checkpoint)] if args.checkpoint else []
    run_jobs(args.workdir, jobs, partial(job_config, args), job_key, weights)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_all(args)
    budgets = sorted({*BUDGETS, *args.budgets})
    notes = {name: variant.note for name, variant in VARIANTS.items()}
    inputs = ReportInputs(args.workdir, list(VARIANTS), notes, budgets, args.note)
    table = write_report(inputs, args.out, [render_rule])
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

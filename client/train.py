"""The training job: few-shot data, a method, and a linear loop of zeroth-order steps through the API.

Everything a resume needs is checkpointed atomically every N steps (prompt parameters and buffers,
optimiser state, step, RNG states, sampler, meters), so a killed job continues to the same final
parameters as an uninterrupted one. If the server goes away for longer than ``max_wait_seconds``
the job saves the state from the start of the failed step and stops with :class:`JobInterruptedError`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from client._exceptions import (
    BlackVIPError,
    JobInterruptedError,
    ServerUnavailableError,
    TrainingDivergedError,
    TransportError,
)
from client._meter import QueryMeter
from client.checkpoint import atomic_write_json, load_checkpoint
from client.config import TrainConfig
from client.evaluate import evaluate
from client.job import EVALS_NAME, METRICS_NAME, Job
from client.objective import RemoteLoss
from client.zo import StepResult, divergence

__all__ = ["EVALS_NAME", "JobResult", "run_evaluation", "run_job"]

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_dir: Path
    steps: int
    stopped_because: str
    train_meter: QueryMeter
    eval_meter: QueryMeter
    first_loss: float | None
    last_loss: float | None
    evaluations: dict[str, dict[str, object]] = field(default_factory=dict)
    summary_path: Path | None = None


def run_job(config: TrainConfig, resume: bool = False) -> JobResult:
    job = Job(config, resume)
    reason = "evaluation only"
    if job.method.optimizer is not None:
        reason = _train(job)
        job.save()
    first_loss, last_loss = _first_and_last_loss(job.run_dir / METRICS_NAME)
    result = JobResult(
        job.run_dir,
        job.step,
        reason,
        job.train_api.meter,
        job.eval_api.meter,
        first_loss,
        last_loss,
        _evaluate_all(job),
    )
    result.summary_path = _write_summary(job, result)
    job.train_api.close()
    job.eval_api.close()
    return result


def _train(job: Job) -> str:
    """The loop; returns why it stopped."""
    config, optimizer = job.config, job.method.optimizer
    per_step = config.batch_size * optimizer.evaluations_per_step()
    bar = tqdm(total=job.total_steps, initial=job.step, desc=config.method, disable=None)
    with (job.run_dir / METRICS_NAME).open("a") as metrics, (job.run_dir / EVALS_NAME).open("a") as evals:
        if config.eval_every and job.step == 0:
            _log_evaluations(job, evals)  # the curve starts at zero images queried
        while (reason := job.stop_reason(per_step)) is None:
            result = _step(job)
            line = job.metrics_line(result.loss, result.accuracy, result.learning_rate)
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.loss:.3f}",
                acc=f"{result.accuracy:.2f}",
                imgs=line["train_images"],
                cost=f"{line['cost']:.3f}",
            )
            if job.step % config.checkpoint_every == 0:
                job.save()
            if config.eval_every and job.step % config.eval_every == 0:
                _log_evaluations(job, evals)
    bar.close()
    return reason


def _step(job: Job) -> StepResult:
    """One optimiser step; if the server stays away, save the state from before it and stop."""
    start_state = job.state()
    batch = job.sampler.next_batch()
    pixels = job.train_set.images(batch, job.augment_generator).float() / 255.0  # (B, 3, S, S) in [0, 1]
    labels = job.train_set.labels[batch]  # (B,)
    try:
        result = job.method.optimizer.step(
            job.prompter.get_vector(), job.remote.oracle(pixels, labels), job.generator
        )
    except (TransportError, ServerUnavailableError) as exc:
        start_state["train_meter"] = job.train_api.meter.to_dict()  # queries spent are real cost
        job.save(start_state)
        raise JobInterruptedError(
            f"server unreachable for over {job.config.max_wait_seconds:.0f} s at step {job.step + 1} "
            f"({exc}); checkpoint saved in {job.run_dir}: rerun with --resume"
        ) from exc
    except FloatingPointError as exc:  # the oracle refused non-finite prompted images
        _diverged(job, str(exc))
    problem = divergence(result)
    if problem is not None:
        _diverged(job, problem)
    job.prompter.set_vector(result.params)
    job.step += 1
    return result


def _diverged(job: Job, problem: str) -> NoReturn:
    """Stop: the step's result is not kept, and the checkpoint on disk (the last one written before
    this step) stays as it is, so the run can be inspected, or restarted with other settings."""
    saved = load_checkpoint(job.run_dir)
    kept = f"the last good checkpoint (step {saved['step']})" if saved else "no checkpoint yet"
    raise TrainingDivergedError(
        f"training diverged at step {job.step + 1}: {problem}; stopped, {kept} kept in {job.run_dir}. "
        f"Lower the learning rate (a, or BAR's init_lr) or the perturbation c"
    )


def _log_evaluations(job: Job, evals) -> None:
    for split, result in _evaluate_all(job).items():
        summary = {k: v for k, v in result.items() if k != "per_class_accuracy"}  # that one: summary.json
        line = {"step": job.step, "train_images": job.train_api.meter.images, "split": split, **summary}
        evals.write(json.dumps(line) + "\n")
    evals.flush()


def _first_and_last_loss(path: Path) -> tuple[float | None, float | None]:
    losses = [json.loads(line)["loss"] for line in path.read_text().splitlines()] if path.exists() else []
    return (losses[0], losses[-1]) if losses else (None, None)


def _evaluate_all(job: Job) -> dict[str, dict[str, object]]:
    remote = RemoteLoss(
        job.eval_api, job.info, job.task_id, job.prompter, "ce", wire_dtype=job.config.wire_dtype
    )
    results = {}
    for split, images in job.eval_sets.items():
        results[split] = evaluate(remote, job.prompter, images, job.config.eval_batch).as_dict()
        log.info(
            "%s accuracy %.4f, macro-F1 %.4f over %d images",
            split,
            results[split]["accuracy"],
            results[split]["macro_f1"],
            len(images),
        )
    return results


def _write_summary(job: Job, result: JobResult, name: str = "summary.json") -> Path:
    price = job.info.price_per_1k_images
    path = job.run_dir / name
    atomic_write_json(
        path,
        {
            "method": job.config.method,
            "steps": result.steps,
            "stopped_because": result.stopped_because,
            "first_loss": result.first_loss,
            "last_loss": result.last_loss,
            "evaluations": result.evaluations,
            "train": {**_totals(result.train_meter), "cost": result.train_meter.images * price / 1000.0},
            "eval": {**_totals(result.eval_meter), "cost": result.eval_meter.images * price / 1000.0},
            "wall_time": round(job.elapsed_before + time.monotonic() - job.started, 3),
        },
    )
    return path


def run_evaluation(config: TrainConfig, run_dir: Path | None) -> JobResult:
    """Zero-shot evaluation (no ``run_dir``), or the evaluation of a run's last checkpoint."""
    if run_dir is None:
        return run_job(config.model_copy(update={"method": "zeroshot"}))
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise BlackVIPError(f"no checkpoint in {run_dir}")
    # The base-to-new protocol evaluates a run trained on base classes on the new ones: the evaluation's
    # own --subsample-classes wins over the checkpoint's.
    given = config.model_dump(include={"url", "eval_splits", "eval_batch", "data", "subsample_classes"})
    saved = TrainConfig(**{**checkpoint["config"], **given, "api_key": config.api_key, "out": run_dir})
    job = Job(saved, resume=True, evaluation_only=True)
    result = JobResult(
        run_dir,
        job.step,
        "evaluation only",
        job.train_api.meter,
        job.eval_api.meter,
        None,
        None,
        _evaluate_all(job),
    )
    result.summary_path = _write_summary(job, result, name="evaluation.json")
    return result


def _totals(meter: QueryMeter) -> dict[str, int]:
    return {"requests": meter.requests, "images": meter.images, "bytes": meter.bytes}

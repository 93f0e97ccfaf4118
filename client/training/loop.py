"""The training job: few-shot data, a method, and a linear loop of zeroth-order steps through the API.

Everything a resume needs is checkpointed atomically every N steps (prompt parameters and buffers,
optimiser state, step, RNG states, sampler, meters), so a killed job continues to the same final
parameters as an uninterrupted one. If the server goes away for longer than ``max_wait_seconds``
the job saves the state from the start of the failed step and stops with :class:`JobInterruptedError`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from tqdm import tqdm

from client._exceptions import (
    BlackVIPError,
    JobInterruptedError,
    QuotaExceededError,
    RateLimitedError,
    ServerUnavailableError,
    TrainingDivergedError,
    TransportError,
)
from client._meter import QueryMeter
from client.training.config import FROM_EVALUATION, TrainConfig
from client.training.evaluate import evaluate
from client.training.job import Job, start_job
from client.training.objective import RemoteLoss
from client.training.rundir import RunDir, Spend, Summary
from client.training.scalars import ScalarLog, open_scalars
from client.training.zo import StepResult, divergence

__all__ = ["JobResult", "run_evaluation", "run_job", "train_step"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    run: RunDir
    summary: Summary
    summary_path: Path
    train_meter: QueryMeter
    eval_meter: QueryMeter


def run_job(config: TrainConfig, resume: bool = False) -> JobResult:
    job = start_job(config, resume)
    with open_scalars(job.run, config.tensorboard, job.state.elapsed()) as scalars:
        reason = "evaluation only"
        if job.method.optimizer is not None:
            reason = _train(job, scalars)
            job.save()
        losses = [line["loss"] for line in job.run.metric_lines()]
        evaluations = _evaluate_all(job)
        scalars.evaluations(job.state.step, evaluations)
    summary = _summary(job, reason, losses, evaluations)
    return _finish(job, summary, job.run.summary)


def run_evaluation(config: TrainConfig, run_dir: Path | None) -> JobResult:
    """Zero-shot evaluation (no ``run_dir``), or the evaluation of a run's last checkpoint."""
    if run_dir is None:
        return run_job(config.model_copy(update={"method": "zeroshot"}))
    checkpoint = RunDir(run_dir).load_checkpoint()
    if checkpoint is None:
        raise BlackVIPError(f"no checkpoint in {run_dir}")
    # The base-to-new protocol evaluates a run trained on base classes on the new ones: the evaluation's
    # own --subsample-classes wins over the checkpoint's.
    given = config.model_dump(include=set(TrainConfig.tagged(FROM_EVALUATION)))
    saved = TrainConfig(**{**checkpoint["config"], **given, "api_key": config.api_key, "out": run_dir})
    job = start_job(saved, resume=True, evaluation_only=True)
    summary = _summary(job, "evaluation only", [], _evaluate_all(job))
    return _finish(job, summary, job.run.evaluation)


def _finish(job: Job, summary: Summary, path: Path) -> JobResult:
    job.run.write_summary(summary, path)
    job.remote.close()
    job.session.close()
    return JobResult(job.run, summary, path, job.session.train_api.meter, job.session.eval_api.meter)


def _train(job: Job, scalars: ScalarLog) -> str:
    """The loop; returns why it stopped."""
    config, optimizer, state = job.config, job.method.optimizer, job.state
    assert optimizer is not None
    bar = tqdm(total=job.total_steps, initial=state.step, desc=config.method, disable=None)
    with job.run.metrics.open("a") as metrics, job.run.evals.open("a") as evals:
        if config.eval_every and state.step == 0:
            _log_evaluations(job, evals, scalars)  # the curve starts at zero images queried
        # the next step's images: a hybrid's evaluations per step change when it switches optimiser
        while (reason := job.stop_reason(config.batch_size * optimizer.evaluations_per_step())) is None:
            result = train_step(job)
            line = job.metrics_line(result.loss, result.accuracy, result.learning_rate)
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            scalars.step(line)
            bar.update(1)
            bar.set_postfix(
                loss=f"{result.loss:.3f}",
                acc=f"{result.accuracy:.2f}",
                imgs=line["train_images"],
                cost=f"{line['cost']:.3f}",
            )
            if state.step % config.checkpoint_every == 0:
                job.save()
            if config.eval_every and state.step % config.eval_every == 0:
                _log_evaluations(job, evals, scalars)
    bar.close()
    return reason


def train_step(job: Job) -> StepResult:
    """One optimiser step; if the server stays away or refuses the key more queries (quota, rate), save
    the state from before it and stop with :class:`JobInterruptedError` (exit status 3)."""
    state = job.state
    assert job.method.optimizer is not None
    start = job.checkpoint()
    batch = state.sampler.next_batch()
    pixels = job.inputs.train.images(batch, state.augment_generator).float() / 255.0  # (B, 3, S, S) in [0, 1]
    labels = job.inputs.train.labels[batch]  # (B,)
    try:
        oracle = job.remote.oracle(state.prompter, pixels, labels)
        result = job.method.optimizer.step(state.prompter.get_vector(), oracle, state.generator)
    except (TransportError, ServerUnavailableError) as exc:
        why = f"server unreachable for over {job.config.max_wait_seconds:.0f} s at step {state.step + 1}"
        _interrupted(job, start, exc, f"{why} ({exc})", _RESUME)
    except (QuotaExceededError, RateLimitedError) as exc:
        _interrupted(job, start, exc, f"the server refused step {state.step + 1}: {exc}", _RAISE_LIMIT)
    except FloatingPointError as exc:  # the oracle refused non-finite prompted images
        _diverged(job, str(exc))
    problem = divergence(result)
    if problem is not None:
        _diverged(job, problem)
    state.prompter.set_vector(result.params)
    state.step += 1
    state.forwards += result.evaluations
    return result


_RESUME = "rerun with --resume"
_RAISE_LIMIT = f"raise the key's limit (blackvip-server keys set-quota) and {_RESUME}"


def _interrupted(job: Job, start: dict[str, Any], cause: Exception, why: str, remedy: str) -> NoReturn:
    """Stop: save the state from before the step, with the queries it spent (they are real cost)."""
    start["train_meter"] = job.session.train_api.meter.to_dict()
    job.save(start)
    raise JobInterruptedError(f"{why}; checkpoint saved in {job.run.path}: {remedy}") from cause


def _diverged(job: Job, problem: str) -> NoReturn:
    """Stop: the step's result is not kept, and the checkpoint on disk (the last one written before
    this step) stays as it is, so the run can be inspected, or restarted with other settings."""
    saved = job.run.load_checkpoint()
    kept = f"the last good checkpoint (step {saved['step']})" if saved else "no checkpoint yet"
    raise TrainingDivergedError(
        f"training diverged at step {job.state.step + 1}: {problem}; stopped, {kept} kept in {job.run.path}. "
        f"Lower the learning rate (a, or BAR's init_lr) or the perturbation c"
    )


def _log_evaluations(job: Job, evals: IO[str], scalars: ScalarLog) -> None:
    images = job.session.train_api.meter.images
    results = _evaluate_all(job)
    for split, result in results.items():
        summary = {k: v for k, v in result.items() if k != "per_class_accuracy"}  # that one: summary.json
        line = {"step": job.state.step, "train_images": images, "split": split, **summary}
        evals.write(json.dumps(line) + "\n")
    evals.flush()
    scalars.evaluations(job.state.step, results)


def _evaluate_all(job: Job) -> dict[str, dict[str, Any]]:
    session = job.session
    assert session.task_id is not None
    remote = RemoteLoss(
        session.eval_api,
        session.info,
        session.task_id,
        wire_dtype=job.config.wire_dtype,
        access=session.access,
        num_classes=session.num_classes,
    )
    results = {}
    for split, images in job.inputs.evals.items():
        results[split] = evaluate(remote, job.state.prompter, images, job.config.eval_batch).as_dict()
        f1 = results[split]["macro_f1"]  # None at access level loss: no predictions to score
        log.info(
            "%s accuracy %.4f, macro-F1 %s over %d images",
            split,
            results[split]["accuracy"],
            "n/a" if f1 is None else f"{f1:.4f}",
            len(images),
        )
    return results


def _summary(job: Job, reason: str, losses: list[float], evaluations: dict[str, Any]) -> Summary:
    return Summary(
        method=job.config.method,
        steps=job.state.step,
        stopped_because=reason,
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        evaluations=evaluations,
        train=_spend(job, job.session.train_api.meter, job.state.forwards),
        eval=_spend(job, job.session.eval_api.meter),
        wall_time=round(job.state.elapsed(), 3),
    )


def _spend(job: Job, meter: QueryMeter, forwards: int | None = None) -> Spend:
    return Spend(meter.requests, meter.images, meter.bytes, job.cost(meter.images), forwards)

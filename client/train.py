"""The training job: few-shot data, a method, and a linear loop of zeroth-order steps through the API.

Everything a resume needs is checkpointed atomically every N steps (prompt parameters and buffers,
optimiser state, step, RNG states, sampler, meters), so a killed job continues to the same final
parameters as an uninterrupted one. If the server goes away for longer than ``max_wait_seconds``
the job saves the state from the start of the failed step and stops with :class:`JobInterruptedError`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from client._exceptions import BlackVIPError, JobInterruptedError, ServerUnavailableError, TransportError
from client._meter import QueryMeter
from client._retry import RetryPolicy
from client._sdk import BlackVIPClient
from client.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from client.config import TrainConfig
from client.data import BatchSampler, few_shot_indices, load_image_folder
from client.evaluate import evaluate
from client.methods import Method, build_method
from client.objective import RemoteLoss
from client.zo import StepResult

__all__ = ["JobResult", "retry_policy_for", "run_evaluation", "run_job"]

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
EVALS_NAME = "evals.jsonl"


@dataclass
class JobResult:
    run_dir: Path
    steps: int
    stopped_because: str
    train_meter: QueryMeter
    eval_meter: QueryMeter
    first_loss: float | None
    last_loss: float | None
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    summary_path: Path | None = None


def retry_policy_for(max_wait_seconds: float) -> RetryPolicy:
    """Enough doubling attempts (0.5 s up to 10 s apart) to cover ``max_wait_seconds``."""
    attempts, waited, delay = 1, 0.0, 0.5
    while waited < max_wait_seconds:
        waited += delay
        attempts += 1
        delay = min(delay * 2, 10.0)
    return RetryPolicy(max_attempts=attempts, base_delay=0.5, max_delay=10.0)


class _Job:
    """The state of one run; ``run`` is the loop."""

    def __init__(self, config: TrainConfig, resume: bool) -> None:
        self.config, self.run_dir = config, config.out
        checkpoint = load_checkpoint(self.run_dir)
        if checkpoint is not None and not resume:
            raise BlackVIPError(
                f"{self.run_dir} already holds a checkpoint (step {checkpoint['step']}): "
                f"pass --resume to continue it, or choose another --out"
            )
        if checkpoint is not None:
            _check_same_job(checkpoint["config"], config)
        retry = retry_policy_for(config.max_wait_seconds)
        self.train_api = BlackVIPClient(config.url, config.api_key, retry=retry)
        self.eval_api = BlackVIPClient(config.url, config.api_key, retry=retry)
        self.info = self.train_api.info()
        full_train = load_image_folder(config.data, "train", self.info.image_size)
        self.class_names = full_train.class_names
        self.train_set = full_train.subset(few_shot_indices(full_train.labels, config.shots, config.seed))
        self.eval_sets = {
            split: load_image_folder(config.data, split, self.info.image_size, self.class_names)
            for split in config.eval_splits
        }  # loaded up front: a missing split fails now
        prompts = [name.replace("_", " ") for name in self.class_names]
        self.task_id = self.train_api.register_task(prompts, config.templates).task_id
        self.method: Method = build_method(config, self.info)
        self.prompter = self.method.prompter.train()
        self.remote = RemoteLoss(
            self.train_api,
            self.info,
            self.task_id,
            self.prompter,
            self.method.loss_kind,
            config.focal_gamma,
            config.wire_dtype,
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = BatchSampler(len(self.train_set), config.batch_size, config.seed)
        self.step, self.elapsed_before = 0, 0.0
        self.started = time.monotonic()
        if checkpoint is not None:
            self._restore(checkpoint)
        atomic_write_json(
            self.run_dir / "config.json",
            {"config": config.saved(), "server": self.info.model_dump(mode="json")},
        )

    def state(self) -> dict[str, Any]:
        optimizer = self.method.optimizer
        return copy.deepcopy(
            {
                "config": self.config.saved(),
                "step": self.step,
                "prompter": _trainable_state(self.prompter),
                "optimizer": optimizer.state_dict() if optimizer else None,
                "torch_rng": self.generator.get_state(),
                "sampler": self.sampler.state_dict(),
                "train_meter": self.train_api.meter.to_dict(),
                "eval_meter": self.eval_api.meter.to_dict(),
                "elapsed": self.elapsed_before + time.monotonic() - self.started,
            }
        )

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.prompter.load_state_dict(checkpoint["prompter"], strict=False)
        if self.method.optimizer is not None:
            self.method.optimizer.load_state_dict(checkpoint["optimizer"])
        self.generator.set_state(checkpoint["torch_rng"])
        self.sampler.load_state_dict(checkpoint["sampler"])
        # This session's task registration was charged too: count it on top of the saved counts.
        self.train_api.meter = QueryMeter.from_dict(checkpoint["train_meter"]).plus(self.train_api.meter)
        self.eval_api.meter = QueryMeter.from_dict(checkpoint["eval_meter"])
        self.step, self.elapsed_before = int(checkpoint["step"]), float(checkpoint["elapsed"])
        for name in (METRICS_NAME, EVALS_NAME):
            _truncate_metrics(self.run_dir / name, self.step)
        log.info("resumed %s at step %d", self.run_dir, self.step)

    def save(self, state: dict[str, Any] | None = None) -> None:
        save_checkpoint(self.run_dir, state or self.state())

    def stop_reason(self, per_step_images: int) -> str | None:
        config, spent = self.config, self.train_api.meter.images
        if self.step >= config.steps:
            return "steps"
        if config.budget_images is not None and spent + per_step_images > config.budget_images:
            return "budget_images"
        cost = (spent + per_step_images) * self.info.price_per_1k_images / 1000.0
        if config.budget_cost is not None and cost > config.budget_cost:
            return "budget_cost"
        return None

    def metrics_line(self, loss: float, accuracy: float, lr: float) -> dict[str, Any]:
        meter = self.train_api.meter
        return {
            "step": self.step,
            "loss": loss,
            "accuracy": accuracy,
            "lr": lr,
            "train_images": meter.images,
            "requests": meter.requests,
            "cost": meter.images * self.info.price_per_1k_images / 1000.0,
            "wall_time": round(self.elapsed_before + time.monotonic() - self.started, 3),
        }


def run_job(config: TrainConfig, resume: bool = False) -> JobResult:
    job = _Job(config, resume)
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


def _train(job: _Job) -> str:
    """The loop; returns why it stopped."""
    config, optimizer = job.config, job.method.optimizer
    per_step = config.batch_size * optimizer.evaluations_per_step()
    bar = tqdm(total=config.steps, initial=job.step, desc=config.method, disable=None)
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


def _step(job: _Job) -> StepResult:
    """One optimiser step; if the server stays away, save the state from before it and stop."""
    start_state = job.state()
    batch = job.sampler.next_batch()
    pixels = job.train_set.pixels[batch].float() / 255.0  # (B, 3, S, S) in [0, 1]
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
    job.prompter.set_vector(result.params)
    job.step += 1
    return result


def _log_evaluations(job: _Job, evals) -> None:
    for split, result in _evaluate_all(job).items():
        line = {"step": job.step, "train_images": job.train_api.meter.images, "split": split, **result}
        evals.write(json.dumps(line) + "\n")
    evals.flush()


def _first_and_last_loss(path: Path) -> tuple[float | None, float | None]:
    losses = [json.loads(line)["loss"] for line in path.read_text().splitlines()] if path.exists() else []
    return (losses[0], losses[-1]) if losses else (None, None)


def _evaluate_all(job: _Job) -> dict[str, dict[str, float]]:
    remote = RemoteLoss(
        job.eval_api, job.info, job.task_id, job.prompter, "ce", wire_dtype=job.config.wire_dtype
    )
    results = {}
    for split, images in job.eval_sets.items():
        results[split] = evaluate(remote, job.prompter, images, job.config.eval_batch).as_dict()
        log.info("%s accuracy %.4f over %d images", split, results[split]["accuracy"], len(images))
    return results


def _write_summary(job: _Job, result: JobResult, name: str = "summary.json") -> Path:
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
    given = config.model_dump(include={"url", "eval_splits", "eval_batch", "data"})
    saved = TrainConfig(**{**checkpoint["config"], **given, "api_key": config.api_key, "out": run_dir})
    job = _Job(saved, resume=True)
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


def _trainable_state(prompter: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the frozen encoder (86M parameters for MAE; rebuilt from its source)."""
    return {k: v for k, v in prompter.state_dict().items() if ".encoder." not in f".{k}"}


# A resume may move the stopping point or the plumbing; anything that shapes the trajectory may not.
_RESUMABLE_DIFFERENCES = {
    "url",
    "out",
    "max_wait_seconds",
    "eval_splits",
    "eval_batch",
    "eval_every",
    "steps",
    "budget_images",
    "budget_cost",
    "checkpoint_every",
}


def _check_same_job(saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.saved()
    changed = sorted(k for k in current if k not in _RESUMABLE_DIFFERENCES and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise BlackVIPError(f"cannot resume: the settings differ from the checkpoint's ({details})")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines written after the checkpoint (by the run that was killed), so steps never repeat."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))

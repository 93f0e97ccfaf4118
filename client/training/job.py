"""One job, assembled: its run folder, session, inputs, method and training state, and how that state
is checkpointed and restored (so a resumed job repeats exactly what an uninterrupted one does)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from client._exceptions import BlackVIPError
from client._meter import QueryMeter
from client.training.access import check_offered, level_price
from client.training.config import RESUMABLE, TrainConfig, batches_per_epoch
from client.training.inputs import Inputs, load_inputs
from client.training.methods import Method, build_method, method_input_size
from client.training.objective import RemoteLoss
from client.training.plan import images_per_request
from client.training.rundir import RunDir
from client.training.session import Session, open_session
from client.training.state import TrainState
from shared.protocol import cost_of

__all__ = ["Job", "start_job"]

log = logging.getLogger(__name__)


@dataclass
class Job:
    config: TrainConfig
    run: RunDir
    session: Session
    inputs: Inputs
    method: Method
    state: TrainState
    remote: RemoteLoss
    total_steps: int

    def checkpoint(self) -> dict[str, Any]:
        """The whole resumable state: the training state, the settings and both meters."""
        return {
            "config": self.config.saved(),
            **self.state.state_dict(),
            "train_meter": self.session.train_api.meter.to_dict(),
            "eval_meter": self.session.eval_api.meter.to_dict(),
        }

    def save(self, checkpoint: dict[str, Any] | None = None) -> None:
        self.run.save_checkpoint(checkpoint or self.checkpoint())

    def cost(self, images: int) -> float:
        return cost_of(images, level_price(self.session.info, self.config.access().level))

    def stop_reason(self, per_step_images: int) -> str | None:
        config, spent = self.config, self.session.train_api.meter.images
        if self.state.step >= self.total_steps:
            return "steps"
        if config.budget_images is not None and spent + per_step_images > config.budget_images:
            return "budget_images"
        if config.budget_cost is not None and self.cost(spent + per_step_images) > config.budget_cost:
            return "budget_cost"
        return None

    def metrics_line(self, loss: float, accuracy: float, lr: float) -> dict[str, Any]:
        meter = self.session.train_api.meter
        return {
            "step": self.state.step,
            "loss": loss,
            "accuracy": accuracy,
            "lr": lr,
            "train_images": meter.images,
            "forwards": self.state.forwards,
            "requests": meter.requests,
            "cost": self.cost(meter.images),
            "wall_time": round(self.state.elapsed(), 3),
        }


def start_job(config: TrainConfig, resume: bool, evaluation_only: bool = False) -> Job:
    run = RunDir(config.out)
    saved = run.load_checkpoint()
    if saved is not None and not resume:
        raise BlackVIPError(
            f"{run.path} already holds a checkpoint (step {saved['step']}): "
            f"pass --resume to continue it, or choose another --out"
        )
    if saved is not None:
        # an evaluation may look at other classes (base-to-new); training may not change them
        _check_same_job(saved["config"], config, {"subsample_classes"} if evaluation_only else set())
    session = open_session(config)
    inputs = load_inputs(config, method_input_size(config.method, session.info.image_size))
    total_steps = config.total_steps(len(inputs.train))
    log.info("run length: %d steps (%s)", total_steps, _length_source(config, len(inputs.train)))
    # The method (its encoder may be missing offline) is built and the request size checked before the
    # task is registered: a run that cannot start spends nothing.
    method = build_method(config, session.info, total_steps)
    info = session.info
    images_per_request(info.image_size, config.wire_dtype, info.max_batch_images, info.max_request_bytes)
    access = config.access()
    check_offered(info, access)
    task_id = session.register_task(inputs.class_names, config.templates, access)
    state = TrainState(config, method.prompter.train(), method.optimizer, len(inputs.train))
    remote = RemoteLoss(
        session.train_api,
        session.info,
        task_id,
        method.loss_kind,
        config.focal_gamma,
        config.wire_dtype,
        config.in_flight,
        access=session.access,
        num_classes=session.num_classes,
    )
    job = Job(config, run, session, inputs, method, state, remote, total_steps)
    if saved is not None:
        _restore(job, saved)
    else:  # lines left by a job killed before its first checkpoint: this one starts again from step 0
        run.truncate_after(-1)
    run.write_config({"config": config.saved(), "server": session.info.model_dump(mode="json")})
    return job


def _restore(job: Job, saved: dict[str, Any]) -> None:
    job.state.load_state_dict(saved)
    session = job.session
    # This session's task registration was charged too: count it on top of the saved counts.
    session.train_api.meter = QueryMeter.from_dict(saved["train_meter"]).plus(session.train_api.meter)
    session.eval_api.meter = QueryMeter.from_dict(saved["eval_meter"])
    job.run.truncate_after(job.state.step)
    log.info("resumed %s at step %d", job.run.path, job.state.step)


def _length_source(config: TrainConfig, train_images: int) -> str:
    if config.steps is not None:
        return "--steps"
    if config.epochs is not None:
        per_epoch = batches_per_epoch(train_images, config.batch_size)
        return (
            f"{config.epochs} epochs x {per_epoch} batches of {config.batch_size} from {train_images} images"
        )
    return "default"


# Settings added after a checkpoint was written read as their defaults (e.g. epochs, subsample_classes).
_DEFAULTS = {name: field.default for name, field in TrainConfig.model_fields.items()}


def _check_same_job(saved: dict[str, Any], config: TrainConfig, also_allowed: set[str]) -> None:
    """A resume may move the stopping point or the plumbing; anything that shapes the trajectory may not."""
    current = config.saved()
    allowed = TrainConfig.tagged(RESUMABLE) | also_allowed
    changed = sorted(k for k in current if k not in allowed and saved.get(k, _DEFAULTS.get(k)) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise BlackVIPError(f"cannot resume: the settings differ from the checkpoint's ({details})")

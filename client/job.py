"""One training job's state: the API clients, the data, the method, RNGs and sampler, and how that
state is checkpointed and restored (so a resumed job repeats exactly what an uninterrupted one does)."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from client._exceptions import BlackVIPError
from client._meter import QueryMeter
from client._retry import RetryPolicy
from client._sdk import BlackVIPClient
from client.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from client.config import ConfigError, TrainConfig, batches_per_epoch
from client.data import BatchSampler, FileImageSet, ImageSet, few_shot_indices, load_image_folder
from client.datasets import DATASETS
from client.datasets.subsample import kept_labels, subsample_splits
from client.methods import Method, build_method, method_input_size
from client.objective import RemoteLoss

__all__ = ["EVALS_NAME", "METRICS_NAME", "Job", "load_job_data", "retry_policy_for"]

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
EVALS_NAME = "evals.jsonl"


def retry_policy_for(max_wait_seconds: float) -> RetryPolicy:
    """Enough doubling attempts (0.5 s up to 10 s apart) to cover ``max_wait_seconds``."""
    attempts, waited, delay = 1, 0.0, 0.5
    while waited < max_wait_seconds:
        waited += delay
        attempts += 1
        delay = min(delay * 2, 10.0)
    return RetryPolicy(max_attempts=attempts, base_delay=0.5, max_delay=10.0)


class Job:
    """The state of one run; ``run`` is the loop."""

    def __init__(self, config: TrainConfig, resume: bool, evaluation_only: bool = False) -> None:
        self.config, self.run_dir = config, config.out
        checkpoint = load_checkpoint(self.run_dir)
        if checkpoint is not None and not resume:
            raise BlackVIPError(
                f"{self.run_dir} already holds a checkpoint (step {checkpoint['step']}): "
                f"pass --resume to continue it, or choose another --out"
            )
        if checkpoint is not None:
            # an evaluation may look at other classes (base-to-new); training may not change them
            _check_same_job(checkpoint["config"], config, {"subsample_classes"} if evaluation_only else set())
        retry = retry_policy_for(config.max_wait_seconds)
        self.train_api = BlackVIPClient(config.url, config.api_key, retry=retry)
        self.eval_api = BlackVIPClient(config.url, config.api_key, retry=retry)
        self.info = self.train_api.info()
        input_size = method_input_size(config.method, self.info.image_size)
        self.train_set, self.eval_sets, self.class_names = load_job_data(config, input_size)
        self.total_steps = config.total_steps(len(self.train_set))
        log.info("run length: %d steps (%s)", self.total_steps, _length_source(config, len(self.train_set)))
        # The method (and its encoder, which may be missing offline) is built before the task is
        # registered: a run that cannot start spends nothing.
        self.method: Method = build_method(config, self.info, self.total_steps)
        prompts = [name.replace("_", " ") for name in self.class_names]
        self.task_id = self.train_api.register_task(prompts, config.templates).task_id
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
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1)
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
                "augment_rng": self.augment_generator.get_state(),
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
        self.augment_generator.set_state(checkpoint["augment_rng"])
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
        if self.step >= self.total_steps:
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


def _length_source(config: TrainConfig, train_images: int) -> str:
    if config.steps is not None:
        return "--steps"
    if config.epochs is not None:
        per_epoch = batches_per_epoch(train_images, config.batch_size)
        return (
            f"{config.epochs} epochs x {per_epoch} batches of {config.batch_size} from {train_images} images"
        )
    return "default"


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
    "epochs",
    "budget_images",
    "budget_cost",
    "checkpoint_every",
    "fewshot_cache",
}


# Settings added after a checkpoint was written read as their defaults (e.g. epochs, subsample_classes).
_DEFAULTS = {name: field.default for name, field in TrainConfig.model_fields.items()}


def _check_same_job(saved: dict[str, Any], config: TrainConfig, also_allowed: set[str]) -> None:
    current = config.saved()
    allowed = _RESUMABLE_DIFFERENCES | also_allowed
    changed = sorted(k for k in current if k not in allowed and saved.get(k, _DEFAULTS.get(k)) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise BlackVIPError(f"cannot resume: the settings differ from the checkpoint's ({details})")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines written after the checkpoint (by the run that was killed), so steps never repeat."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


ImageSource = ImageSet | FileImageSet


def load_job_data(
    config: TrainConfig, image_size: int
) -> tuple[ImageSource, dict[str, ImageSource], list[str]]:
    """The few-shot train set, the evaluation sets (loaded or listed up front: a missing split fails now)
    and the class names. A benchmark dataset name reads ``config.data`` as ``$DATA`` in the seed's
    layouts; anything else reads it as an image folder ROOT/{train,val,test}/<class>."""
    if config.dataset in DATASETS:
        return _benchmark_data(config, image_size)
    if config.augment:
        raise ConfigError("--augment applies to benchmark datasets; image folders are used as they are")
    full_train = load_image_folder(config.data, "train", image_size)
    train = full_train.subset(few_shot_indices(full_train.labels, config.shots, config.seed))
    kept = kept_labels(train.labels.tolist(), config.subsample_classes)
    train = _keep_classes(train, kept)
    evals = {
        split: _keep_classes(load_image_folder(config.data, split, image_size, full_train.class_names), kept)
        for split in config.eval_splits
    }
    return train, evals, train.class_names


def _keep_classes(images: ImageSet, kept: list[int]) -> ImageSet:
    """The images of the ``kept`` labels, relabelled by their position in ``kept`` (base/new split)."""
    if kept == list(range(len(images.class_names))):
        return images
    relabel = torch.full((len(images.class_names),), -1, dtype=torch.int64)
    relabel[torch.tensor(kept)] = torch.arange(len(kept))
    new_labels = relabel[images.labels]
    index = torch.nonzero(new_labels >= 0).flatten()
    names = [images.class_names[label] for label in kept]
    return ImageSet(images.pixels[index], new_labels[index], names)


def _benchmark_data(
    config: TrainConfig, image_size: int
) -> tuple[ImageSource, dict[str, ImageSource], list[str]]:
    from client.datasets import load_dataset
    from client.datasets.fewshot import sample_few_shot

    splits = load_dataset(config.dataset, config.data)
    few = sample_few_shot(splits, config.shots, config.seed, fewshot_cache_dir(config))
    few = subsample_splits(few, config.subsample_classes)  # after the draw, as the seed
    names = few.class_names

    def listed(items: list, augment: bool) -> FileImageSet:
        labels = torch.tensor([item.label for item in items], dtype=torch.int64)
        return FileImageSet([item.path for item in items], labels, names, image_size, augment)

    augment = True if config.augment is None else config.augment  # the seed augments transfer datasets
    chosen = {"train": few.train, "val": few.val, "test": few.test}
    unknown = [split for split in config.eval_splits if split not in chosen]
    if unknown:
        raise ConfigError(f"unknown evaluation split(s) {unknown}: use train, val or test")
    return listed(few.train, augment), {s: listed(chosen[s], False) for s in config.eval_splits}, names


def fewshot_cache_dir(config: TrainConfig) -> Path:
    if config.fewshot_cache is not None:
        return config.fewshot_cache / config.dataset
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "blackvip-sim" / "fewshot" / config.dataset

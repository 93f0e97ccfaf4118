"""Evaluation through the API: prompted images -> what the task's access level reveals, in batches, and
the seed evaluator's metrics (my_dassl ``Classification``): accuracy, macro-F1 over the labels present,
per-class accuracy and its mean. Loss is the mean of the level's loss (``client.training.levels``): the
cross-entropy of the logits at level logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from client._outputs import Outputs, concat_outputs
from client.data.images import FileImageSet, ImageSet
from client.training import levels
from client.training.objective import RemoteLoss
from client.training.prompters import Prompter
from shared.access import AccessLevel

__all__ = ["EvalResult", "classification_metrics", "evaluate"]

Answer = TypeVar("Answer")


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    images: int
    macro_f1: float | None = 0.0  # None at access level loss (no predictions)
    mean_per_class_accuracy: float = 0.0
    per_class_accuracy: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "images": self.images,
            "macro_f1": self.macro_f1,
            "mean_per_class_accuracy": self.mean_per_class_accuracy,
            "per_class_accuracy": self.per_class_accuracy,
        }


def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, class_names: list[str]
) -> tuple[float, float, dict[str, float]]:
    """(macro-F1, mean per-class accuracy, per-class accuracy by name) as fractions, over the labels
    present in ``labels`` (sklearn's f1_score(average="macro", labels=np.unique(y_true)), as the seed)."""
    f1s, accuracies = [], {}
    for label in np.unique(labels):
        truth, predicted = labels == label, predictions == label
        hits = int(np.sum(truth & predicted))
        precision = hits / int(predicted.sum()) if predicted.any() else 0.0
        recall = hits / int(truth.sum())
        f1s.append(0.0 if hits == 0 else 2 * precision * recall / (precision + recall))
        accuracies[class_names[int(label)]] = recall
    return float(np.mean(f1s)), float(np.mean(list(accuracies.values()))), accuracies


def evaluate(
    remote: RemoteLoss, prompter: Prompter, images: ImageSet | FileImageSet, batch_size: int
) -> EvalResult:
    """Metrics of the prompted images, with the prompter in eval mode (BN running stats), from what the
    task's access level reveals (``client.training.levels``): predictions and the level's loss. At level
    ``loss`` the logits route is refused: the server's ``/loss`` gives cross-entropy and correctness, so
    accuracy and per-class accuracy (each class's share of correct images) are known but not what was
    predicted, and macro-F1 is None."""
    labels = images.labels.numpy()
    if remote.access.level is AccessLevel.LOSS:
        answers = _over_batches(
            prompter,
            images,
            batch_size,
            lambda prompted, s, e: remote.eval_losses(prompted, images.labels[s:e]),
        )
        losses, correct = (np.concatenate(parts) for parts in zip(*answers, strict=True))
        return _from_correctness(labels, losses, correct, images.class_names)
    if remote.access.level is AccessLevel.LOGITS:  # the SDK's logits call, as before access levels
        parts = _over_batches(
            prompter, images, batch_size, lambda prompted, s, e: Outputs(remote.logits(prompted))
        )
    else:
        parts = _over_batches(prompter, images, batch_size, lambda prompted, s, e: remote.outputs(prompted))
    outputs = concat_outputs(parts)
    losses = levels.losses(outputs, labels, remote.num_classes, remote.floor)
    predictions = levels.predictions(outputs)
    macro_f1, mean_per_class, per_class = classification_metrics(labels, predictions, images.class_names)
    return EvalResult(
        float(np.mean(predictions == labels)),
        float(losses.mean()),
        len(labels),
        macro_f1,
        mean_per_class,
        per_class,
    )


def _over_batches(
    prompter: Prompter,
    images: ImageSet | FileImageSet,
    batch_size: int,
    ask: Callable[[torch.Tensor, int, int], Answer],
) -> list[Answer]:
    """``ask(prompted images, start, end)`` for each batch of ``images[start:end]``, in eval mode."""
    was_training = prompter.training
    prompter.eval()
    answers = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                end = min(start + batch_size, len(images))
                pixels = images.images(range(start, end)).float() / 255.0  # (B, 3, S, S) in [0, 1]
                answers.append(ask(prompter.apply(pixels, prompter.prepare(pixels)), start, end))
    finally:
        prompter.train(was_training)
    return answers


def _from_correctness(
    labels: np.ndarray, losses: np.ndarray, correct: np.ndarray, class_names: list[str]
) -> EvalResult:
    """Metrics from correctness alone (level ``loss``): per-class accuracy is each class's recall."""
    per_class = {
        class_names[int(label)]: float(np.mean(correct[labels == label])) for label in np.unique(labels)
    }
    return EvalResult(
        float(np.mean(correct)),
        float(losses.mean()),
        len(labels),
        None,
        float(np.mean(list(per_class.values()))),
        per_class,
    )

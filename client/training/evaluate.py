"""Evaluation through the API: prompted images -> server logits, in batches, and the seed evaluator's
metrics (my_dassl ``Classification``): accuracy, macro-F1 over the labels present, per-class accuracy
and its mean. Loss is the mean cross-entropy of the logits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from client.data.images import FileImageSet, ImageSet
from client.training.objective import RemoteLoss
from client.training.prompters import Prompter

__all__ = ["EvalResult", "classification_metrics", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    images: int
    macro_f1: float = 0.0
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
    """Metrics of the prompted images, with the prompter in eval mode (BN running stats)."""
    was_training = prompter.training
    prompter.eval()
    logits = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                indices = range(start, min(start + batch_size, len(images)))
                pixels = images.images(indices).float() / 255.0  # (B, 3, S, S) in [0, 1]
                logits.append(remote.logits(prompter.apply(pixels, prompter.prepare(pixels))))
    finally:
        prompter.train(was_training)
    all_logits = np.concatenate(logits).astype(np.float64)  # (N, C)
    labels = images.labels.numpy()
    shifted = all_logits - all_logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    losses = log_norm - shifted[np.arange(len(labels)), labels]
    predictions = all_logits.argmax(axis=1)
    macro_f1, mean_per_class, per_class = classification_metrics(labels, predictions, images.class_names)
    return EvalResult(
        float(np.mean(predictions == labels)),
        float(losses.mean()),
        len(labels),
        macro_f1,
        mean_per_class,
        per_class,
    )

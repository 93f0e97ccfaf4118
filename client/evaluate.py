"""Evaluation through the API: prompted images -> server CE loss and correctness, in batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from client.data import FileImageSet, ImageSet
from client.objective import RemoteLoss
from client.prompters import Prompter

__all__ = ["EvalResult", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    images: int

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "loss": self.loss, "images": self.images}


def evaluate(
    remote: RemoteLoss, prompter: Prompter, images: ImageSet | FileImageSet, batch_size: int
) -> EvalResult:
    """Accuracy and mean CE of the prompted images, with the prompter in eval mode (BN running stats)."""
    was_training = prompter.training
    prompter.eval()
    losses, correct = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                indices = range(start, min(start + batch_size, len(images)))
                pixels = images.images(indices).float() / 255.0  # (B, 3, S, S) in [0, 1]
                prompted = prompter.apply(pixels, prompter.prepare(pixels))
                batch_losses, batch_correct = remote.query(
                    prompted, images.labels[start : start + batch_size]
                )
                losses.append(batch_losses)
                correct.append(batch_correct)
    finally:
        prompter.train(was_training)
    all_losses, all_correct = np.concatenate(losses), np.concatenate(correct)
    return EvalResult(float(all_correct.mean()), float(all_losses.mean()), len(all_losses))

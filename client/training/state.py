"""What moves while a job trains, and what a resume restores: the prompt's parameters and buffers,
the optimiser's state, the step, the batch forwards spent, the RNG streams and the batch sampler's
position."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from client.data.sampler import BatchSampler
from client.training.config import TrainConfig
from client.training.prompters import Prompter
from client.training.zo import Optimizer

__all__ = ["TrainState"]


class TrainState:
    def __init__(
        self, config: TrainConfig, prompter: Prompter, optimizer: Optimizer | None, train_size: int
    ) -> None:
        self.prompter, self.optimizer = prompter, optimizer
        self.generator = torch.Generator().manual_seed(config.seed)  # perturbations
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1)  # crops and flips
        self.sampler = BatchSampler(train_size, config.batch_size, config.seed)
        self.step, self.elapsed_before = 0, 0.0
        self.forwards = 0  # perturbed batches evaluated (the optimiser's evaluations), all steps
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds of work over every session of the run."""
        return self.elapsed_before + time.monotonic() - self.started

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "step": self.step,
                "forwards": self.forwards,
                "prompter": _trainable_state(self.prompter),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "torch_rng": self.generator.get_state(),
                "augment_rng": self.augment_generator.get_state(),
                "sampler": self.sampler.state_dict(),
                "elapsed": self.elapsed(),
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prompter.load_state_dict(state["prompter"], strict=False)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["torch_rng"])
        self.augment_generator.set_state(state["augment_rng"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.elapsed_before = int(state["step"]), float(state["elapsed"])
        # A checkpoint from before forwards were counted: every step of its optimisers took the same number.
        per_step = self.optimizer.evaluations_per_step() if self.optimizer is not None else 0
        self.forwards = int(state.get("forwards", self.step * per_step))
        self.started = time.monotonic()


def _trainable_state(prompter: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Everything but the frozen encoder (86M parameters for MAE; rebuilt from its source)."""
    return {k: v for k, v in prompter.state_dict().items() if ".encoder." not in f".{k}"}

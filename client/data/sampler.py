"""The step-by-step batch sampler: shuffled epochs, drop-last, with a state that a checkpoint keeps."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BatchSampler"]


class BatchSampler:
    """Batches drawn from shuffled epochs; its state is checkpointed so a resume draws the same."""

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size = size, min(batch_size, size)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(size)
        self.position = 0

    def next_batch(self) -> np.ndarray:
        if self.position + self.batch_size > self.size:  # drop the tail, as a drop-last loader does
            self.order = self.rng.permutation(self.size)
            self.position = 0
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.position = int(state["position"])

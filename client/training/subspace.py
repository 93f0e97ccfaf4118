"""Training fewer values than the prompt has: w = w_0 + P theta(z), with P a fixed random (d, D)
matrix, so that a zeroth-order estimate works in D (or fewer) dimensions instead of d.

- :class:`RandomSubspace`: theta(z) = z, z in R^D (the intrinsic dimension of Li et al., 2018, used by
  BBT and ZIP). z starts at 0, so the run starts from the prompt's own initialisation.
- :class:`LowRankSubspace`: ZIP's low-rank form (ICLR 2025): z is (U, s, V, b) and theta(z) is the
  (rows, D / rows) matrix U diag(s) V^T + 1 b^T read row by row, rank r; U starts at 0, s at 1, V
  standard normal, b at 0 (ZIP's initialisation: theta = 0). rows x r + r + cols x (r + 1) values,
  417 for ZIP's D = 500, rank 5 and 8 rows (its 8 context tokens).

P has independent N(0, 1/d) entries: its columns have unit norm in expectation and are nearly
orthogonal when d >> D, so a step of size s in theta moves w by about s. It is drawn from a generator
of its own (``seed``), so a resumed run rebuilds the same P and the perturbations' stream is untouched.

:class:`SubspaceOptimizer` runs any optimiser of :mod:`client.training.zo` on z: the oracle it hands on
maps each candidate z to its w, and the step it returns carries w, so the training loop, the prompter
and the checkpoint see the full vector as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch

from client.training.config import LOW_RANK_ROWS
from client.training.zo import Evaluation, LossOracle, Optimizer, StepResult

__all__ = ["LowRankSubspace", "RandomSubspace", "Reparametrisation", "SubspaceOptimizer", "projection"]


def projection(d: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """P (d, dim), entries N(0, 1/d)."""
    return torch.randn(d, dim, generator=generator) / math.sqrt(d)


class Reparametrisation(Protocol):
    def initial(self) -> torch.Tensor:
        """z at the start of a run (theta(z) = 0: w = w_0)."""
        ...

    def to_params(self, origin: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """w = origin + P theta(z)."""
        ...


class RandomSubspace:
    def __init__(self, d: int, dim: int, seed: int) -> None:
        if dim < 1:
            raise ValueError(f"a subspace needs at least one dimension, got {dim}")
        self.dim = dim
        self.matrix = projection(d, dim, torch.Generator().manual_seed(seed))

    def initial(self) -> torch.Tensor:
        return torch.zeros(self.dim)

    def to_params(self, origin: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return origin + self.matrix @ z


class LowRankSubspace:
    def __init__(self, d: int, dim: int, rank: int, seed: int, rows: int = LOW_RANK_ROWS) -> None:
        if rank < 1 or dim < rows:
            raise ValueError(f"a low-rank subspace needs rank >= 1 and at least {rows} dimensions")
        self.rows, self.cols, self.rank = rows, dim // rows, rank
        generator = torch.Generator().manual_seed(seed)
        self.matrix = projection(d, self.rows * self.cols, generator)
        self._v0 = torch.randn(self.cols, rank, generator=generator)  # after P: both follow from the seed

    def sizes(self) -> tuple[int, int, int, int]:
        """The lengths of U, s, V and b in z."""
        return self.rows * self.rank, self.rank, self.cols * self.rank, self.cols

    def initial(self) -> torch.Tensor:
        u, s, _, b = self.sizes()
        return torch.cat([torch.zeros(u), torch.ones(s), self._v0.flatten(), torch.zeros(b)])

    def theta(self, z: torch.Tensor) -> torch.Tensor:
        """U diag(s) V^T + 1 b^T, flattened row by row."""
        u, s, v, b = torch.split(z, self.sizes())
        left = u.view(self.rows, self.rank) * s  # U diag(s)
        return (left @ v.view(self.cols, self.rank).T + b).flatten()

    def to_params(self, origin: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return origin + self.matrix @ self.theta(z)


class SubspaceOptimizer:
    """``inner`` trains z; ``origin`` (w_0) is the first step's parameters, kept in the state dict."""

    def __init__(self, inner: Optimizer, reparam: Reparametrisation) -> None:
        self.inner, self.reparam = inner, reparam
        self.z: torch.Tensor | None = None
        self.origin: torch.Tensor | None = None

    def evaluations_per_step(self) -> int:
        return self.inner.evaluations_per_step()

    def step(self, params: torch.Tensor, oracle: LossOracle, generator: torch.Generator) -> StepResult:
        if self.z is None or self.origin is None:
            self.z, self.origin = self.reparam.initial(), params.clone()
        origin = self.origin

        def in_subspace(candidates: Sequence[torch.Tensor]) -> list[Evaluation]:
            return oracle([self.reparam.to_params(origin, z) for z in candidates])

        result = self.inner.step(self.z, in_subspace, generator)
        self.z = result.params
        return replace(result, params=self.reparam.to_params(origin, self.z))

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "z": self.z, "origin": self.origin}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.z, self.origin = state["z"], state["origin"]

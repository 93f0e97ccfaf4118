"""Zeroth-order optimisers on a flat parameter vector, given a batched loss oracle.

They know nothing of HTTP or models: an oracle takes a list of candidate parameter vectors and
returns one :class:`Evaluation` per candidate, so that a step's perturbed evaluations can be sent
together (as few requests as the server's batch limit allows).

- :class:`SPSA`: simultaneous perturbation, two-sided, q samples averaged, its estimate optionally
  clipped and turned into a step by an update rule (:mod:`client.training.zo_rules`: the seed's gradient
  correction, SPSA-GC, by default; plain, Adam, sign). 2q evaluations per step.
- :class:`RGF`: BAR's one-sided random-gradient-free estimate. q + 1 evaluations per step.

Every evaluation is one perturbed batch through the model: ZIP's unit of query ("API calls"), counted
by the training loop as the run's forwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from client.training.zo_rules import GradientCorrection, NormClip, UpdateRule

__all__ = [
    "RGF",
    "SPSA",
    "Evaluation",
    "LossOracle",
    "Optimizer",
    "StepResult",
    "divergence",
    "spsa_perturbation",
]


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean over the batch
    accuracy: float  # fraction correct over the batch


LossOracle = Callable[[Sequence[torch.Tensor]], list[Evaluation]]


@dataclass(frozen=True)
class StepResult:
    params: torch.Tensor  # (d,) the updated vector
    loss: float  # what the step saw at the current parameters (seed: mean of the evaluations)
    accuracy: float
    evaluations: int
    learning_rate: float


def spsa_perturbation(d: int, generator: torch.Generator) -> torch.Tensor:
    """Each coordinate a random sign times U[0.5, 1), as the seed's segmented uniform."""
    magnitude = (torch.rand(d, generator=generator) + 1.0) / 2.0
    sign = torch.bernoulli(torch.full((d,), 0.5), generator=generator) * 2.0 - 1.0
    return sign * magnitude


class Optimizer(Protocol):
    """What the training loop needs of an optimiser: SPSA, RGF, or one wrapped in a reparametrisation."""

    def evaluations_per_step(self) -> int: ...

    def step(self, params: torch.Tensor, oracle: LossOracle, generator: torch.Generator) -> StepResult: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SPSA:
    """a_k = a / (k + o)^alpha, c_k = c / k^gamma, k counted from 1; g the mean of q two-sided estimates,
    ``clip`` applied to g, then w <- w - a_k rule(g, k).

    The default rule is the seed's SPSA-GC: m_1 = g, m_k = beta m_{k-1} + g, update g + beta m_k.
    """

    def __init__(
        self,
        a: float,
        c: float,
        alpha: float,
        gamma: float,
        o: float = 1.0,
        q: int = 5,
        rule: UpdateRule | None = None,
        clip: NormClip | None = None,
    ) -> None:
        self.a, self.c, self.alpha, self.gamma, self.o = a, c, alpha, gamma, o
        self.q, self.clip = q, clip
        self.rule: UpdateRule = rule if rule is not None else GradientCorrection(0.9)
        self.k = 0

    def evaluations_per_step(self) -> int:
        return 2 * self.q

    def step(self, params: torch.Tensor, oracle: LossOracle, generator: torch.Generator) -> StepResult:
        self.k += 1
        a_k = self.a / (self.k + self.o) ** self.alpha
        c_k = self.c / self.k**self.gamma
        perturbations = [spsa_perturbation(params.numel(), generator) for _ in range(self.q)]  # q x (d,)
        candidates = [params + sign * c_k * p for p in perturbations for sign in (1.0, -1.0)]
        results = oracle(candidates)  # [L(w + c D_1), L(w - c D_1), L(w + c D_2), ...]
        estimates = [
            (results[2 * i].loss - results[2 * i + 1].loss) / (2.0 * c_k * p)
            for i, p in enumerate(perturbations)
        ]
        gradient = torch.stack(estimates).mean(dim=0)  # (d,)
        if self.clip is not None:
            gradient = self.clip(gradient)
        update = self.rule.direction(gradient, self.k)
        # Like the seed, report the last sample pair's mean loss and accuracy.
        loss = (results[-2].loss + results[-1].loss) / 2.0
        accuracy = (results[-2].accuracy + results[-1].accuracy) / 2.0
        return StepResult(params - a_k * update, loss, accuracy, len(candidates), a_k)

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, **self.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k = state["k"]
        self.rule.load_state_dict(state)


class RGF:
    """g = sum_i (d / q) u_i (L(w + beta u_i) - L(w)) / beta with u_i uniform on the unit sphere;
    learning rate decays polynomially (power 0.9) from ``init_lr`` to ``min_lr`` over 90% of
    ``total_steps``, as the seed's BAR."""

    def __init__(
        self,
        init_lr: float,
        min_lr: float,
        total_steps: int,
        q: int = 5,
        beta: float = 0.01,
        sigma: float = 1.0,
    ) -> None:
        self.init_lr, self.min_lr, self.total_steps = init_lr, min_lr, total_steps
        self.q, self.beta, self.sigma = q, beta, sigma
        self.k = 0

    def evaluations_per_step(self) -> int:
        return self.q + 1

    def learning_rate(self, k: int) -> float:
        decay_steps = max(self.total_steps * 0.9, 1.0)
        progress = min(k, decay_steps) / decay_steps
        return (self.init_lr - self.min_lr) * (1.0 - progress) ** 0.9 + self.min_lr

    def step(self, params: torch.Tensor, oracle: LossOracle, generator: torch.Generator) -> StepResult:
        self.k += 1
        lr = self.learning_rate(self.k)
        d = params.numel()
        directions = []
        for _ in range(self.q):
            u = torch.randn(d, generator=generator) * self.sigma
            directions.append(u / torch.linalg.vector_norm(u))
        results = oracle([params, *(params + self.beta * u for u in directions)])
        pivot = results[0].loss
        gradient = torch.zeros(d)
        for u, result in zip(directions, results[1:], strict=True):
            gradient += (d / self.q) * u * (result.loss - pivot) / self.beta
        return StepResult(params - lr * gradient, pivot, results[0].accuracy, len(results), lr)

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.k = state["k"]


def divergence(result: StepResult) -> str | None:
    """What went non-finite in a step (the loss it saw, or the updated parameters), or None."""
    if not math.isfinite(result.loss):
        return f"loss {result.loss}"
    if not bool(torch.isfinite(result.params).all()):
        bad = int((~torch.isfinite(result.params)).sum())
        return f"{bad} of {result.params.numel()} parameters NaN/Inf"
    return None

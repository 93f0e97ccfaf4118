"""What SPSA does with its gradient estimate g before the step w <- w - a_k d: the update rules d(g, k)
and the clipping of g's norm. They are separate from the estimate so that each can be combined with
any of them and tested alone.

- :class:`Plain`: d = g (plain SPSA).
- :class:`GradientCorrection`: the seed's SPSA-GC, m_1 = g, m_k = beta m_{k-1} + g, d = g + beta m_k.
- :class:`Adam`: ZO-Adam (as ZO-AdaMM without its max on v; Chen et al., NeurIPS 2019),
  m_k = b1 m_{k-1} + (1 - b1) g, v_k = b2 v_{k-1} + (1 - b2) g^2, d = m^_k / (sqrt(v^_k) + eps) with the
  bias corrections m^_k = m_k / (1 - b1^k), v^_k = v_k / (1 - b2^k). Each coordinate moves by about
  a_k, whatever the scale of g.
- :class:`Sign`: ZO-signSGD (Liu et al., ICLR 2019), d = sign(g): each coordinate moves by exactly a_k.
- :class:`NormClip`: ||g|| > delta -> g delta / ||g||; delta fixed, or ZIP's sqrt(d) for d trained values
  (ZIP, ICLR 2025, its ``spsa-clip``), applied to g before the rule.

A rule's state goes into the optimiser's state dict under its own keys; the seed's SPSA-GC keeps
``momentum``, so checkpoints written before the rules were split still load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = ["Adam", "GradientCorrection", "NormClip", "Plain", "Sign", "UpdateRule"]


class UpdateRule(Protocol):
    def direction(self, gradient: torch.Tensor, k: int) -> torch.Tensor:
        """The step's direction for the estimate ``gradient`` at step ``k`` (counted from 1)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Plain:
    def direction(self, gradient: torch.Tensor, k: int) -> torch.Tensor:
        return gradient

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # stateless (a plain-SPSA checkpoint of old holds momentum None: nothing to restore)


class GradientCorrection:
    def __init__(self, beta: float = 0.9) -> None:
        self.beta = beta
        self.momentum: torch.Tensor | None = None

    def direction(self, gradient: torch.Tensor, k: int) -> torch.Tensor:
        if k == 1 or self.momentum is None:
            self.momentum = gradient
        else:
            self.momentum = self.beta * self.momentum + gradient
        return gradient + self.beta * self.momentum

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.momentum = state["momentum"]


class Adam:
    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.first: torch.Tensor | None = None
        self.second: torch.Tensor | None = None

    def direction(self, gradient: torch.Tensor, k: int) -> torch.Tensor:
        if self.first is None or self.second is None:
            self.first, self.second = torch.zeros_like(gradient), torch.zeros_like(gradient)
        self.first = self.beta1 * self.first + (1.0 - self.beta1) * gradient
        self.second = self.beta2 * self.second + (1.0 - self.beta2) * gradient**2
        first = self.first / (1.0 - self.beta1**k)
        second = self.second / (1.0 - self.beta2**k)
        return first / (second.sqrt() + self.eps)

    def state_dict(self) -> dict[str, Any]:
        return {"adam_first": self.first, "adam_second": self.second}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first, self.second = state["adam_first"], state["adam_second"]


class Sign:
    def direction(self, gradient: torch.Tensor, k: int) -> torch.Tensor:
        return torch.sign(gradient)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class NormClip:
    """``threshold`` None: ZIP's sqrt(d), d the number of values the optimiser trains."""

    threshold: float | None = None

    def limit(self, d: int) -> float:
        return math.sqrt(d) if self.threshold is None else self.threshold

    def __call__(self, gradient: torch.Tensor) -> torch.Tensor:
        limit = self.limit(gradient.numel())
        norm = float(torch.linalg.vector_norm(gradient))
        # ZIP clips when the norm reaches the threshold; at equality the scale is 1 either way.
        return gradient * (limit / norm) if norm > limit else gradient

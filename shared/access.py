"""What a task's answers reveal: its access level, chosen at registration, and how its scores are blurred.

Real model APIs often reveal less than full logits. A task registered at a level answers only what the
level reveals, on both routes:

| level             | ``/logits`` answers                                         | ``/loss``    |
|-------------------|-------------------------------------------------------------|--------------|
| ``logits``        | ``logits`` (N, C): today's answer, the default               | answered     |
| ``loss``          | refused (403 ``access_denied``)                              | answered     |
| ``probabilities`` | ``probabilities`` (N, C): softmax of the logits              | refused 403  |
| ``top-k``         | ``classes`` (N, k), most probable first; ``probabilities`` (N, k) | refused 403 |
| ``label``         | ``labels`` (N,): the predicted class only                    | refused 403  |

Two optional blurs apply to every level's scores: ``noise_std`` adds Gaussian noise of that standard
deviation to the logits before anything is derived from them (so a label is the noisy argmax), drawn
from a generator seeded by the request itself (key, task and body), so that a replay, or the same query
sent again, gets the same answer and repeating a query cannot average the noise away; ``decimals``
rounds the revealed floats (logits, probabilities, losses) to that many decimals.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Access", "AccessLevel", "AccessLevelPrice", "LEVELS_WITH_LOSS", "LEVELS_WITH_OUTPUTS"]


class AccessLevel(StrEnum):
    """From most to least revealing (``loss`` reveals a scalar per image but not the class scores)."""

    LOGITS = "logits"
    LOSS = "loss"
    PROBABILITIES = "probabilities"
    TOP_K = "top-k"
    LABEL = "label"


LEVELS_WITH_LOSS = frozenset({AccessLevel.LOGITS, AccessLevel.LOSS})  # the /loss route answers
LEVELS_WITH_OUTPUTS = frozenset(AccessLevel) - {AccessLevel.LOSS}  # the /logits route answers

MAX_DECIMALS = 8
MAX_NOISE_STD = 100.0


class Access(BaseModel):
    """A task's access level and blurs (part of the task: the same classes at two levels are two tasks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: AccessLevel = AccessLevel.LOGITS
    k: Annotated[int | None, Field(ge=1, le=1000, description="top-k only: how many classes")] = None
    decimals: Annotated[
        int | None, Field(ge=0, le=MAX_DECIMALS, description="round revealed scores to this many decimals")
    ] = None
    noise_std: Annotated[
        float | None,
        Field(gt=0.0, le=MAX_NOISE_STD, description="Gaussian noise on the logits, seeded by the request"),
    ] = None

    @model_validator(mode="after")
    def _k_with_top_k(self) -> Access:
        if self.level is AccessLevel.TOP_K and self.k is None:
            raise ValueError("level top-k needs k, the number of classes revealed")
        if self.level is not AccessLevel.TOP_K and self.k is not None:
            raise ValueError(f"k is for level top-k only, not {self.level.value}")
        return self

    def describe(self) -> str:
        """A short name: ``logits``, ``top-5``, ``label (noise 0.5, 2 decimals)``."""
        name = f"top-{self.k}" if self.level is AccessLevel.TOP_K else self.level.value
        blurs = [f"noise {self.noise_std:g}"] if self.noise_std is not None else []
        blurs += [f"{self.decimals} decimals"] if self.decimals is not None else []
        return f"{name} ({', '.join(blurs)})" if blurs else name


class AccessLevelPrice(BaseModel):
    """A level this server offers and what an image costs at it (``/v1/info``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: AccessLevel
    price_per_1k_images: float

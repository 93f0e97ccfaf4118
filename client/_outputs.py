"""What the logits route answered for a batch: the fields the task's access level reveals (``shared.access``).

The SDK decodes a ``LogitsResponse`` into :class:`Outputs` and knows nothing more of levels; turning
outputs into losses is ``client.training.levels``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from shared.access import AccessLevel
from shared.protocol import LogitsResponse, WireTensor

__all__ = ["Outputs", "concat_outputs", "outputs_from"]


@dataclass(frozen=True)
class Outputs:
    """One batch's answer; the fields its level does not reveal are None.

    logits: (N, C) float32 (level logits); probabilities: (N, C) float32 (level probabilities) or
    (N, k), most probable first (top-k); classes: (N, k) int64, most probable first (top-k);
    labels: (N,) int64, the predicted class (label)."""

    logits: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    classes: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def level(self) -> AccessLevel | None:
        """The access level these fields stand for (the most revealing present), None if none is."""
        if self.logits is not None:
            return AccessLevel.LOGITS
        if self.classes is not None:
            return AccessLevel.TOP_K
        if self.probabilities is not None:
            return AccessLevel.PROBABILITIES
        if self.labels is not None:
            return AccessLevel.LABEL
        return None

    def __len__(self) -> int:
        """N, the number of images answered (0 for no field)."""
        present = [getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None]
        return len(present[0]) if present else 0


def outputs_from(parsed: LogitsResponse, decode: Callable[[WireTensor], np.ndarray]) -> Outputs:
    """The response's fields as arrays; ``decode`` turns a wire tensor into an array (the SDK's, which
    reports a malformed one as the server's protocol error). Raises ValueError for ragged or
    non-integer class lists and for an answer with no field at all."""
    outputs = Outputs(
        logits=decode(parsed.logits) if parsed.logits is not None else None,
        probabilities=decode(parsed.probabilities) if parsed.probabilities is not None else None,
        classes=_indices(parsed.classes, ndim=2) if parsed.classes is not None else None,
        labels=_indices(parsed.labels, ndim=1) if parsed.labels is not None else None,
    )
    if outputs.level is None:
        raise ValueError("the answer carries none of logits, probabilities, classes, labels")
    return outputs


def concat_outputs(parts: Sequence[Outputs]) -> Outputs:
    """The batches' outputs one after another (each field present in all of them, or in none)."""
    if not parts:
        raise ValueError("no outputs to concatenate")
    merged: dict[str, np.ndarray | None] = {}
    for f in fields(Outputs):
        values = [getattr(part, f.name) for part in parts]
        if any(value is None for value in values) and not all(value is None for value in values):
            raise ValueError(f"{f.name} is present in some batches' answers and not in others")
        merged[f.name] = None if values[0] is None else np.concatenate(values)
    return Outputs(**merged)


def _indices(values: list[list[int]] | list[int], ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.int64)  # a ragged list of lists raises ValueError here
    if array.size == 0:
        return array.reshape((0,) * ndim)
    if array.ndim != ndim:
        raise ValueError(f"class indices of shape {array.shape}, expected {ndim} dimension(s)")
    return array

"""Per-image losses and correctness computed by the client from what an access level reveals.

For an image of true class y among C classes (all in float64):

* ``logits`` z (C,): cross-entropy, ``logsumexp(z) - z_y`` with the maximum subtracted first; the
  same quantity as the server's ``/loss`` (up to float rounding).
* ``probabilities`` p (C,): ``-log(max(p_y, floor))``. The floor bounds the loss where the revealed
  p_y is 0 (underflow, or rounded to ``decimals``).
* ``top-k``: classes c_1..c_k and their probabilities p_1..p_k. If y is among them, ``-log(max(p_y,
  floor))``; otherwise the mass the answer leaves out, ``m = 1 - sum_i p_i``, is spread evenly over
  the C - k classes not shown (nothing better is known of them): ``-log(max(m / (C - k), floor))``.
  A y outside the top k thus costs at least ``log((C - k) / m)``, more than any shown class whose
  probability exceeds ``m / (C - k)``, and less as the shown classes give up mass.
* ``label`` (the predicted class only): the 0-1 loss, ``[prediction != y]``. Its batch mean is the
  error rate, which moves in steps of 1 / batch and is flat almost everywhere in the prompt's
  parameters. SPSA still gets a signal: the two perturbed losses of a probe differ whenever the
  perturbation flips some image's prediction, and the estimate averages q probes over a batch, so
  its expectation is the gradient of a smoothed error rate (smoothed by the perturbation of size c).
  Its limits: probes that flip nothing give exactly zero, so small c or small batches give mostly
  zero estimates, and near a minimum the steps of 1 / batch are coarser than the improvements
  left; a larger batch, q and c help. It cannot distinguish a confident from a marginal mistake.

Correctness at every level: the top-1 prediction (argmax of logits or probabilities, the first of
the top-k classes, the label) equals y.
"""

from __future__ import annotations

import numpy as np

from client._outputs import Outputs
from shared.access import AccessLevel

__all__ = [
    "PROBABILITY_FLOOR",
    "correct",
    "cross_entropy",
    "losses",
    "predictions",
    "probability_floor",
    "probability_loss",
    "top_k_loss",
    "zero_one_loss",
]

# exp(-27.6): far below any probability a float32 softmax over <= 1000 classes reveals without rounding.
PROBABILITY_FLOOR = 1e-12


def probability_floor(decimals: int | None) -> float:
    """The floor for probabilities rounded to ``decimals``: a revealed 0 means p < 0.5 * 10^-decimals,
    so the loss is bounded by -log of that (a 1e-12 floor would make such a 0 cost 27.6 nats, a
    spike SPSA's difference of two losses would mistake for a gradient). Without rounding:
    PROBABILITY_FLOOR."""
    return PROBABILITY_FLOOR if decimals is None else max(PROBABILITY_FLOOR, 0.5 * 10.0**-decimals)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(sum_c exp(z_c)) - z_y`` per row of ``logits`` (N, C), in float64 (the evaluator's
    operations in their order: evaluation at level logits gives the numbers it always gave)."""
    all_logits = np.asarray(logits).astype(np.float64)
    shifted = all_logits - all_logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return log_norm - shifted[np.arange(len(labels)), labels]


def probability_loss(probabilities: np.ndarray, labels: np.ndarray, floor: float) -> np.ndarray:
    """``-log(max(p_y, floor))`` per row of ``probabilities`` (N, C)."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return -np.log(np.maximum(p, floor))


def top_k_loss(
    probabilities: np.ndarray, classes: np.ndarray, labels: np.ndarray, num_classes: int, floor: float
) -> np.ndarray:
    """The top-k loss of the module's docstring; ``probabilities`` and ``classes`` (N, k)."""
    p = np.asarray(probabilities, dtype=np.float64)
    shown = np.asarray(classes) == np.asarray(labels)[:, None]  # (N, k): at most one true per row
    hidden = num_classes - p.shape[1]
    if hidden > 0:
        # rounding or noise can make the shown mass exceed 1: the floor then bounds the loss
        spread = (1.0 - p.sum(axis=1)) / hidden
    else:  # every class is shown, so y always is: this branch's value is never used
        spread = np.zeros(len(p))
    p_y = np.where(shown.any(axis=1), (p * shown).sum(axis=1), spread)
    return -np.log(np.maximum(p_y, floor))


def zero_one_loss(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the predicted class differs from y, else 0.0."""
    return (np.asarray(predicted) != np.asarray(labels)).astype(np.float64)


def predictions(outputs: Outputs) -> np.ndarray:
    """The top-1 predicted class (N,) int64 at the outputs' level."""
    level = _level(outputs)
    if level is AccessLevel.LOGITS:
        return np.asarray(outputs.logits).argmax(axis=1)
    if level is AccessLevel.PROBABILITIES:
        return np.asarray(outputs.probabilities).argmax(axis=1)
    if level is AccessLevel.TOP_K:
        return np.asarray(outputs.classes, dtype=np.int64)[:, 0]
    return np.asarray(outputs.labels, dtype=np.int64)


def correct(outputs: Outputs, labels: np.ndarray) -> np.ndarray:
    """Whether each image's top-1 prediction is its label (N,) bool."""
    labels = _checked(outputs, labels)
    return predictions(outputs) == labels


def losses(
    outputs: Outputs, labels: np.ndarray, num_classes: int | None = None, floor: float = PROBABILITY_FLOOR
) -> np.ndarray:
    """Per-image loss (N,) float64 at the outputs' level (the module's docstring); ``num_classes``, the
    task's C, is needed at top-k only."""
    labels = _checked(outputs, labels)
    level = _level(outputs)
    if level is AccessLevel.LOGITS:
        return cross_entropy(np.asarray(outputs.logits), labels)
    if level is AccessLevel.PROBABILITIES:
        return probability_loss(np.asarray(outputs.probabilities), labels, floor)
    if level is AccessLevel.TOP_K:
        if num_classes is None:
            raise ValueError("the top-k loss needs num_classes, the task's number of classes")
        probabilities, classes = np.asarray(outputs.probabilities), np.asarray(outputs.classes)
        if probabilities.shape != classes.shape:
            raise ValueError(f"top-k probabilities {probabilities.shape} and classes {classes.shape} differ")
        return top_k_loss(probabilities, classes, labels, num_classes, floor)
    return zero_one_loss(predictions(outputs), labels)


def _level(outputs: Outputs) -> AccessLevel:
    level = outputs.level
    if level is None:
        raise ValueError("the outputs hold no field to compute a loss from")
    return level


def _checked(outputs: Outputs, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(outputs):
        raise ValueError(f"{len(labels)} labels for answers of {len(outputs)} images")
    return labels

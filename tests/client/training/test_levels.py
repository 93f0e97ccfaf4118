"""The client's losses and correctness at each access level, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client._outputs import Outputs
from client.training.levels import (
    PROBABILITY_FLOOR,
    correct,
    cross_entropy,
    losses,
    predictions,
    probability_floor,
    top_k_loss,
)

LABELS = np.array([0, 2])


def test_logits_give_the_cross_entropy() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    expected = [
        math.log(math.exp(2) + math.exp(1) + 1) - 2.0,  # -log softmax_0
        math.log(3.0),  # uniform over 3 classes
    ]
    assert losses(Outputs(logits=logits), LABELS) == pytest.approx(expected, rel=1e-12)
    assert correct(Outputs(logits=logits), LABELS).tolist() == [True, False]  # ties: the first class


def test_cross_entropy_is_stable_for_large_logits() -> None:
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert cross_entropy(logits, np.array([0, 0])) == pytest.approx([0.0, 1000.0])


def test_probabilities_give_minus_log_p_y_with_a_floor() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]], dtype=np.float32)
    got = losses(Outputs(probabilities=probabilities), LABELS)
    assert got[0] == pytest.approx(-math.log(0.7), rel=1e-6)
    assert got[1] == pytest.approx(-math.log(PROBABILITY_FLOOR))  # p_y = 0: the floor, not inf
    assert losses(Outputs(probabilities=probabilities), LABELS, floor=1e-3)[1] == pytest.approx(
        -math.log(1e-3)
    )
    assert correct(Outputs(probabilities=probabilities), LABELS).tolist() == [True, False]


def test_the_floor_for_rounded_probabilities_is_half_their_last_decimal() -> None:
    assert probability_floor(None) == PROBABILITY_FLOOR
    assert probability_floor(2) == pytest.approx(0.005)
    assert probability_floor(0) == pytest.approx(0.5)
    assert probability_floor(8) == pytest.approx(5e-9)


def test_top_k_uses_p_y_when_shown_and_spreads_the_missing_mass_otherwise() -> None:
    # C = 5, k = 2. Image 0: y = 0 is shown with p 0.6. Image 1: y = 2 is not shown; the shown classes
    # hold 0.7 + 0.1, so the 3 hidden classes share 0.2: p_y taken as 0.2 / 3.
    outputs = Outputs(
        probabilities=np.array([[0.6, 0.3], [0.7, 0.1]], dtype=np.float32),
        classes=np.array([[0, 4], [1, 3]]),
    )
    got = losses(outputs, LABELS, num_classes=5)
    assert got == pytest.approx([-math.log(0.6), -math.log(0.2 / 3)], rel=1e-6)
    assert correct(outputs, LABELS).tolist() == [True, False]
    assert predictions(outputs).tolist() == [0, 1]


def test_top_k_where_y_is_second() -> None:
    outputs = Outputs(probabilities=np.array([[0.5, 0.4]]), classes=np.array([[1, 0]]))
    assert losses(outputs, np.array([0]), num_classes=3) == pytest.approx([-math.log(0.4)])
    assert correct(outputs, np.array([0])).tolist() == [False]


def test_top_k_missing_mass_at_or_below_zero_hits_the_floor() -> None:
    # rounding can make the shown probabilities sum to 1 or more: nothing is left for the hidden ones
    probabilities, classes = np.array([[0.6, 0.41], [0.5, 0.5]]), np.array([[0, 1], [0, 1]])
    got = top_k_loss(probabilities, classes, np.array([2, 3]), num_classes=4, floor=1e-4)
    assert got == pytest.approx([-math.log(1e-4)] * 2)


def test_top_k_with_every_class_shown() -> None:
    outputs = Outputs(probabilities=np.array([[0.7, 0.2, 0.1]]), classes=np.array([[2, 0, 1]]))
    assert losses(outputs, np.array([1]), num_classes=3) == pytest.approx([-math.log(0.1)])


def test_top_k_needs_the_number_of_classes() -> None:
    outputs = Outputs(probabilities=np.array([[0.7]]), classes=np.array([[2]]))
    with pytest.raises(ValueError, match="num_classes"):
        losses(outputs, np.array([1]))


def test_label_gives_the_zero_one_loss() -> None:
    outputs = Outputs(labels=np.array([0, 1, 2, 2]))
    truth = np.array([0, 2, 2, 1])
    assert losses(outputs, truth).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert losses(outputs, truth).mean() == 0.5  # SPSA's batch loss: the error rate
    assert correct(outputs, truth).tolist() == [True, False, True, False]
    assert predictions(outputs).tolist() == [0, 1, 2, 2]


def test_predictions_at_every_level() -> None:
    logits = np.array([[0.1, 3.0, -1.0], [2.0, 1.0, 0.0]], dtype=np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert predictions(Outputs(logits=logits)).tolist() == [1, 0]
    assert predictions(Outputs(probabilities=probabilities)).tolist() == [1, 0]
    assert predictions(Outputs(labels=np.array([1, 0]))).tolist() == [1, 0]
    # at level logits, the loss from probabilities equals the cross-entropy (softmax is what they are)
    ce = losses(Outputs(logits=logits), LABELS)
    assert losses(Outputs(probabilities=probabilities), LABELS) == pytest.approx(ce, rel=1e-6)


def test_mismatched_labels_and_empty_outputs_are_errors() -> None:
    with pytest.raises(ValueError, match="3 labels for answers of 2 images"):
        losses(Outputs(labels=np.array([0, 1])), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="no field"):
        predictions(Outputs())

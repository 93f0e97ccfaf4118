"""The seed evaluator's metrics (my_dassl Classification): macro-F1 over the labels present in the
truth, as sklearn's f1_score(average="macro", labels=np.unique(y_true)), and per-class accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from client.training.evaluate import classification_metrics


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_and_per_class_accuracy_match_the_seeds_evaluator(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=200)
    labels[labels == 5] = 4  # class 5 never in the truth, yet predicted below: it must not count
    predictions = np.where(rng.random(200) < 0.5, labels, rng.integers(0, 6, size=200))
    names = [f"c{i}" for i in range(6)]
    macro_f1, mean_per_class, per_class = classification_metrics(labels, predictions, names)
    expected = f1_score(labels, predictions, average="macro", labels=np.unique(labels))
    assert macro_f1 == pytest.approx(expected, abs=1e-12)
    assert set(per_class) == {"c0", "c1", "c2", "c3", "c4"}
    for label in range(5):
        truth = labels == label
        assert per_class[f"c{label}"] == pytest.approx(float(np.mean(predictions[truth] == label)))
    assert mean_per_class == pytest.approx(np.mean(list(per_class.values())))


def test_a_class_never_predicted_has_zero_f1() -> None:
    labels, predictions = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])
    macro_f1, _, per_class = classification_metrics(labels, predictions, ["a", "b"])
    assert per_class == {"a": 1.0, "b": 0.0}
    assert macro_f1 == pytest.approx(f1_score(labels, predictions, average="macro", labels=[0, 1]))

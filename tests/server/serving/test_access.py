"""What each access level reveals of a batch's logits (``server.serving.access``), on plain arrays:
softmax that neither overflows nor loses its sum, top-k's order with ties by the lower class, the noise
drawn from the request's own seed, and the refusals by route (``server.serving.access_policy``)."""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import APIError
from server.serving.access import blur_logits, noise_seed, reveal, round_scores
from server.serving.access_policy import refuse_key_level, refuse_route, refuse_unoffered_level
from shared.access import Access, AccessLevel
from shared.protocol import Endpoint


def test_probabilities_are_a_stable_softmax_in_float32() -> None:
    logits = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    p = reveal(logits, Access(level=AccessLevel.PROBABILITIES))["probabilities"]
    assert p.dtype == np.float32 and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0, :2], [1 / (1 + np.exp(-1)), 1 / (1 + np.e)], rtol=1e-6)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-6)


def test_top_k_is_most_probable_first_ties_by_the_lower_class() -> None:
    logits = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    fields = reveal(logits, Access(level=AccessLevel.TOP_K, k=3))
    assert fields.keys() == {"classes", "probabilities"}
    assert fields["classes"].tolist() == [[1, 2, 3], [0, 1, 2]]
    assert fields["probabilities"].shape == (2, 3)
    assert reveal(logits, Access(level=AccessLevel.LABEL))["labels"].tolist() == [1, 0]


def test_a_loss_level_reveals_nothing_on_the_logits_route() -> None:
    with pytest.raises(ValueError, match="loss"):
        reveal(np.zeros((1, 2), np.float32), Access(level=AccessLevel.LOSS))


def test_noise_comes_from_the_requests_seed_alone() -> None:
    logits = np.zeros((4, 10), dtype=np.float32)
    access = Access(noise_std=2.0)
    seed = noise_seed("key-a", "task-1", b"body")
    first, again = blur_logits(logits, access, seed), blur_logits(logits, access, seed)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and 1.0 < float(first.std()) < 3.0
    for other in (("key-b", "task-1", b"body"), ("key-a", "task-2", b"body"), ("key-a", "task-1", b"bodY")):
        assert noise_seed(*other) != seed
    assert noise_seed("ab", "c", b"") != noise_seed("a", "bc", b"")  # the parts are length-prefixed
    assert blur_logits(logits, Access(), None) is logits  # no noise: the logits themselves
    with pytest.raises(ValueError, match="seed"):
        blur_logits(logits, access, None)


def test_rounding_keeps_float32() -> None:
    scores = np.array([0.123456, 1.98765], dtype=np.float32)
    rounded = round_scores(scores, 2)
    assert rounded.dtype == np.float32 and rounded.tolist() == np.float32([0.12, 1.99]).tolist()
    assert round_scores(scores, None) is scores


@pytest.mark.parametrize(
    ("level", "endpoint", "refused"),
    [
        (AccessLevel.LOGITS, Endpoint.LOSS, False),
        (AccessLevel.LOSS, Endpoint.LOSS, False),
        (AccessLevel.LOSS, Endpoint.LOGITS, True),
        (AccessLevel.PROBABILITIES, Endpoint.LOSS, True),
        (AccessLevel.LABEL, Endpoint.LOSS, True),
        (AccessLevel.LABEL, Endpoint.LOGITS, False),
    ],
)
def test_each_route_answers_its_levels(level: AccessLevel, endpoint: Endpoint, refused: bool) -> None:
    access = Access(level=level, k=2 if level is AccessLevel.TOP_K else None)
    if not refused:
        refuse_route(access, endpoint)
        return
    with pytest.raises(APIError) as error:
        refuse_route(access, endpoint)
    assert error.value.status == 403 and level.value in error.value.message


def test_levels_offered_and_a_keys_levels() -> None:
    label = Access(level=AccessLevel.LABEL)
    refuse_unoffered_level(label, list(AccessLevel))
    refuse_key_level(label, None)
    with pytest.raises(APIError, match="offers logits, loss") as error:
        refuse_unoffered_level(label, [AccessLevel.LOSS, AccessLevel.LOGITS])
    assert error.value.detail == {"level": "label", "offered": ["logits", "loss"]}
    with pytest.raises(APIError, match="its levels: none"):
        refuse_key_level(label, ())

"""What a task's access level reveals of a batch's logits (``shared.access``): the seeded noise, the
fields each level answers, and the rounding. Pure numpy; the routes' refusals are in
``server.serving.access_policy``.

The noise generator is seeded by the request itself (``noise_seed``), so the same query, or a replay,
is answered the same: sending a query again cannot average the noise away.
"""

from __future__ import annotations

import hashlib

import numpy as np

from shared.access import Access, AccessLevel

__all__ = ["blur_logits", "noise_seed", "reveal", "round_scores"]


def noise_seed(key_id: str, task_id: str, body: bytes | bytearray) -> int:
    """A 256-bit seed from the key, the task and the request body (each part length-prefixed, so no
    two different triples hash the same bytes)."""
    digest = hashlib.sha256()
    for part in (key_id.encode(), task_id.encode(), body):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return int.from_bytes(digest.digest(), "little")


def blur_logits(logits: np.ndarray, access: Access, seed: int | None) -> np.ndarray:
    """The logits plus N(0, noise_std^2) from PCG64(seed), as float32; the logits themselves when the
    task has no noise."""
    if access.noise_std is None:
        return logits
    if seed is None:  # a noisy task's answer must depend on its request; a missing seed is a bug
        raise ValueError("a task with noise needs the request's seed")
    rng = np.random.Generator(np.random.PCG64(seed))
    noise = rng.standard_normal(logits.shape) * access.noise_std
    return (logits.astype(np.float64) + noise).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    wide = logits.astype(np.float64)
    wide -= wide.max(axis=1, keepdims=True)  # exp of at most 0: no overflow
    np.exp(wide, out=wide)
    wide /= wide.sum(axis=1, keepdims=True)
    return wide.astype(np.float32)


def round_scores(scores: np.ndarray, decimals: int | None) -> np.ndarray:
    """``scores`` rounded to ``decimals`` (float32 kept); unchanged when None."""
    if decimals is None:
        return scores
    return np.round(scores, decimals).astype(np.float32)


def reveal(logits: np.ndarray, access: Access) -> dict[str, np.ndarray]:
    """The fields of ``LogitsResponse`` the level answers, from (blurred) float32 logits (N, C):
    float arrays rounded to ``decimals``, class indices as int64."""
    level, decimals = access.level, access.decimals
    if level is AccessLevel.LOGITS:
        return {"logits": round_scores(logits, decimals)}
    if level is AccessLevel.LABEL:
        return {"labels": logits.argmax(axis=1)}
    probabilities = _softmax(logits)
    if level is AccessLevel.PROBABILITIES:
        return {"probabilities": round_scores(probabilities, decimals)}
    if level is AccessLevel.TOP_K and access.k is not None:
        # stable sort of -p: among equal probabilities the lower class index comes first
        classes = np.argsort(-probabilities, axis=1, kind="stable")[:, : access.k]
        top = np.take_along_axis(probabilities, classes, axis=1)
        return {"classes": classes, "probabilities": round_scores(top, decimals)}
    raise ValueError(f"level {level.value} answers no logits")  # loss: refused before any forward

"""Per-key request rates: a token bucket per key in the server process.

A key with a rate of R requests a second gains R tokens a second and holds at most max(1, R) of them
(one second's worth: a burst of R requests after a quiet second, never more). Every authenticated
request takes one token before anything else is done; without one it is answered 429 ``rate_limited``
with ``Retry-After`` (the seconds until a token is there, rounded up) and nothing is read, computed or
charged. Buckets live in memory: a restarted server starts every key with a full bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from server.errors import APIError
from shared.protocol import ErrorCode

__all__ = ["RateLimiter", "rate_limited"]


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key_id: str, rate_per_s: float) -> float:
        """Take one of the key's tokens: 0.0 if there was one, else the seconds until there is one
        (and nothing is taken)."""
        capacity = max(1.0, rate_per_s)
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (capacity, now))
            # a rate lowered since the last request leaves no more than the new capacity
            tokens = min(capacity, tokens + (now - then) * rate_per_s)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / rate_per_s


def rate_limited(rate_per_s: float, wait_s: float) -> APIError:
    return APIError(
        ErrorCode.RATE_LIMITED,
        f"rate limit exceeded: this key may send {rate_per_s:g} requests a second; retry in {wait_s:.2f} s",
        {"rate_per_s": rate_per_s, "retry_after_s": round(wait_s, 3)},
        retry_after=wait_s,
    )

"""Backoff for the failures worth retrying: no connection, 503 (loading or restarting), 409 (the same
request id still being answered) and 429 ``rate_limited`` (which waits the server's ``Retry-After``
instead of the backoff). ``quota_exceeded`` is never retried: waiting does not bring quota back."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.25  # seconds before the second attempt; doubles each time
    max_delay: float = 8.0
    jitter: float = 0.1  # fraction of each delay drawn at random, so sweeps do not retry in step
    max_retry_after: float = 60.0  # a rate limit's Retry-After longer than this is raised, not waited out

    def delays(self) -> Iterator[float]:
        """The pauses between attempts: ``max_attempts - 1`` of them."""
        for attempt in range(self.max_attempts - 1):
            delay = min(self.max_delay, self.base_delay * 2**attempt)
            yield delay * (1.0 + self.jitter * random.random())

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_attempts=1)

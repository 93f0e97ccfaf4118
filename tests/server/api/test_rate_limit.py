"""The per-key token bucket, on a clock the test moves: the arithmetic of refusals and waits."""

from __future__ import annotations

import pytest

from server.api.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_one_seconds_worth_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("k", 4.0) for _ in range(4)] == [0.0] * 4  # a burst of one second's worth
    assert limiter.take("k", 4.0) == pytest.approx(0.25)  # the next token comes in 1/4 s
    clock.now += 0.1
    assert limiter.take("k", 4.0) == pytest.approx(0.15)  # a refused request takes nothing
    clock.now += 0.15
    assert limiter.take("k", 4.0) == 0.0
    assert limiter.take("k", 4.0) == pytest.approx(0.25)


def test_a_slow_rate_holds_one_token_and_keys_have_their_own_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.take("slow", 0.5) == 0.0
    assert limiter.take("slow", 0.5) == pytest.approx(2.0)
    assert limiter.take("other", 0.5) == 0.0  # another key is not slowed by this one
    clock.now += 60.0  # a long quiet spell still leaves only one token (capacity max(1, rate))
    assert limiter.take("slow", 0.5) == 0.0
    assert limiter.take("slow", 0.5) == pytest.approx(2.0)


def test_a_lowered_rate_caps_the_tokens_already_saved() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.take("k", 10.0) == 0.0  # 9 tokens left at rate 10
    assert limiter.take("k", 1.0) == 0.0  # the rate is now 1/s: at most 1 token, taken
    assert limiter.take("k", 1.0) == pytest.approx(1.0)

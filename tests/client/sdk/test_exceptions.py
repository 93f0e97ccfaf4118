"""The SDK's exception classes follow the protocol's one table of error codes and statuses."""

from __future__ import annotations

import pytest

from client._exceptions import (
    APIStatusError,
    QuotaExceededError,
    RateLimitedError,
    RequestInProgressError,
    ServerUnavailableError,
    error_for_status,
)
from shared.protocol import ERROR_STATUS, ErrorCode

RETRIED = {
    ErrorCode.NOT_READY: ServerUnavailableError,
    ErrorCode.QUEUE_FULL: ServerUnavailableError,
    ErrorCode.LEDGER_UNAVAILABLE: ServerUnavailableError,
    ErrorCode.REQUEST_IN_PROGRESS: RequestInProgressError,
    ErrorCode.RATE_LIMITED: RateLimitedError,
}


def test_the_shared_table_gives_every_code_a_status() -> None:
    assert set(ERROR_STATUS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_the_server_sends_gets_a_class_of_its_own_status(code: ErrorCode) -> None:
    status = ERROR_STATUS[code]
    error = error_for_status(status, code.value, "what went wrong")
    assert (error.status, error.code, error.message) == (status, code.value, "what went wrong")
    if code is ErrorCode.METHOD_NOT_ALLOWED:  # the SDK never sends a method a route lacks
        assert type(error) is APIStatusError
    else:
        assert type(error) is not APIStatusError, f"{code} ({status}) has no class in the SDK"


@pytest.mark.parametrize("code", list(RETRIED))
def test_the_codes_worth_a_retry_get_the_classes_the_sdk_retries(code: ErrorCode) -> None:
    assert type(error_for_status(ERROR_STATUS[code], code.value, "retry shortly")) is RETRIED[code]


def test_codes_that_share_a_status_keep_their_own_classes() -> None:
    assert type(error_for_status(429, "rate_limited", "slow down")) is RateLimitedError
    assert type(error_for_status(429, "quota_exceeded", "spent")) is QuotaExceededError
    assert type(error_for_status(429, "task_limit_reached", "full")) is QuotaExceededError
    assert type(error_for_status(429, "unknown", "a proxy's 429")) is QuotaExceededError  # never retried
    assert type(error_for_status(503, "rate_limited", "a code at the wrong status")) is not RateLimitedError

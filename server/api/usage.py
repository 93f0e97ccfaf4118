"""A key's usage reports: its charged calls by endpoint and in total, its refused requests and what is
left of its quotas (``/v1/usage``), and its charged calls per hour or day (``/v1/usage/periods``)."""

from __future__ import annotations

from datetime import UTC, datetime

from server.api.rejections import RejectionCounter
from server.errors import APIError
from server.ledger import Ledger
from server.ledger.reports import as_utc
from shared.protocol import (
    USAGE_PERIOD_SECONDS,
    ErrorCode,
    KeyQuota,
    UsageCounts,
    UsagePeriod,
    UsagePeriodName,
    UsagePeriodsResponse,
    UsageResponse,
)

__all__ = ["usage_by_period", "usage_from_ledger"]


def usage_from_ledger(
    ledger: Ledger,
    rejections: RejectionCounter,
    key_id: str,
    price_per_1k_images: float,
    price_per_1k_texts: float,
) -> UsageResponse:
    by_endpoint = {name: UsageCounts(**counts) for name, counts in ledger.usage_by_endpoint(key_id).items()}
    total = UsageCounts(
        **{
            name: sum(getattr(counts, name) for counts in by_endpoint.values())
            for name in UsageCounts.model_fields
        }
    )
    rejected = rejections.by_status(ledger, key_id)
    quota = ledger.quota(key_id)
    return UsageResponse(
        key_id=key_id,
        total=total,
        by_endpoint=by_endpoint,
        rejected_requests=sum(rejected.values()),
        rejected_by_status=rejected,
        price_per_1k_images=price_per_1k_images,
        price_per_1k_texts=price_per_1k_texts,
        quota=KeyQuota(
            images=quota.quota_images,
            cost=quota.quota_cost,
            images_left=quota.images_left,
            cost_left=quota.cost_left,
            rate_per_s=quota.rate_per_s,
            levels=None if quota.levels is None else list(quota.levels),
        ),
    )


def usage_by_period(
    ledger: Ledger, key_id: str, by: UsagePeriodName, since: datetime | None, until: datetime | None
) -> UsagePeriodsResponse:
    since = _in_utc("since", since)
    until = _in_utc("until", until)
    if since is not None and until is not None and since >= until:
        raise APIError(
            ErrorCode.VALIDATION_ERROR,
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})",
        )
    sums = ledger.reports.by_period(
        key_id,
        USAGE_PERIOD_SECONDS[by],
        since.timestamp() if since else None,
        until.timestamp() if until else None,
    )
    periods = [
        UsagePeriod(
            start=datetime.fromtimestamp(row.start, UTC),
            requests=row.requests,
            images=row.images,
            cost=row.cost,
        )
        for row in sums
    ]
    return UsagePeriodsResponse(key_id=key_id, by=by, since=since, until=until, periods=periods)


def _in_utc(name: str, moment: datetime | None) -> datetime | None:
    """``moment`` in UTC; one that UTC cannot hold (year 1 or 9999 with a far offset) is the caller's
    error, not the server's."""
    if moment is None:
        return None
    try:
        utc = as_utc(moment)
        utc.timestamp()
    except (OverflowError, ValueError, OSError):
        raise APIError(
            ErrorCode.VALIDATION_ERROR, f"{name} ({moment.isoformat()}) is out of the range of UTC dates"
        ) from None
    return utc

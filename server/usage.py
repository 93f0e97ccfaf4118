"""A key's usage report: its charged calls by endpoint and in total, and its refused requests."""

from __future__ import annotations

from server.ledger import Ledger
from server.rejections import RejectionCounter
from shared.protocol import UsageCounts, UsageResponse

__all__ = ["usage_from_ledger"]


def usage_from_ledger(
    ledger: Ledger, rejections: RejectionCounter, key_id: str, price_per_1k_images: float
) -> UsageResponse:
    by_endpoint = {name: UsageCounts(**counts) for name, counts in ledger.usage_by_endpoint(key_id).items()}
    total = UsageCounts(
        **{
            name: sum(getattr(counts, name) for counts in by_endpoint.values())
            for name in UsageCounts.model_fields
        }
    )
    rejected = rejections.by_status(ledger, key_id)
    return UsageResponse(
        key_id=key_id,
        total=total,
        by_endpoint=by_endpoint,
        rejected_requests=sum(rejected.values()),
        rejected_by_status=rejected,
        price_per_1k_images=price_per_1k_images,
    )

"""A key's quotas against its totals, read on whichever connection the caller holds: inside a charge's
transaction (so concurrent charges cannot overrun a quota) or on the reading connection (the early
refusal before a forward, and ``/v1/usage``).

A key in the ``api_keys`` table has its own image and cost quotas; an image quota it does not set, and
every key from ``--api-keys``/``--keys-file``, falls back to the server's ``--quota-images``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.ledger.db import Conn
from server.ledger.keys import limits_in

__all__ = ["COST_TOLERANCE", "QuotaExceededError", "QuotaState", "quota_state"]

# Costs are sums of floats (images x price / 1000); a quota reached exactly must not be refused for
# the last bits of rounding.
COST_TOLERANCE = 1e-9


class QuotaExceededError(Exception):
    def __init__(
        self, used: float, quota: float, requested: float, kind: Literal["images", "cost"] = "images"
    ) -> None:
        if kind == "images":
            message = f"image quota exhausted: {used} of {quota} used, this batch has {requested}"
        else:
            message = (
                f"cost quota exhausted: {used:.6g} of {quota:.6g} used, this batch costs {requested:.6g}"
            )
        super().__init__(message)
        self.used, self.quota, self.requested, self.kind = used, quota, requested, kind


@dataclass(frozen=True)
class QuotaState:
    quota_images: int | None
    quota_cost: float | None
    images_used: int
    cost_used: float
    rate_per_s: float | None = None

    def refusal(self, images: int, cost: float) -> QuotaExceededError | None:
        """Why a charge of ``images`` costing ``cost`` would cross a quota, or None."""
        if self.quota_images is not None and self.images_used + images > self.quota_images:
            return QuotaExceededError(self.images_used, self.quota_images, images)
        if self.quota_cost is not None and self.cost_used + cost > self.quota_cost + COST_TOLERANCE:
            return QuotaExceededError(self.cost_used, self.quota_cost, cost, kind="cost")
        return None

    @property
    def images_left(self) -> int | None:
        return None if self.quota_images is None else max(0, self.quota_images - self.images_used)

    @property
    def cost_left(self) -> float | None:
        return None if self.quota_cost is None else max(0.0, self.quota_cost - self.cost_used)


def quota_state(db: Conn, key_id: str, default_images: int | None) -> QuotaState:
    row = db.execute("SELECT images, cost FROM key_usage WHERE key_id = ?", (key_id,)).fetchone()
    images_used, cost_used = (int(row[0]), float(row[1])) if row else (0, 0.0)
    own = limits_in(db, key_id)
    if own is None:
        return QuotaState(default_images, None, images_used, cost_used)
    quota_images = own.quota_images if own.quota_images is not None else default_images
    return QuotaState(quota_images, own.quota_cost, images_used, cost_used, own.rate_per_s)

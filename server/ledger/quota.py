"""A key's quotas against its totals, read on whichever connection the caller holds: inside a charge's
transaction (so concurrent charges cannot overrun a quota) or on the reading connection (the early
refusal before a forward, and ``/v1/usage``).

A key in the ``api_keys`` table has its own image and cost quotas; an image quota it does not set, and
every key from ``--api-keys``/``--keys-file``, falls back to the server's ``--quota-images``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from server.ledger.db import Conn
from server.ledger.keys import stored_levels

__all__ = ["COST_TOLERANCE", "QuotaExceededError", "QuotaState", "quota_state", "quota_states"]

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
    levels: tuple[str, ...] | None = None  # the access levels the key may use; None: all offered

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
    # one statement: the totals (none yet for a new key) and the key's own limits
    row = db.execute(
        f"SELECT w.key_id, {_COLUMNS} FROM (SELECT CAST(? AS TEXT) AS key_id) AS w"
        " LEFT JOIN key_usage AS u ON u.key_id = w.key_id LEFT JOIN api_keys AS k ON k.key_id = w.key_id",
        (key_id,),
    ).fetchall()[0]
    return _state(row, default_images)


def quota_states(db: Conn, key_ids: Sequence[str], default_images: int | None) -> dict[str, QuotaState]:
    """The quotas and totals of those ``key_ids`` that have a totals row, in one statement."""
    rows = db.execute(
        f"SELECT u.key_id, {_COLUMNS} FROM key_usage AS u LEFT JOIN api_keys AS k ON k.key_id = u.key_id"
        f" WHERE u.key_id IN ({', '.join('?' * len(key_ids))})",
        tuple(key_ids),
    ).fetchall()
    return {row[0]: _state(row, default_images) for row in rows}


_COLUMNS = "u.images, u.cost, k.key_id, k.quota_images, k.quota_cost, k.rate_per_s, k.levels"


def _state(row: Sequence, default_images: int | None) -> QuotaState:
    _, images_used, cost_used, managed, quota_images, quota_cost, rate, levels = row
    used = (int(images_used or 0), float(cost_used or 0.0))
    if managed is None:  # a key from --api-keys or --keys-file: the server's image quota only
        return QuotaState(default_images, None, *used)
    images = int(quota_images) if quota_images is not None else default_images
    return QuotaState(images, quota_cost, *used, rate, stored_levels(levels))

"""Rejected requests, counted cheaply: in memory, per (key, route template, status, code), and
written to the ledger in one batch every few seconds, so a flood of bad requests costs no durable
write each and never waits on the lock that charges use.

Label values come only from the server's own vocabulary: the key id of an authenticated key (or
``unauthenticated``), the matched route's template (or ``unmatched``), the status and the error code.
Nothing an attacker types becomes a label.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from server.ledger import Ledger, LedgerUnavailableError, RejectionKey

__all__ = ["UNAUTHENTICATED", "UNMATCHED_ROUTE", "RejectionCounter"]

log = logging.getLogger(__name__)

UNAUTHENTICATED = "unauthenticated"
UNMATCHED_ROUTE = "unmatched"


class RejectionCounter:
    def __init__(self) -> None:
        self._pending: Counter[RejectionKey] = Counter()
        self._lock = threading.Lock()  # guards _pending
        self._flush_lock = threading.Lock()  # a flush and a read of the totals never interleave

    def add(self, key_id: str | None, route: str | None, status: int, code: str) -> None:
        label = (key_id or UNAUTHENTICATED, route or UNMATCHED_ROUTE, status, code)
        with self._lock:
            self._pending[label] += 1

    def by_status(self, ledger: Ledger, key_id: str) -> dict[str, int]:
        """The key's rejections by status: written ones plus those still pending."""
        with self._flush_lock:
            counts = Counter(ledger.rejections_by_status(key_id))
            with self._lock:
                for (key, _, status, _), count in self._pending.items():
                    if key == key_id:
                        counts[str(status)] += count
        return dict(counts)

    def flush(self, ledger: Ledger) -> None:
        """Write what is pending; on failure keep it for the next flush (nothing is lost)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, Counter()
            try:
                ledger.add_rejections(batch)
            except LedgerUnavailableError as exc:
                log.warning("rejection counts not written, kept for the next flush: %s", exc)
                with self._lock:
                    self._pending.update(batch)

"""How many request bodies one key may be sending at once.

A rate limit counts requests started per second; it does not bound how many uploads are open at the
same time, and each open upload holds its bytes in memory until it ends. So every body is read inside
one of its key's ``max_uploads_per_key`` slots: one more is answered 429 ``too_many_uploads`` at once
(its body unread, the connection closed), and a slot is given back when its read ends, however it
ends. The counts live on the event loop's thread (``read_body`` runs there), so they need no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from server.errors import APIError
from shared.protocol import ErrorCode

__all__ = ["UPLOAD_RETRY_AFTER_S", "UploadSlots"]

UPLOAD_RETRY_AFTER_S = 1.0  # an upload of this key ends soon enough for a retry to find a slot


class UploadSlots:
    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: dict[str, int] = {}  # key id -> uploads in progress (absent when none)

    def open(self, key_id: str) -> int:
        """Uploads the key is sending now."""
        return self._open.get(key_id, 0)

    @contextmanager
    def held(self, key_id: str) -> Iterator[None]:
        """One of the key's slots for the duration of the block; 429 if all are taken."""
        if self.open(key_id) >= self.per_key:
            raise APIError(
                ErrorCode.TOO_MANY_UPLOADS,
                f"this key is already sending {self.per_key} request bodies, the most it may send at "
                "once; retry when one has finished",
                {"max_uploads_per_key": self.per_key},
                retry_after=UPLOAD_RETRY_AFTER_S,
                close_connection=True,  # its body is not read: the connection cannot carry another
            )
        self._open[key_id] = self.open(key_id) + 1
        try:
            yield
        finally:
            left = self._open[key_id] - 1
            if left:
                self._open[key_id] = left
            else:
                del self._open[key_id]  # no entry per key ever seen: the dict holds open uploads only

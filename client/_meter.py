"""The client's own count of what it sent: the one place where queries are tallied."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from shared.protocol import Endpoint

__all__ = ["EndpointCount", "QueryMeter"]


@dataclass
class EndpointCount:
    requests: int = 0
    images: int = 0
    bytes: int = 0


@dataclass
class QueryMeter:
    """Counts successful charged calls (tasks, logits, loss), as the server's ledger does; the keys are
    ``Endpoint`` names (plain strings once read back from a saved run)."""

    by_endpoint: dict[str, EndpointCount] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, endpoint: Endpoint, images: int, nbytes: int) -> None:
        with self._lock:
            count = self.by_endpoint.setdefault(endpoint, EndpointCount())
            count.requests += 1
            count.images += images
            count.bytes += nbytes

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.by_endpoint.values())

    @property
    def images(self) -> int:
        return sum(c.images for c in self.by_endpoint.values())

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.by_endpoint.values())

    def to_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: vars(count).copy() for name, count in self.by_endpoint.items()}

    def plus(self, other: QueryMeter) -> QueryMeter:
        """A new meter holding both meters' counts."""
        total = QueryMeter.from_dict(self.to_dict())
        for name, count in other.to_dict().items():
            mine = total.by_endpoint.setdefault(name, EndpointCount())
            mine.requests += count["requests"]
            mine.images += count["images"]
            mine.bytes += count["bytes"]
        return total

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, int]]) -> QueryMeter:
        return cls(by_endpoint={name: EndpointCount(**counts) for name, counts in data.items()})

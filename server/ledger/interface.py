"""What a ledger backend offers besides charging: its API keys and its usage reports.

Both are Protocols over plain records, so the SQLite ledger (``server.ledger.keys``,
``server.ledger.reports``) and another backend (PostgreSQL) implement the same methods and keep their
SQL to themselves; the key ring, the usage routes and the admin commands see only these records.
Times are Unix seconds (UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "KeyExistsError",
    "KeyLimits",
    "KeyStore",
    "KeyTotals",
    "ManagedKey",
    "PeriodTotals",
    "QueryRow",
    "UnknownKeyError",
    "UsageReports",
]


@dataclass(frozen=True)
class KeyLimits:
    """A key's own limits; None: no limit of its own (the server's ``--quota-images`` still applies
    to images; ``levels`` None: every access level the server offers)."""

    quota_images: int | None = None
    quota_cost: float | None = None
    rate_per_s: float | None = None
    levels: tuple[str, ...] | None = None  # the access levels it may register tasks at (shared.access)


@dataclass(frozen=True)
class ManagedKey:
    """A key made by ``blackvip-server keys create``: only its SHA-256 hash is stored."""

    key_id: str
    key_hash: str
    label: str
    created: float
    revoked: float | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)


@dataclass(frozen=True)
class KeyTotals:
    requests: int = 0
    images: int = 0
    cost: float = 0.0


@dataclass(frozen=True)
class QueryRow:
    """One charged request, as the ledger recorded it."""

    ts: float
    key_id: str
    endpoint: str
    task_id: str | None
    request_id: str | None
    images: int
    batch_passes: int
    bytes: int
    texts: int
    cost: float


@dataclass(frozen=True)
class PeriodTotals:
    start: float  # the period's first second, aligned to UTC
    requests: int
    images: int
    cost: float


class UnknownKeyError(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no key with id {key_id!r} in this ledger (see 'blackvip-server keys list')")
        self.key_id = key_id


class KeyExistsError(ValueError):
    """A key with that id or hash is already stored."""


class KeyStore(Protocol):
    def create(self, key: ManagedKey) -> None:
        """Store a new key; KeyExistsError if its id or hash is taken."""
        ...

    def load(self) -> list[ManagedKey]:
        """Every key, revoked ones too, oldest first."""
        ...

    def get(self, key_id: str) -> ManagedKey:
        """The key; UnknownKeyError if there is none."""
        ...

    def revoke(self, key_id: str, when: float) -> ManagedKey:
        """Mark the key revoked at ``when`` (a revoked key stays revoked at its first time)."""
        ...

    def set_limits(self, key_id: str, limits: KeyLimits) -> ManagedKey:
        """Replace the key's limits."""
        ...

    def totals(self) -> dict[str, KeyTotals]:
        """Charged usage per key id, for every key that has any."""
        ...


class UsageReports(Protocol):
    def rows(self, since: float | None, until: float | None, key_id: str | None) -> Iterator[QueryRow]:
        """Charged requests with ``since <= ts < until``, in the order they were charged, streamed."""
        ...

    def by_period(
        self, key_id: str, period_s: int, since: float | None, until: float | None
    ) -> list[PeriodTotals]:
        """The key's charged requests summed per UTC-aligned period of ``period_s`` seconds."""
        ...

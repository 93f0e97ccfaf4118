"""What the running app holds: settings, keys, ledger, rejection counters, metrics, and the model
once it has loaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from server.api.auth import KeyRing
from server.api.rate_limit import RateLimiter
from server.api.rejections import RejectionCounter
from server.ledger import Ledger
from server.metrics import ServerMetrics
from server.serving.service import QueryService
from server.settings import ServerSettings

__all__ = ["AppState"]


@dataclass
class AppState:
    settings: ServerSettings
    keyring: KeyRing
    on_fatal: Callable[[str], None] | None = None
    ledger: Ledger | None = None
    service: QueryService | None = None  # None until the model has loaded
    load_error: str | None = None
    rejections: RejectionCounter = field(default_factory=RejectionCounter)
    metrics: ServerMetrics | None = None  # None with --no-metrics
    limiter: RateLimiter = field(default_factory=RateLimiter)

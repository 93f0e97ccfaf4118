"""What the running app holds: settings, keys, ledger, rejection counters, metrics, and the model
once it has loaded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import ParamSpec, TypeVar

from server.api.admission import MemoryBudget
from server.api.auth import KeyRing
from server.api.rate_limit import RateLimiter
from server.api.rejections import RejectionCounter
from server.api.uploads import UploadSlots
from server.ledger import Ledger
from server.metrics import ServerMetrics
from server.serving.service import QueryService
from server.settings import ServerSettings

__all__ = ["CONTROL_THREADS", "AppState"]

P = ParamSpec("P")
T = TypeVar("T")

# The threads of the control routes (usage reads): their own, so they never queue behind the model's
# requests in the shared thread pool.
CONTROL_THREADS = 4


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
    uploads: UploadSlots = field(init=False)  # each key's bodies being read (settings.max_uploads_per_key)
    memory: MemoryBudget = field(init=False)  # request bytes in memory, all keys (settings.memory_budget_mb)
    control: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CONTROL_THREADS, thread_name_prefix="blackvip-control")
    )

    def __post_init__(self) -> None:
        self.uploads = UploadSlots(self.settings.max_uploads_per_key)
        self.memory = MemoryBudget(int(self.settings.memory_budget_mb * 2**20))

    async def run_control(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work`` (a short blocking read) on the control routes' own threads."""
        return await asyncio.get_running_loop().run_in_executor(self.control, partial(work, *args, **kwargs))

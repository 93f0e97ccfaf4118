"""Prometheus instruments of one app: HTTP traffic, charges, forwards, the queue and the ledger.

Each app has its own registry (not prometheus_client's global one), so several apps in one process,
as the tests build them, never share or collide on a counter. Label values come only from the
server's own vocabulary: route templates (or ``unmatched``), a bounded set of methods, statuses,
error codes, endpoint names and, on the charge counters only, the id of a key that authenticated (the
server's own keys: as many series as keys, never one per request); no task id, request id, raw path or
key a client merely typed ever becomes a label. Series of known label values exist from the start at 0,
so a rate over them never starts missing; a key's charge series appear with its first charge.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from shared.protocol import Endpoint, ErrorCode

__all__ = ["ServerMetrics"]

# From a sub-millisecond health check to a minutes-long 2,000-image request on a large CPU model.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_IMAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_CHARGES = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float]) -> None:
        """``queue_depth`` is read at each scrape: the images waiting for a forward now."""
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "blackvip_http_requests",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "blackvip_http_request_duration_seconds",
            "From the request's arrival to its answer's last byte, by route template and method",
            ("route", "method"),
            buckets=_SECONDS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "blackvip_http_requests_in_progress", "HTTP requests being answered now", registry=registry
        )
        self.rejected = Counter(
            "blackvip_rejected_requests",
            "Requests refused with an error body (never charged), by error code",
            ("code",),
            registry=registry,
        )
        self.charged_requests = Counter(
            "blackvip_charged_requests",
            "Requests charged in the ledger (a replay is not charged again), by key id and endpoint",
            ("key_id", "endpoint"),
            registry=registry,
        )
        self.images = Counter(
            "blackvip_images_charged",
            "Images charged in the ledger, by key id and endpoint",
            ("key_id", "endpoint"),
            registry=registry,
        )
        self.forward_seconds = Histogram(
            "blackvip_forward_seconds",
            "One batch through the image encoder (its padded forwards together)",
            buckets=_SECONDS,
            registry=registry,
        )
        self.forward_images = Histogram(
            "blackvip_forward_batch_images",
            "Images of requests in one batch through the image encoder (padding not counted)",
            buckets=_IMAGES,
            registry=registry,
        )
        self.padding = Counter(
            "blackvip_forward_padding_images",
            "Zero images added to forwards by --batch-padding fixed",
            registry=registry,
        )
        self.queue = Gauge(
            "blackvip_queue_images", "Images waiting in the batcher's queue for a forward", registry=registry
        )
        self.queue.set_function(queue_depth)
        self.commit_seconds = Histogram(
            "blackvip_ledger_commit_seconds",
            "One committed group of charges: waiting for the ledger's lock, writing, fsync",
            buckets=_SECONDS,
            registry=registry,
        )
        self.commit_charges = Histogram(
            "blackvip_ledger_commit_charges",
            "Charges in one committed ledger transaction (group commit), refused ones included",
            buckets=_CHARGES,
            registry=registry,
        )
        self.commit_failures = Counter(
            "blackvip_ledger_commit_failures",
            "Ledger transactions of charges that failed (answered 503, nothing charged)",
            registry=registry,
        )
        for code in ErrorCode:
            self.rejected.labels(code.value)

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def rejected_request(self, code: ErrorCode) -> None:
        self.rejected.labels(code.value).inc()

    def charged(self, key_id: str, endpoint: Endpoint, images: int) -> None:
        """Called once a charge has committed, never for a replay or a refused charge. A key's series
        appear with its first charge (keys are the server's own, so their number is bounded)."""
        self.charged_requests.labels(key_id, endpoint.value).inc()
        self.images.labels(key_id, endpoint.value).inc(images)

    def forward(self, seconds: float, images: int, padding: int) -> None:
        self.forward_seconds.observe(seconds)
        self.forward_images.observe(images)
        self.padding.inc(padding)

    def ledger_commit(self, seconds: float, charges: int, committed: bool) -> None:
        if committed:
            self.commit_seconds.observe(seconds)
            self.commit_charges.observe(charges)
        else:
            self.commit_failures.inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition of every instrument above and its content type, in the format the scraper's
        ``Accept`` asks for (OpenMetrics or Prometheus text; the classic text when it names none)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

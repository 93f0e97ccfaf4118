"""Server settings: one object, built from CLI flags over env vars over defaults by
``server.flags.parse_args``, and checked here. API keys are hashed as soon as they are read and only the
hashes are kept.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.ledger.db import LedgerUnavailableError, check_ledger_target, is_postgres_url, redact_url
from shared.access import AccessLevel, AccessLevelPrice
from shared.protocol import ConnectionLimits, TaskLimits

__all__ = [
    "REQUEST_OVERHEAD_BYTES",
    "ServerSettings",
    "SettingsError",
    "hash_api_key",
    "ledger_label",
    "ledger_target",
    "shipped_weights",
]

ENV_PREFIX = "BLACKVIP_"
# What a request in flight holds in memory besides its body (connection buffers, parsing, threads): the
# memory budget reserves it with each body. Measured: 16 concurrent 64 MiB uploads under a 256 MiB budget
# of bodies alone grew the server's RSS by 259 MiB, 0.75 MiB a request (bench/results/upload_memory.md).
REQUEST_OVERHEAD_BYTES = 2**20


class SettingsError(ValueError):
    """Settings that cannot describe a runnable server."""


class ServerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model: str = "toy-digits"
    pretrained: str | None = None
    checkpoint: Path | None = None
    random_init: bool = False
    quick_gelu: Literal["auto", "on", "off"] = "auto"  # auto: on for OpenAI-pretrained tags (clip_model)
    seed: int = 0  # makes --random-init weights identical across restarts
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # a SQLite file (the default), or a postgresql:// URL that replicas share (server.ledger.postgres)
    ledger: Path | str = Path("blackvip-ledger.sqlite3")
    api_key_hashes: frozenset[str] = frozenset()
    ledger_keys: bool = False  # keys are required even before the ledger's keys table holds one
    keys_refresh_s: float = Field(2.0, gt=0.0)  # how often the ledger's keys table is re-read
    max_batch_images: int = Field(2048, ge=1)  # the byte limit binds first for large images
    max_request_bytes: int = Field(64 * 2**20, ge=1024)
    max_task_bytes: int = Field(2**20, ge=1024)
    max_classes: int = Field(1000, ge=1)  # ImageNet's 1,000 fit
    max_templates: int = Field(100, ge=1)  # CLIP's 80-template ensemble fits
    max_class_name_chars: int = Field(200, ge=1)
    max_template_chars: int = Field(300, ge=2)
    max_texts: int = Field(100_000, ge=1)
    max_tasks_per_key: int = Field(1000, ge=1)
    max_task_store_bytes_per_key: int = Field(16 * 2**20, ge=1024)  # names + templates of a key's tasks
    text_cache_mb: float = Field(256.0, gt=0.0)  # cached class embeddings; evicted ones are recomputed
    # Text encoding runs this many texts per model call; image forwards waiting go first between calls.
    text_encode_chunk: int = Field(8, ge=1)
    # Serving: one forward runs at most max_forward_batch images. The dynamic batcher (on unless
    # --no-batcher) merges queued requests into such forwards; batch_padding "fixed" pads every forward
    # to max_forward_batch rows, so a row's result never depends on what it was batched with.
    max_forward_batch: int = Field(64, ge=1)
    batcher: bool = True
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=1000.0)
    max_queue_images: int = Field(8192, ge=1)
    batch_padding: Literal["fixed", "none"] = "fixed"
    padded_rows: int | None = Field(None, ge=1)  # one forward size for all; default: see forward_shapes
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"  # CUDA only (autocast); a CPU stays fp32
    price_per_1k_images: float = Field(1.0, ge=0.0)
    price_per_1k_texts: float = Field(1.0, ge=0.0)  # a text costs an image's compute (ViT-B-32, CPU)
    # The access levels offered (shared.access) and a price per 1,000 images for any of them that does
    # not cost price_per_1k_images (a level that reveals less may cost less).
    access_levels: tuple[AccessLevel, ...] = tuple(AccessLevel)
    level_prices: dict[AccessLevel, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] = {}
    quota_images: int | None = Field(None, ge=0)
    idempotency_window_s: float = Field(86_400.0, gt=0.0)
    replay_ttl_s: float = Field(900.0, ge=0.0)
    replay_store_mb: float = Field(256.0, ge=0.0)
    replay_store_key_share: float = Field(0.25, gt=0.0, le=1.0)  # of the store, one key's answers at most
    ledger_busy_timeout_s: float = Field(5.0, gt=0.0)
    ledger_pool_size: int = Field(8, ge=1)  # PostgreSQL connections per server process
    rejection_flush_s: float = Field(5.0, gt=0.0)
    shutdown_grace_s: float = Field(30.0, ge=0.0)
    # What clients may hold open (server.api.admission, server.api.connections).
    max_connections: int = Field(1024, ge=1)
    max_uploads_per_key: int = Field(4, ge=1)
    header_timeout_s: float = Field(10.0, gt=0.0)
    body_timeout_s: float = Field(120.0, gt=0.0)
    memory_budget_mb: float = Field(512.0, gt=0.0)  # request bytes held in memory at once, server-wide
    allow_open: bool = False
    # Where clients reach the service when it sits behind a port mapping (a container binds 0.0.0.0 in
    # its own network). The open-API check takes it instead of --host only inside a container
    # (--in-container, set by the image): on a machine's own network --host is what others reach.
    published_on: str | None = None
    in_container: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # uvicorn's line per request; off: /metrics and the ledger count every request, and the line is a
    # write on the event loop per request (bench/results/throughput.md, section d)
    access_log: bool = False
    metrics: bool = True  # Prometheus text at /metrics, no key (docs/server.md: Metrics)

    @field_validator("ledger", mode="before")
    @classmethod
    def _ledger_target(cls, value: object) -> object:
        try:
            if isinstance(value, str):
                return ledger_target(value)
            check_ledger_target(value)  # a Path: a URL made a path folded its //
        except (argparse.ArgumentTypeError, LedgerUnavailableError) as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> ServerSettings:
        if self.in_container:
            addresses = [self.published_on or self.host]
        else:  # --published-on 127.0.0.1 cannot make --host 0.0.0.0 private
            addresses = [self.host] + ([self.published_on] if self.published_on else [])
        reachable_at = next((address for address in addresses if not is_loopback(address)), None)
        keyed = self.api_key_hashes or self.ledger_keys
        if not keyed and not self.allow_open and reachable_at is not None:
            raise SettingsError(
                f"refusing to serve on {reachable_at} with no API keys: anyone who can reach it could "
                "spend its compute. Set --api-keys/--keys-file (BLACKVIP_API_KEYS), or --ledger-keys to "
                "take the keys made by 'blackvip-server keys create', bind 127.0.0.1, "
                "or pass --allow-open (BLACKVIP_ALLOW_OPEN=1) to serve an open API on purpose"
            )
        return self

    @model_validator(mode="after")
    def _budget_holds_one_request(self) -> ServerSettings:
        largest = max(self.max_request_bytes, self.max_task_bytes)
        if self.memory_budget_mb * 2**20 < largest + REQUEST_OVERHEAD_BYTES:
            raise SettingsError(
                f"--memory-budget-mb {self.memory_budget_mb:g} cannot hold one request of "
                f"{largest} bytes (--max-request-bytes/--max-task-bytes) and its "
                f"{REQUEST_OVERHEAD_BYTES // 2**20} MiB of working memory: raise it or lower those"
            )
        return self

    @model_validator(mode="after")
    def _levels_offered(self) -> ServerSettings:
        if not self.access_levels or len(set(self.access_levels)) != len(self.access_levels):
            raise SettingsError("--access-levels must name at least one level, each once")
        unoffered = [level.value for level in self.level_prices if level not in self.access_levels]
        if unoffered:
            raise SettingsError(
                f"--level-price for {', '.join(unoffered)}, which --access-levels does not offer"
            )
        return self

    def price_for(self, level: AccessLevel) -> float:
        """The price per 1,000 images of a task at ``level``."""
        return self.level_prices.get(level, self.price_per_1k_images)

    @property
    def level_price_list(self) -> list[AccessLevelPrice]:
        """The levels offered with their prices, as ``/v1/info`` lists them."""
        levels = self.access_levels
        return [AccessLevelPrice(level=level, price_per_1k_images=self.price_for(level)) for level in levels]

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(**{name: getattr(self, name) for name in ConnectionLimits.model_fields})

    @property
    def task_limits(self) -> TaskLimits:
        # Each limit is a setting of the same name, so the published set cannot drift from the flags.
        return TaskLimits(**{name: getattr(self, name) for name in TaskLimits.model_fields})

    @property
    def replay_ttl(self) -> float:
        """Answers are never kept longer than their request ids."""
        return min(self.replay_ttl_s, self.idempotency_window_s)

    @property
    def weights_label(self) -> str:
        """What the info endpoint says about the weights (never the weights themselves)."""
        if self.random_init:
            return "random-init"
        if self.checkpoint is not None:
            return f"checkpoint:{self.checkpoint.name}"
        return str(self.pretrained)

    def public_dict(self) -> dict[str, object]:
        """The settings as saved with a run: everything but the key hashes."""
        data = self.model_dump(mode="json", exclude={"api_key_hashes"})
        data["api_keys"] = len(self.api_key_hashes)
        data["ledger"] = ledger_label(self.ledger)  # a URL's password is never logged or saved
        return data


SHIPPED_WEIGHTS_DIR = Path(__file__).parent / "weights"


def shipped_weights(model: str) -> Path | None:
    """The checkpoint made in this repository for ``model`` (e.g. toy-digits), if there is one."""
    path = SHIPPED_WEIGHTS_DIR / f"{model}.pt"
    return path if path.is_file() else None


def ledger_target(text: str) -> Path | str:
    """``--ledger``: a ``postgresql://`` URL stays text, anything else is a SQLite file's path; a value
    that starts like a PostgreSQL URL but is none is refused, saying why."""
    try:
        check_ledger_target(text)
    except LedgerUnavailableError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text if is_postgres_url(text) else Path(text)


def ledger_label(target: Path | str) -> str:
    """The ledger as it may be shown: a URL without its password."""
    return str(target) if isinstance(target, Path) else redact_url(target)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()

"""The query ledger: a SQLite file (WAL, synchronous=FULL; the default) or a PostgreSQL database
(replicas sharing one ledger) that counts every model call.

A charge is one transaction that checks the key's quota against the ledger's own totals, records
the query, remembers its request id (and, for a while, its answer) and, for a registration, stores
the task. It commits before the response is sent, so a ``kill -9`` loses no count, and a request that
would cross the quota changes nothing. Rejected requests are never charged: they arrive here as
counters, flushed in batches (see ``server.api.rejections``).

Every failure to write raises :class:`LedgerUnavailableError`; the server answers 503 and nothing is
charged or answered. The SQL here is the same on both engines (``server.ledger.db``); each engine's
module holds its connections and transactions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from server.ledger.answers import Answer, AnswerStore, DuplicateRequestError, Remembered
from server.ledger.db import CommitObserver, Conn, Database, LedgerUnavailableError, is_postgres_url
from server.ledger.keys import SqlKeyStore
from server.ledger.quota import QuotaExceededError, QuotaState, quota_state
from server.ledger.reports import SqlReports
from shared.protocol import Endpoint

__all__ = [
    "Answer",
    "DuplicateRequestError",
    "Ledger",
    "LedgerLimits",
    "LedgerUnavailableError",
    "QueryRecord",
    "QuotaExceededError",
    "QuotaState",
    "RejectionKey",
    "Remembered",
    "StoredTask",
    "TaskLimitError",
    "open_database",
]

_COUNT_COLUMNS = ("requests", "images", "batch_passes", "bytes", "texts", "cost")
RejectionKey = tuple[str, str, int, str]  # (key id or "unauthenticated", route template, status, code)
T = TypeVar("T")


@dataclass(frozen=True)
class QueryRecord:
    key_id: str
    endpoint: Endpoint
    task_id: str | None
    request_id: str | None
    images: int
    batch_passes: int
    bytes: int
    texts: int
    cost: float


@dataclass(frozen=True)
class StoredTask:
    task_id: str
    key_id: str
    class_names: list[str]
    templates: list[str]


@dataclass(frozen=True)
class LedgerLimits:
    quota_images: int | None = None
    max_tasks_per_key: int = 1000
    idempotency_window_s: float = 86_400.0
    replay_ttl_s: float = 900.0
    replay_store_bytes: int = 256 * 2**20
    busy_timeout_s: float = 5.0
    pool_size: int = 8  # PostgreSQL: connections per server process


class TaskLimitError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this key already has {limit} tasks, the most this server keeps per key")
        self.limit = limit


# A charge's refusals of itself: rolled back alone, never a failure of the ledger.
_OWN_ERRORS = (QuotaExceededError, TaskLimitError, DuplicateRequestError)


def open_database(
    target: Path | str, limits: LedgerLimits, on_commit: CommitObserver | None = None
) -> Database:
    """The engine ``target`` names: a ``postgresql://`` URL, else a SQLite file."""
    if is_postgres_url(target):
        from server.ledger.postgres import PostgresDatabase  # psycopg: only for a PostgreSQL ledger

        return PostgresDatabase(str(target), limits.busy_timeout_s, limits.pool_size, on_commit)
    from server.ledger.sqlite import SqliteDatabase

    return SqliteDatabase(Path(target), limits.busy_timeout_s, _OWN_ERRORS, on_commit)


class Ledger:
    """Thread-safe; every charge is its own all-or-nothing unit. ``target`` is a SQLite file or a
    ``postgresql://`` URL. ``keys`` and ``reports`` are its ``KeyStore`` and ``UsageReports``
    (``server.ledger.interface``)."""

    def __init__(
        self, target: Path | str, limits: LedgerLimits | None = None, on_commit: CommitObserver | None = None
    ) -> None:
        self.target, self.limits = target, limits or LedgerLimits()
        self.db = open_database(target, self.limits, on_commit)
        self.dialect = self.db.dialect
        limits = self.limits
        self.answers = AnswerStore(
            self.dialect, limits.idempotency_window_s, limits.replay_ttl_s, limits.replay_store_bytes
        )
        self.keys = SqlKeyStore(self._transaction, self._read)
        self.reports = SqlReports(self._read, self.dialect)

    @property
    def healthy(self) -> bool:
        return self.db.healthy

    def close(self) -> None:
        self.db.close()

    def _transaction(self) -> AbstractContextManager[Conn]:
        return self.db.transaction()

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.db.read(lambda db: [tuple(row) for row in db.execute(sql, params).fetchall()])

    # -- charges -------------------------------------------------------------------------------

    def charge(
        self,
        record: QueryRecord,
        remember: tuple[str, Answer | None] | None = None,
        task: StoredTask | None = None,
    ) -> None:
        """Commit one answered request: quota check, query row, key totals, the request id with its
        body hash and answer (``remember``), and a newly registered ``task``, all or nothing. Returns
        once committed; concurrent charges may share the commit, each still all or nothing."""
        self.db.write(lambda db: self._charge_in(db, record, remember, task))

    def _charge_in(
        self,
        db: Conn,
        record: QueryRecord,
        remember: tuple[str, Answer | None] | None,
        task: StoredTask | None,
    ) -> None:
        now = time.time()
        self._lock_key(db, record.key_id)
        self._check_quota(db, record)
        if task is not None:
            self._insert_task(db, task, now)
        if remember is not None and record.request_id is not None:
            self.answers.remember(db, record.key_id, record.request_id, remember, now)
        db.execute(
            "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes,"
            " bytes, texts, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now,
                record.key_id,
                Endpoint(record.endpoint).value,  # the name as text on either engine
                record.task_id,
                record.request_id,
                record.images,
                record.batch_passes,
                record.bytes,
                record.texts,
                record.cost,
            ),
        )
        db.execute(
            "INSERT INTO key_usage (key_id, requests, images, cost) VALUES (?, 1, ?, ?)"
            " ON CONFLICT (key_id) DO UPDATE SET requests = key_usage.requests + 1,"
            " images = key_usage.images + excluded.images, cost = key_usage.cost + excluded.cost",
            (record.key_id, record.images, record.cost),
        )

    def _lock_key(self, db: Conn, key_id: str) -> None:
        """With many writers (PostgreSQL), lock the key's totals row before reading anything of the key:
        its charges on every replica then run one after the other, so a quota or a task count read here
        cannot change before this transaction commits. The row is made first if the key has none yet
        (rolled back with the charge if it is refused)."""
        if not self.dialect.locks_rows:
            return  # SQLite: BEGIN IMMEDIATE has one writer at a time already
        db.execute(
            "INSERT INTO key_usage (key_id, requests, images, cost) VALUES (?, 0, 0, 0)"
            " ON CONFLICT (key_id) DO NOTHING",
            (key_id,),
        )
        db.execute(f"SELECT images FROM key_usage WHERE key_id = ?{self.dialect.for_update}", (key_id,))

    def _check_quota(self, db: Conn, record: QueryRecord) -> None:
        if record.images == 0 and record.cost == 0:
            return
        refusal = quota_state(db, record.key_id, self.limits.quota_images).refusal(record.images, record.cost)
        if refusal is not None:
            raise refusal

    def _insert_task(self, db: Conn, task: StoredTask, now: float) -> None:
        if db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone():
            return
        count = db.execute("SELECT COUNT(*) FROM tasks WHERE key_id = ?", (task.key_id,)).fetchone()[0]
        if count >= self.limits.max_tasks_per_key:
            raise TaskLimitError(self.limits.max_tasks_per_key)
        db.execute(
            "INSERT INTO tasks (task_id, key_id, class_names, templates, created) VALUES (?, ?, ?, ?, ?)",
            (task.task_id, task.key_id, json.dumps(task.class_names), json.dumps(task.templates), now),
        )

    def recall(self, key_id: str, request_id: str) -> Remembered | None:
        """The request id's entry while inside its window; its answer only while inside the TTL."""
        return self.db.read(lambda db: self.answers.recall(db, key_id, request_id, time.time()))

    def prune(self) -> None:
        """Forget request ids past the window and answers past the TTL."""
        with self._transaction() as db:
            self.answers.prune(db, time.time())

    # -- rejections, heartbeat ---------------------------------------------------------------

    def add_rejections(self, counts: Mapping[RejectionKey, int]) -> None:
        """Add a batch of rejection counters in one transaction."""
        if not counts:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO rejection_counts (key_id, route, status, code, count) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key_id, route, status, code) DO UPDATE"
                " SET count = rejection_counts.count + excluded.count",
                # in one order on every replica: two flushes lock shared rows without a deadlock
                sorted((*key, count) for key, count in counts.items()),
            )

    def heartbeat(self) -> None:
        """A tiny committed write: proves (or disproves) that the ledger can commit."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('heartbeat', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (time.time(),),
            )

    # -- reads -----------------------------------------------------------------------------------

    def quota(self, key_id: str) -> QuotaState:
        """The key's quotas and totals as last committed (the charge checks them again, atomically)."""
        return self.db.read(lambda db: quota_state(db, key_id, self.limits.quota_images))

    def images_used(self, key_id: str) -> int:
        rows = self._read("SELECT images FROM key_usage WHERE key_id = ?", (key_id,))
        return int(rows[0][0]) if rows else 0

    def usage_by_endpoint(self, key_id: str) -> dict[str, dict[str, float]]:
        rows = self._read(
            "SELECT endpoint, COUNT(*), SUM(images), SUM(batch_passes), SUM(bytes), SUM(texts),"
            " SUM(cost) FROM queries WHERE key_id = ? GROUP BY endpoint ORDER BY endpoint",
            (key_id,),
        )
        # PostgreSQL sums BIGINTs as NUMERIC: the counts are made ints here, the cost a float
        return {
            row[0]: {
                name: (float if name == "cost" else int)(value)
                for name, value in zip(_COUNT_COLUMNS, row[1:], strict=True)
            }
            for row in rows
        }

    def rejections_by_status(self, key_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT status, SUM(count) FROM rejection_counts WHERE key_id = ? GROUP BY status", (key_id,)
        )
        return {str(status): int(count) for status, count in rows}

    def task_count(self, key_id: str) -> int:
        return int(self._read("SELECT COUNT(*) FROM tasks WHERE key_id = ?", (key_id,))[0][0])

    def load_task(self, task_id: str, key_id: str) -> StoredTask | None:
        rows = self._read(
            "SELECT class_names, templates FROM tasks WHERE task_id = ? AND key_id = ?", (task_id, key_id)
        )
        if not rows:
            return None
        return StoredTask(task_id, key_id, json.loads(rows[0][0]), json.loads(rows[0][1]))

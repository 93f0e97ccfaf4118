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

from server.ledger.answer_space import StoreSpace
from server.ledger.answers import Answer, AnswerStore, DuplicateRequestError, Remembered
from server.ledger.batch import ChargeBatch, QueryRecord, begin_batch, write_batch
from server.ledger.db import (
    CommitObserver,
    Conn,
    Database,
    LedgerUnavailableError,
    check_ledger_target,
    is_postgres_url,
)
from server.ledger.group_commit import GroupCommit
from server.ledger.keys import SqlKeyStore
from server.ledger.quota import QuotaExceededError, QuotaState, quota_state
from server.ledger.reports import SqlReports
from server.ledger.tasks import (
    StoredTask,
    TaskLimitError,
    TaskStoreUsage,
    insert_task,
    stored_access,
    task_store_usage,
)

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
    "TaskStoreUsage",
    "open_database",
]

_COUNT_COLUMNS = ("requests", "images", "batch_passes", "bytes", "texts", "cost")
RejectionKey = tuple[str, str, int, str]  # (key id or "unauthenticated", route template, status, code)
T = TypeVar("T")


@dataclass(frozen=True)
class LedgerLimits:
    quota_images: int | None = None
    max_tasks_per_key: int = 1000
    max_task_store_bytes_per_key: int = 16 * 2**20
    idempotency_window_s: float = 86_400.0
    replay_ttl_s: float = 900.0
    replay_store_bytes: int = 256 * 2**20
    # the fraction of the store one key's answers may take: beyond it, that key's own oldest are dropped
    replay_store_key_share: float = 0.25
    busy_timeout_s: float = 5.0
    pool_size: int = 8  # PostgreSQL: connections per server process
    # a leader whose last group shared its transaction waits this long for the writers on their way
    # back (PostgreSQL's commit_delay, in spirit): groups of 8 instead of 4 with 8 writers, 1.2-1.5x the
    # charges/s (bench/results/ledger_writers.md); a lone writer never waits
    group_gather_s: float = 0.0002


# A charge's refusals of itself: rolled back alone, never a failure of the ledger.
_OWN_ERRORS = (QuotaExceededError, TaskLimitError, DuplicateRequestError)


def open_database(target: Path | str, limits: LedgerLimits) -> Database:
    """The engine ``target`` names: a ``postgresql://`` URL, else a SQLite file."""
    check_ledger_target(target)
    if is_postgres_url(target):
        from server.ledger.postgres import PostgresDatabase  # psycopg: only for a PostgreSQL ledger

        return PostgresDatabase(str(target), limits.busy_timeout_s, limits.pool_size)
    from server.ledger.sqlite import SqliteDatabase

    return SqliteDatabase(Path(target), limits.busy_timeout_s)


class Ledger:
    """Thread-safe; every charge is its own all-or-nothing unit. ``target`` is a SQLite file or a
    ``postgresql://`` URL. ``keys`` and ``reports`` are its ``KeyStore`` and ``UsageReports``
    (``server.ledger.interface``)."""

    def __init__(
        self, target: Path | str, limits: LedgerLimits | None = None, on_commit: CommitObserver | None = None
    ) -> None:
        self.target, self.limits = target, limits or LedgerLimits()
        self.db = open_database(target, self.limits)
        self.dialect = self.db.dialect
        # concurrent charges share one transaction on either engine; with many writers (PostgreSQL)
        # it first locks the keys' totals rows, in one order on every replica
        self.group: GroupCommit[ChargeBatch] = GroupCommit(
            lambda: self.db.transaction(pipelined=True),
            _OWN_ERRORS,
            lambda db, key_ids: begin_batch(db, self.dialect, key_ids, self.limits.quota_images),
            write_batch,
            on_commit,
            gather_s=self.limits.group_gather_s,
        )
        limits = self.limits
        store_bytes = limits.replay_store_bytes
        space = StoreSpace(self.dialect, store_bytes, int(store_bytes * limits.replay_store_key_share))
        self.answers = AnswerStore(self.dialect, limits.idempotency_window_s, limits.replay_ttl_s, space)
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
        self.group.run(lambda db, batch: self._charge_in(db, batch, record, remember, task), record.key_id)

    def _charge_in(
        self,
        db: Conn,
        batch: ChargeBatch,
        record: QueryRecord,
        remember: tuple[str, Answer | None] | None,
        task: StoredTask | None,
    ) -> None:
        """One charge inside a shared transaction (``server.ledger.batch``): refused before it adds
        anything to the batch, and its own statements rolled back with it."""
        now = time.time()
        batch.check(record)
        if task is not None:
            limits = self.limits
            insert_task(db, task, now, limits.max_tasks_per_key, limits.max_task_store_bytes_per_key)
        if remember is not None and record.request_id is not None:
            self.answers.remember(db, record.key_id, record.request_id, remember, now)
        batch.add(record, now)

    def recall(self, key_id: str, request_id: str) -> Remembered | None:
        """The request id's entry while inside its window; its answer only while inside the TTL."""
        return self.db.read(lambda db: self.answers.recall(db, key_id, request_id, time.time()))

    def prune(self) -> int:
        """Forget request ids past the window and answers past the TTL, in short transactions of a
        bounded number of rows each; returns the rows changed."""
        return self.answers.prune(self._transaction, time.time())

    def stored_answer_bytes(self) -> int:
        """The bytes of the answers stored for replays (a running figure kept with every change)."""
        return self.db.read(self.answers.stored_bytes)

    def key_stored_answer_bytes(self, key_id: str) -> int:
        """The bytes of one key's stored answers (its running figure), at most its share of the store."""
        return self.db.read(lambda db: self.answers.space.key_stored_bytes(db, key_id))

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

    def task_store_usage(self, key_id: str) -> TaskStoreUsage:
        """How many tasks ``key_id`` keeps and their bytes (``server.ledger.tasks``)."""
        return self.db.read(lambda db: task_store_usage(db, key_id))

    def load_task(self, task_id: str, key_id: str) -> StoredTask | None:
        rows = self._read(
            "SELECT class_names, templates, access FROM tasks WHERE task_id = ? AND key_id = ?",
            (task_id, key_id),
        )
        if not rows:
            return None
        names, templates, access = rows[0]
        return StoredTask(task_id, key_id, json.loads(names), json.loads(templates), stored_access(access))

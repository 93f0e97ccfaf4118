"""The ledger on a SQLite file (WAL, synchronous=FULL): one writing connection behind one lock (the
ledger's charges share its commits, ``server.ledger.group_commit``), and a second connection for reads
behind its own lock, so a request's reads never wait for another request's commit and fsync: with WAL a
reader sees every transaction committed before it began."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from server.ledger.db import Conn, Dialect, LedgerUnavailableError
from server.ledger.schema import migrate

__all__ = ["SQLITE", "SqliteDatabase"]

T = TypeVar("T")

SQLITE = Dialect(
    name="sqlite",
    for_update="",
    skip_locked="",
    period_start="CAST(ts / {p} AS INTEGER) * {p}",  # ts is positive, so CAST truncates to the floor
    locks_rows=False,
)


class SqliteDatabase:
    dialect = SQLITE

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.healthy = True
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        migrate(self._db)
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._reader.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._closed = True
            self._db.close()
            self._reader.close()

    @contextmanager
    def transaction(self, pipelined: bool = False) -> Iterator[Conn]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; any database failure is LedgerUnavailableError.
        ``pipelined`` changes nothing here: each statement runs at once."""
        with self._lock:
            if self._closed:
                raise LedgerUnavailableError("the ledger is closed (the server is shutting down)")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self.healthy = False
                raise LedgerUnavailableError(f"cannot open a ledger transaction: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self.healthy = False
                raise LedgerUnavailableError(f"the ledger cannot commit: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            self.healthy = True

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction left to roll back

    def read(self, read: Callable[[Conn], T]) -> T:
        with self._read_lock:
            if self._closed:
                raise LedgerUnavailableError("the ledger is closed (the server is shutting down)")
            try:
                return read(self._reader)
            except sqlite3.Error as exc:
                raise LedgerUnavailableError(f"cannot read the ledger: {exc}") from exc

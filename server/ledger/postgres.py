"""The ledger on PostgreSQL (psycopg 3, ``pip install blackvip-sim[postgres]``): a pool of connections,
each charge its own transaction, so replicas (and the threads of one replica) commit side by side.

A charge first locks its key's totals row (``server.ledger``), which serialises the charges of one key
across every replica, so its quota is checked against totals no one else is changing; charges of other
keys do not wait. ``lock_timeout`` bounds that wait by ``--ledger-busy-timeout-s``: past it the
request gets 503 ``ledger_unavailable``, never a hang. PostgreSQL batches concurrent commits' WAL
flushes itself, so no group commit is needed here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from server.ledger.db import (
    CommitObserver,
    Conn,
    Cursor,
    Dialect,
    LedgerUnavailableError,
    Write,
    redact_url,
)
from server.ledger.schema_pg import migrate_postgres

__all__ = ["POSTGRES", "PostgresDatabase"]

log = logging.getLogger(__name__)

T = TypeVar("T")

POSTGRES = Dialect(
    name="postgresql",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    period_start="FLOOR(ts / {p}) * {p}",
    locks_rows=True,
)


@lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """The ledger's ``?`` placeholders as psycopg's ``%s`` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgConn:
    """A psycopg connection that takes the ledger's ``?`` SQL."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = (), /) -> Cursor:
        return self._conn.execute(_placeholders(sql), tuple(params))

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [tuple(p) for p in params])


class PostgresDatabase:
    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        busy_timeout_s: float,
        pool_size: int = 8,
        on_commit: CommitObserver | None = None,
    ) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # the server extra alone has no PostgreSQL client
            raise LedgerUnavailableError(
                "a postgresql:// ledger needs psycopg: pip install 'blackvip-sim[postgres]'"
            ) from exc
        self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self.url, self.healthy = url, True
        self._on_commit = on_commit
        self._timeout_s = busy_timeout_s
        lock_ms = max(1, int(busy_timeout_s * 1000))

        def configure(conn: Any) -> None:
            conn.execute(f"SET lock_timeout = {lock_ms}")

        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max(1, pool_size),
                kwargs={"autocommit": True, "connect_timeout": max(1, int(busy_timeout_s))},
                configure=configure,
                open=False,
                name="blackvip-ledger",
            )
            self._pool.open(wait=True, timeout=max(busy_timeout_s, 5.0))
        except Exception as exc:  # PoolTimeout: the server cannot be reached or refuses us
            raise LedgerUnavailableError(f"cannot connect to {redact_url(url)}: {exc}") from exc
        try:
            with self._connection() as conn, conn.transaction():
                migrate_postgres(conn)
        except self._errors as exc:
            self._pool.close()
            raise LedgerUnavailableError(f"cannot migrate the ledger {redact_url(url)}: {exc}") from exc
        except BaseException:  # SchemaError: a newer schema
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        with self._connection() as conn:
            try:
                with conn.transaction():
                    yield _PgConn(conn)
            except self._errors as exc:
                self.healthy = False
                raise LedgerUnavailableError(f"the ledger cannot commit: {exc}") from exc
        self.healthy = True

    def write(self, write: Write) -> None:
        started = time.perf_counter()
        committed = True  # a charge that refuses itself (over quota) is no failure of the ledger
        try:
            with self.transaction() as db:
                write(db)
        except LedgerUnavailableError:
            committed = False
            raise
        finally:
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, 1, committed)

    def read(self, read: Callable[[Conn], T]) -> T:
        with self._connection() as conn:
            try:
                return read(_PgConn(conn))
            except self._errors as exc:
                raise LedgerUnavailableError(f"cannot read the ledger: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            context = self._pool.connection(timeout=self._timeout_s)
            conn = context.__enter__()
        except Exception as exc:  # PoolTimeout, PoolClosed, a server that went away
            self.healthy = False
            raise LedgerUnavailableError(f"no ledger connection ({redact_url(self.url)}): {exc}") from exc
        try:
            yield conn
        except BaseException as exc:
            context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            context.__exit__(None, None, None)

"""The ledger on PostgreSQL (psycopg 3, ``pip install blackvip-sim[postgres]``): a pool of connections,
so replicas commit side by side; within one replica, concurrent charges share a transaction (group
commit, ``server.ledger.group_commit``), sent in pipeline mode.

A transaction of charges first locks its keys' totals rows (``server.ledger``), which serialises the
charges of one key across every replica, so its quota is checked against totals no one else is
changing; charges of other keys do not wait. ``lock_timeout`` bounds that wait by
``--ledger-busy-timeout-s``: past it the request gets 503 ``ledger_unavailable``, never a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from server.ledger.db import Conn, Cursor, Dialect, LedgerUnavailableError, redact_url
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

    def __init__(self, conn: Any, pipelined: bool = False) -> None:
        self._conn, self._pipelined = conn, pipelined

    def execute(self, sql: str, params: Any = (), /) -> Cursor:
        return self._conn.execute(_placeholders(sql), tuple(params))

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> None:
        if self._pipelined:  # queued one by one: psycopg's executemany would wait for its results here
            for row in params:
                self._conn.execute(_placeholders(sql), tuple(row))
            return
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [tuple(p) for p in params])


def _roll_back(conn: Any, pipeline: Any) -> None:
    try:
        pipeline.sync()  # an aborted pipeline takes commands again after its sync
    except Exception:  # the error that brought us here is the one to report
        pass
    try:
        conn.execute("ROLLBACK")
        pipeline.sync()
    except Exception:  # the connection is broken: the pool discards it
        pass


class PostgresDatabase:
    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        busy_timeout_s: float,
        pool_size: int = 8,
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
        self._timeout_s = busy_timeout_s
        lock_ms = max(1, int(busy_timeout_s * 1000))

        def configure(conn: Any) -> None:
            conn.execute(f"SET lock_timeout = {lock_ms}")

        try:
            self._pool = ConnectionPool(
                url,
                min_size=1,
                max_size=max(1, pool_size),
                # UTF8 whatever the database's encoding: on a SQL_ASCII database (initdb in a C locale)
                # psycopg would hand text back as bytes, and a key id as bytes matches no key
                kwargs={
                    "autocommit": True,
                    "connect_timeout": max(1, int(busy_timeout_s)),
                    "client_encoding": "UTF8",
                },
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
    def transaction(self, pipelined: bool = False) -> Iterator[Conn]:
        with self._connection() as conn:
            try:
                if pipelined:
                    with self._pipelined(conn) as db:
                        yield db
                else:
                    with conn.transaction():
                        yield _PgConn(conn)
            except self._errors as exc:
                self.healthy = False
                raise LedgerUnavailableError(f"the ledger cannot commit: {exc}") from exc
        self.healthy = True

    @staticmethod
    @contextmanager
    def _pipelined(conn: Any) -> Iterator[Conn]:
        """BEGIN, the caller's statements and COMMIT sent in one pipeline: a statement whose result is
        read waits for what was sent before it; COMMIT's answer is the only other wait. (psycopg's own
        transaction block waits at its start and end as well.) On any failure the transaction is rolled
        back before the connection goes back to the pool."""
        with conn.pipeline() as pipeline:
            try:
                conn.execute("BEGIN")
                yield _PgConn(conn, pipelined=True)
                conn.execute("COMMIT")
                pipeline.sync()
            except BaseException:
                _roll_back(conn, pipeline)
                raise

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

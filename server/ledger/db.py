"""What the ledger needs of a database engine, so one ledger (``server.ledger``) runs on SQLite (one
server process, the default) or on PostgreSQL (replicas sharing one database).

The ledger's SQL is written once, with ``?`` placeholders and the syntax both engines share; a
``Dialect`` holds the few phrases that differ. On both, concurrent charges of one process share a
transaction (``server.ledger.group_commit``). The engines differ in how writers are kept apart: SQLite
has one writer at a time (BEGIN IMMEDIATE); PostgreSQL has many (replicas), so a transaction first locks
its keys' totals rows (``server.ledger.batch``) and other keys' charges commit side by side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "CommitObserver",
    "Conn",
    "Cursor",
    "Database",
    "Dialect",
    "LedgerUnavailableError",
    "check_ledger_target",
    "is_postgres_url",
    "redact_url",
]

T = TypeVar("T")


class LedgerUnavailableError(RuntimeError):
    """The ledger cannot commit or be read (disk full, read-only, locked, closed, unreachable)."""


def is_postgres_url(target: object) -> bool:
    """A ``--ledger`` value naming a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def check_ledger_target(target: object) -> None:
    """Raise ``LedgerUnavailableError`` for a value that means PostgreSQL but is no usable URL (a typo
    such as ``postgresql:/host/db``, or a URL made a ``Path``, which folds its ``//``): opened as a SQLite
    file it would silently start an empty ledger in a folder named ``postgresql:``."""
    text = str(target)
    if not text.lower().startswith(("postgresql:", "postgres:")):
        return
    if isinstance(target, str) and is_postgres_url(target):
        shown = redact_url(target)
        if "," in urlsplit(target).netloc:
            raise LedgerUnavailableError(
                f"the ledger URL {shown!r} names several hosts: give one (a primary's address, or a proxy's)"
            )
        try:
            urlsplit(target).port  # noqa: B018 (a port that is no number raises here)
            return
        except ValueError as exc:
            raise LedgerUnavailableError(f"the ledger URL {shown!r} is not valid: {exc}") from None
    shown = re.sub(r":[^:@/]*@", ":***@", text)  # a password in what was meant as a URL
    raise LedgerUnavailableError(
        f"the ledger {shown!r} starts like a PostgreSQL URL but is not one: write postgresql://USER@HOST:PORT/DB"
        + (" (given as a file path, whose // became /)" if not isinstance(target, str) else "")
    )


def redact_url(url: str) -> str:
    """The URL without its password (``user:PASSWORD@`` or libpq's ``?password=``), for logs and
    messages. Works on the text, so a URL too broken to parse (a bad port) is redacted too."""
    url = re.sub(r"^([a-zA-Z][\w+.-]*://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


@dataclass(frozen=True)
class Dialect:
    name: str
    # appended to a SELECT that reads a row it will change: holds other replicas' writers off it
    for_update: str
    # appended to a SELECT of rows to tidy (stored answers to drop): rows another writer holds are
    # left for later instead of waited for, so tidying never deadlocks with a charge
    skip_locked: str
    # a timestamp column's period start: ``{p}`` is the placeholder of the period in seconds
    period_start: str
    # a group of charges locks its keys' totals rows first (many writers); SQLite's one writer needs none
    locks_rows: bool


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """The part of a DB-API connection the ledger uses, with ``?`` placeholders on either engine."""

    def execute(self, sql: str, params: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...


# (seconds, writes in the transaction, whether it committed): for metrics.
CommitObserver = Callable[[float, int, bool], None]


class Database(Protocol):
    dialect: Dialect
    healthy: bool  # False after a transaction failed, True again after one commits

    def transaction(self, pipelined: bool = False) -> AbstractContextManager[Conn]:
        """BEGIN ... COMMIT; any database failure is LedgerUnavailableError; any other exception rolls
        back and propagates unchanged. ``pipelined``: statements are sent without waiting for their
        results (PostgreSQL's pipeline mode), so a caller reads results with ``fetchall``/``fetchone``
        (which wait for everything sent before), never ``rowcount``; SQLite ignores it."""
        ...

    def read(self, read: Callable[[Conn], T]) -> T:
        """Run ``read`` on a connection that sees every committed transaction."""
        ...

    def close(self) -> None: ...

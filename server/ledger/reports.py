"""The ledger's usage reports, SQLite or PostgreSQL (``UsageReports`` of ``server.ledger.interface``):
charged requests row by row for an export, and one key's sums per hour or day for ``/v1/usage/periods``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from server.ledger.db import Dialect
from server.ledger.interface import PeriodTotals, QueryRow

__all__ = ["SqlReports", "as_utc"]

Read = Callable[[str, tuple], list[tuple]]

# Rows are read in pages by primary key, so an export of any size holds the read lock only briefly
# and never keeps a page's worth of memory more than once.
_PAGE_ROWS = 5000
_ROW_COLUMNS = "id, ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes, texts, cost"


def _window(since: float | None, until: float | None, key_id: str | None) -> tuple[str, tuple]:
    clauses, params = [], []
    for clause, value in (("ts >= ?", since), ("ts < ?", until), ("key_id = ?", key_id)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses) or "TRUE", tuple(params)


class SqlReports:
    def __init__(self, read: Read, dialect: Dialect) -> None:
        self._read, self._dialect = read, dialect

    def rows(self, since: float | None, until: float | None, key_id: str | None) -> Iterator[QueryRow]:
        where, params = _window(since, until, key_id)
        last_id = 0
        while True:
            page = self._read(
                f"SELECT {_ROW_COLUMNS} FROM queries WHERE id > ? AND {where} ORDER BY id LIMIT {_PAGE_ROWS}",
                (last_id, *params),
            )
            for row in page:
                yield QueryRow(*row[1:])
            if len(page) < _PAGE_ROWS:
                return
            last_id = page[-1][0]

    def by_period(
        self, key_id: str, period_s: int, since: float | None, until: float | None
    ) -> list[PeriodTotals]:
        where, params = _window(since, until, key_id)
        start = self._dialect.period_start.format(p="?")
        rows = self._read(
            f"SELECT {start} AS start, COUNT(*), SUM(images), SUM(cost) FROM queries"
            f" WHERE {where} GROUP BY start ORDER BY start",
            (period_s, period_s, *params),
        )
        return [PeriodTotals(float(t), int(n), int(images), float(cost)) for t, n, images, cost in rows]


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a time without a zone is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

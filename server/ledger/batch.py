"""What the charges of one shared transaction (``server.ledger.group_commit``) gather before its
commit, and the few statements that write it: whatever their number, a group reads its keys' quotas
and totals in one statement at its start and writes its query rows and its keys' totals in one
statement each at its end (PostgreSQL adds one at the start: the locks below).

At the start every key of the group gets a totals row if it has none, and on PostgreSQL those rows are
locked, sorted, in one statement that makes the missing rows and locks the others as it goes: each key's
charges on every replica then run one after the other, so the quotas read here cannot change before this
transaction commits, and two replicas' groups never wait for each other in a circle. (Locking the rows
that exist first and making the new ones after broke that order: a group holding ``k2`` waited for a
``k1`` another replica had just made, while that replica waited for ``k2``: PostgreSQL's deadlock.)
Each accepted charge then adds its images and cost to the figures read, so the next charge of the same
key in the group is checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import chain

from server.ledger.db import Conn, Dialect
from server.ledger.quota import QuotaState, quota_states
from shared.protocol import Endpoint

__all__ = ["ChargeBatch", "QueryRecord", "begin_batch", "write_batch"]


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


@dataclass
class ChargeBatch:
    quotas: dict[str, QuotaState]  # key -> its quotas and totals as read at the start
    queries: list[tuple] = field(default_factory=list)  # rows of the queries table
    added: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # key -> (requests, images, cost)

    def check(self, record: QueryRecord) -> None:
        """Raise ``QuotaExceededError`` if ``record`` would cross its key's quota, counting what this
        batch has added to the key already."""
        quota = self.quotas[record.key_id]
        unlimited = quota.quota_images is None and quota.quota_cost is None
        if unlimited or (record.images == 0 and record.cost == 0):
            return
        _, images, cost = self.added.get(record.key_id, _NOTHING)
        if images or cost:
            quota = replace(quota, images_used=quota.images_used + images, cost_used=quota.cost_used + cost)
        refusal = quota.refusal(record.images, record.cost)
        if refusal is not None:
            raise refusal

    def add(self, record: QueryRecord, now: float) -> None:
        """An accepted charge: its query row, and its key's totals."""
        self.queries.append(
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
            )
        )
        requests, images, cost = self.added.get(record.key_id, _NOTHING)
        self.added[record.key_id] = (requests + 1, images + record.images, cost + record.cost)


_NOTHING = (0, 0, 0.0)


def begin_batch(db: Conn, dialect: Dialect, key_ids: list[str], default_images: int | None) -> ChargeBatch:
    """``key_ids`` sorted: the order in which their rows are made or locked. A key's first charge makes
    its totals row."""
    if not key_ids:
        return ChargeBatch({})
    if dialect.locks_rows:
        # one pass in sorted order: a missing row is inserted (and so held), an existing one locked
        # ("all rows will be locked when the ON CONFLICT DO UPDATE action is taken", WHERE false or not)
        db.execute(
            "INSERT INTO key_usage (key_id, requests, images, cost) VALUES"
            f" {', '.join(['(?, 0, 0, 0)'] * len(key_ids))}"
            " ON CONFLICT (key_id) DO UPDATE SET requests = key_usage.requests WHERE FALSE",
            tuple(key_ids),
        )
        return ChargeBatch(quota_states(db, key_ids, default_images))
    quotas = quota_states(db, key_ids, default_images)  # one writer at a time (SQLite): nothing to lock
    new = [key_id for key_id in key_ids if key_id not in quotas]
    if new:
        db.executemany(
            "INSERT INTO key_usage (key_id, requests, images, cost) VALUES (?, 0, 0, 0)"
            " ON CONFLICT (key_id) DO NOTHING",
            [(key_id,) for key_id in new],
        )
        quotas.update(quota_states(db, new, default_images))
    return ChargeBatch(quotas)


def write_batch(db: Conn, batch: ChargeBatch) -> None:
    for start in range(0, len(batch.queries), _ROWS_PER_INSERT):
        rows = batch.queries[start : start + _ROWS_PER_INSERT]
        db.execute(
            "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes,"
            f" bytes, texts, cost) VALUES {', '.join([_ROW] * len(rows))}",
            tuple(chain.from_iterable(rows)),
        )
    if batch.added:  # every key's totals in one statement
        added = " UNION ALL ".join([_ADDED] * len(batch.added))
        db.execute(
            "UPDATE key_usage SET requests = key_usage.requests + a.requests,"
            " images = key_usage.images + a.images, cost = key_usage.cost + a.cost"
            f" FROM ({added}) AS a WHERE key_usage.key_id = a.key_id",
            tuple(chain.from_iterable((key_id, *added) for key_id, added in batch.added.items())),
        )


# One statement for many query rows (10 values a row: SQLite takes up to 32,766 in a statement).
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_INSERT = 256
# One key's additions, typed: PostgreSQL cannot tell a parameter's type inside a UNION.
_ADDED = (
    "SELECT CAST(? AS TEXT) AS key_id, CAST(? AS BIGINT) AS requests, CAST(? AS BIGINT) AS images,"
    " CAST(? AS DOUBLE PRECISION) AS cost"
)

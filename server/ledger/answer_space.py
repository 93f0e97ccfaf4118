"""The room the stored answers take (``server.ledger.answers``), shared fairly between keys: a running byte
figure for the whole store (``answer_store``, one row) and one per key (``answer_store_keys``), each
changed in the transaction that changes an answer, and the rules that drop answers to fit them.

Why a key's share: with one store and one queue of oldest answers, a key sending many answers evicted
every other key's, and those keys' retries got 410 ``replay_expired``. Now:

1. one key's answers take at most ``key_bytes`` (``--replay-store-key-share`` of the store): a charge
   that takes its key over drops that key's own oldest answers, nobody else's;
2. when the whole store is over ``store_bytes`` (many keys, each within its share), answers are dropped
   from the key holding the most bytes, oldest first, up to ``_EVICT_ROWS`` at a time and then the
   largest key is found again. So no key is dropped from while a key holding more is left alone, and a
   key under its share loses nothing while any key is over its share (the largest one is).

Every statement costs the same however many answers and keys are stored: a key's oldest answers come from
the index of rows that hold an answer by ``(key_id, created)``, the largest key from the index on the
per-key figure. Dropped answers keep their request ids: a retry still refuses a second charge.

Locks, with replicas (PostgreSQL). The order: the keys' totals rows (``key_usage``, at the group's start,
sorted: ``server.ledger.batch``), then a charge's own keys' id rows and figure rows, and the store's row
(``answer_store``); other keys' figure rows and id rows are taken only while holding the store's row, and
only with ``SKIP LOCKED`` (``Dialect.skip_locked``), never waited for. So:

- a key's id rows and figure row are waited for only by a charge of that key, which holds its totals
  row: two charges of one key never hold them at once, and whoever else holds them holds the store's row;
- whoever holds the store's row waits for no other row: its own keys' rows are held by no other charge
  (the totals rows) and by no tidier (the store's row), and it skips everything else;
- the prune (``AnswerStore.prune``) takes the store's row first, holding nothing, then skips as above.

No two transactions wait for each other in a circle. What skipping costs: with replicas, when the largest
key's figure row is held by another writer, this charge drops nothing and the store may exceed its size
by what concurrent charges add, until the next charge; the prune leaves a held key's rows for its next
round.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from server.ledger.db import Conn, Cursor, Dialect

__all__ = ["StoreSpace"]

_EVICT_ROWS = 64  # a key's oldest answers read at most in one statement

# Forgets a stored answer and keeps its request id (the id still refuses a second charge).
_DROP_ANSWER = (
    "UPDATE idempotency SET answer = NULL, media_type = NULL, answer_bytes = 0"
    " WHERE key_id = ? AND request_id = ?"
)
_ADD_TO_STORE = "UPDATE answer_store SET bytes = bytes + ? WHERE id = 0"
_ADD_TO_KEY = "UPDATE answer_store_keys SET bytes = bytes + ? WHERE key_id = ?"
_UPSERT_KEY = (
    "INSERT INTO answer_store_keys (key_id, bytes) VALUES (?, ?) ON CONFLICT (key_id)"
    " DO UPDATE SET bytes = answer_store_keys.bytes + excluded.bytes RETURNING bytes"
)


@dataclass(frozen=True)
class StoreSpace:
    dialect: Dialect
    store_bytes: int  # all the stored answers at most
    key_bytes: int  # one key's stored answers at most (its share of the store)

    def add(self, db: Conn, key_id: str, size: int) -> tuple[Cursor, Cursor]:
        """Add a new answer's ``size`` to its key's figure and the store's, in that order (the lock
        order); returns their cursors (``RETURNING bytes``) unread: on PostgreSQL the statements go out
        with the charge's insert, one round trip."""
        return (
            db.execute(_UPSERT_KEY, (key_id, size)),
            db.execute(_ADD_TO_STORE + " RETURNING bytes", (size,)),
        )

    def release(self, db: Conn, key_id: str, size: int) -> None:
        """Take an answer's bytes out of both figures (its row was taken over or dropped)."""
        db.execute(_ADD_TO_KEY, (-size, key_id))
        db.execute(_ADD_TO_STORE, (-size,))

    def fit(self, db: Conn, key_id: str, key_total: int, total: int) -> None:
        """After a charge of ``key_id`` added an answer (the figures now ``key_total`` and ``total``):
        the key's own oldest answers dropped beyond its share, then the largest keys' beyond the store."""
        if key_total > self.key_bytes:
            total -= self._drop_oldest(db, key_id, key_total - self.key_bytes)
        while total > self.store_bytes:
            largest = self._largest_key(db)
            if largest is None:
                return
            freed = self._drop_oldest(db, largest, total - self.store_bytes, one_read=True)
            if not freed:
                return
            total -= freed

    def _largest_key(self, db: Conn) -> str | None:
        """The key holding the most bytes, its figure row locked; None if another writer holds it."""
        rows = db.execute(
            "SELECT key_id FROM answer_store_keys WHERE bytes > 0 ORDER BY bytes DESC LIMIT 1"
        ).fetchall()
        if not rows or not self.dialect.locks_rows:
            return rows[0][0] if rows else None
        held = db.execute(
            "SELECT key_id FROM answer_store_keys WHERE key_id = ?" + self.dialect.skip_locked, (rows[0][0],)
        ).fetchall()
        return held[0][0] if held else None

    def _drop_oldest(self, db: Conn, key_id: str, excess: int, one_read: bool = False) -> int:
        """Drop ``key_id``'s oldest answers until ``excess`` bytes are freed (``one_read``: from one read
        of ``_EVICT_ROWS`` rows at most); rows another writer holds are skipped. Returns the bytes freed."""
        freed = 0
        while freed < excess:
            # "answer_bytes > 0", the index's own condition (an answer of no bytes takes no room): the
            # index of every key's oldest answers (the TTL prune's) cannot serve it, walking other keys' rows
            rows = db.execute(
                "SELECT request_id, answer_bytes FROM idempotency WHERE key_id = ? AND answer_bytes > 0"
                f" ORDER BY created LIMIT {_EVICT_ROWS}{self.dialect.skip_locked}",
                (key_id,),
            ).fetchall()
            dropped = []
            for request_id, size in rows:
                dropped.append((key_id, request_id, int(size)))
                freed += int(size)
                if freed >= excess:
                    break
            if dropped:
                self.drop(db, dropped)
            if one_read or len(rows) < _EVICT_ROWS:
                break
        return freed

    def drop(self, db: Conn, rows: list[tuple[str, str, int]]) -> None:
        """Drop these answers (key, request id, bytes), their ids kept, and take their bytes out of the
        figures. The caller holds every row, and each key's figure row (its own, or tidying's lock)."""
        db.executemany(_DROP_ANSWER, [(key_id, request_id) for key_id, request_id, _ in rows])
        self._release_many(db, rows)

    def _release_many(self, db: Conn, rows: list[tuple[str, str, int]]) -> None:
        by_key: dict[str, int] = defaultdict(int)
        for key_id, _, size in rows:
            by_key[key_id] += size
        freed = {key_id: size for key_id, size in by_key.items() if size}
        if freed:
            db.executemany(_ADD_TO_KEY, [(-size, key_id) for key_id, size in sorted(freed.items())])
            db.execute(_ADD_TO_STORE, (-sum(freed.values()),))

    def forget(self, db: Conn, rows: list[tuple[str, str, int]]) -> None:
        """Delete these ids (past their window), and any answer they still hold from the figures."""
        db.executemany(
            "DELETE FROM idempotency WHERE key_id = ? AND request_id = ?",
            [(key_id, request_id) for key_id, request_id, _ in rows],
        )
        self._release_many(db, rows)

    def lock_store(self, db: Conn) -> None:
        """The store's row, first of the tidying's locks (see the module's doc)."""
        db.execute("SELECT bytes FROM answer_store WHERE id = 0" + self.dialect.for_update).fetchall()

    def held_keys(self, db: Conn, rows: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
        """The rows the tidying may change: those holding no answer, and those whose key's figure row it
        could lock now (a charge of that key holds it otherwise: left for the next round)."""
        keys = sorted({key_id for key_id, _, size in rows if size})
        if not keys or not self.dialect.locks_rows:
            return rows
        marks = ", ".join(["?"] * len(keys))
        held = db.execute(
            f"SELECT key_id FROM answer_store_keys WHERE key_id IN ({marks}) ORDER BY key_id"
            + self.dialect.skip_locked,
            tuple(keys),
        ).fetchall()
        mine = {row[0] for row in held}
        return [row for row in rows if not row[2] or row[0] in mine]

    def stored_bytes(self, db: Conn) -> int:
        """The stored answers' byte total, as the running figure has it."""
        return int(db.execute("SELECT bytes FROM answer_store WHERE id = 0").fetchall()[0][0])

    def key_stored_bytes(self, db: Conn, key_id: str) -> int:
        """One key's stored answers' bytes, as its running figure has it."""
        rows = db.execute("SELECT bytes FROM answer_store_keys WHERE key_id = ?", (key_id,)).fetchall()
        return int(rows[0][0]) if rows else 0

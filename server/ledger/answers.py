"""Request ids and their answers in the ledger (the ``idempotency`` table): remembered inside a
charge's transaction, recalled for a replay, the answers dropped oldest first beyond the store's size and
after their TTL, the ids after their window. Same SQL on both engines.

Every statement costs the same however many ids are stored: the stored answers' byte total is a running
figure (``answer_store``, one row) changed in the transaction that changes an answer, the oldest answers
are found through an index of the rows that hold one, and the expired rows through the index on
``created``. The prune runs off the charge path (the server's upkeep timer), ``PRUNE_BATCH_ROWS`` rows a
transaction.

Locks, with replicas (PostgreSQL): the tidying (eviction, prune) takes id rows of any key only while it
holds the total's row (the prune takes that row first), and skips id rows another writer holds instead
of waiting for them (``Dialect.skip_locked``); a charge waits otherwise only for its own keys' rows. So
whoever holds the total's row waits for no id row, and no two transactions wait for each other in a
circle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from server.ledger.db import Conn, Dialect

Transaction = Callable[[], AbstractContextManager[Conn]]

__all__ = ["PRUNE_BATCH_ROWS", "Answer", "AnswerStore", "DuplicateRequestError", "Remembered"]

PRUNE_BATCH_ROWS = 500  # rows one prune transaction forgets at most: the writer is never held long
_PRUNE_PAUSE_S = 0.002
_EVICT_ROWS = 64


@dataclass(frozen=True)
class Answer:
    content: bytes
    media_type: str


@dataclass(frozen=True)
class Remembered:
    """What the ledger knows of a request id: its body's hash and, while kept, its answer."""

    body_hash: str
    created: float
    answer: Answer | None


# Forgets a stored answer and keeps its request id (the id still refuses a second charge).
_DROP_ANSWER = (
    "UPDATE idempotency SET answer = NULL, media_type = NULL, answer_bytes = 0"
    " WHERE key_id = ? AND request_id = ?"
)
_ADD_TO_STORE = "UPDATE answer_store SET bytes = bytes + ? WHERE id = 0"
_INSERT_ID = (
    "INSERT INTO idempotency (body_hash, created, answer, media_type, answer_bytes, key_id, request_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class DuplicateRequestError(Exception):
    """The request id was charged meanwhile (a concurrent retry, perhaps on another replica)."""


class AnswerStore:
    def __init__(self, dialect: Dialect, window_s: float, ttl_s: float, store_bytes: int) -> None:
        self.dialect, self.window_s, self.ttl_s, self.store_bytes = dialect, window_s, ttl_s, store_bytes

    def remember(
        self,
        db: Conn,
        key_id: str,
        request_id: str,
        remember: tuple[str, Answer | None],
        now: float,
    ) -> None:
        body_hash, answer = remember
        if answer is not None and len(answer.content) > self.store_bytes:
            answer = None  # larger than the whole store: remember the id, not the answer
        values = (body_hash, now, *_stored(answer))
        inserted = db.execute(
            _INSERT_ID + " ON CONFLICT (key_id, request_id) DO NOTHING RETURNING created",
            (*values, key_id, request_id),
        )
        size = values[-1]
        # sent before the insert's answer is read: on PostgreSQL both take one round trip
        added = db.execute(_ADD_TO_STORE + " RETURNING bytes", (size,)) if size else None
        is_new = bool(inserted.fetchall())
        total = int(added.fetchall()[0][0]) if added is not None else 0  # read out before any refusal
        if not is_new:
            self._reuse_expired(db, key_id, request_id, values)
        if total > self.store_bytes:
            self._evict(db, self.stored_bytes(db) - self.store_bytes)

    def _reuse_expired(self, db: Conn, key_id: str, request_id: str, values: tuple) -> None:
        """The id is stored already: refuse it inside its window, else (the prune has not reached it
        yet) take its row over, and its stored answer's bytes out of the total."""
        now = values[1]
        rows = db.execute(
            "SELECT created, answer_bytes FROM idempotency WHERE key_id = ? AND request_id = ?"
            + self.dialect.for_update,
            (key_id, request_id),
        ).fetchall()
        if rows and rows[0][0] >= now - self.window_s:
            raise DuplicateRequestError(request_id)
        if not rows:  # forgotten by the prune meanwhile: the id is free
            db.execute(_INSERT_ID, (*values, key_id, request_id))
            return
        db.execute(
            "UPDATE idempotency SET body_hash = ?, created = ?, answer = ?, media_type = ?, answer_bytes = ?"
            " WHERE key_id = ? AND request_id = ?",
            (*values, key_id, request_id),
        )
        if rows[0][1]:
            db.execute(_ADD_TO_STORE, (-int(rows[0][1]),))

    def _evict(self, db: Conn, excess: int) -> None:
        """Drop the oldest stored answers until they fit ``replay_store_bytes`` (ids are kept). With
        replicas, answers another charge is dropping at this moment are skipped, not waited for: the
        store may exceed its cap by what concurrent charges add, until the next charge."""
        while excess > 0:
            rows = db.execute(
                "SELECT key_id, request_id, answer_bytes FROM idempotency WHERE answer IS NOT NULL"
                f" ORDER BY created LIMIT {_EVICT_ROWS}{self.dialect.skip_locked}"
            ).fetchall()
            if not rows:
                return
            dropped = []
            for key_id, request_id, size in rows:
                dropped.append((key_id, request_id, int(size)))
                excess -= int(size)
                if excess <= 0:
                    break
            self._drop_answers(db, dropped)

    def _drop_answers(self, db: Conn, rows: list[tuple[str, str, int]]) -> None:
        db.executemany(_DROP_ANSWER, [(key_id, request_id) for key_id, request_id, _ in rows])
        db.execute(_ADD_TO_STORE, (-sum(size for _, _, size in rows),))

    def recall(self, db: Conn, key_id: str, request_id: str, now: float) -> Remembered | None:
        rows = db.execute(
            "SELECT body_hash, created, answer, media_type FROM idempotency"
            " WHERE key_id = ? AND request_id = ? AND created >= ?",
            (key_id, request_id, now - self.window_s),
        ).fetchall()
        if not rows:
            return None
        body_hash, created, content, media_type = rows[0]
        fresh = content is not None and created >= now - self.ttl_s
        return Remembered(body_hash, created, Answer(bytes(content), media_type) if fresh else None)

    def prune(self, transaction: Transaction, now: float, max_batches: int = 100) -> int:
        """Forget ids past the window and answers past the TTL, ``PRUNE_BATCH_ROWS`` rows a transaction
        (at most ``max_batches``: the next prune goes on); returns the rows changed."""
        changed = 0
        for step in (self._forget_ids, self._drop_expired_answers):
            for _ in range(max_batches):
                with transaction() as db:
                    count = step(db, now)
                changed += count
                if count < PRUNE_BATCH_ROWS:
                    break
                time.sleep(_PRUNE_PAUSE_S)  # the writer's lock is not fair: let waiting charges have it
        return changed

    def _forget_ids(self, db: Conn, now: float) -> int:
        rows = self._oldest(db, "created < ?", now - self.window_s)
        if not rows:
            return 0
        db.executemany(
            "DELETE FROM idempotency WHERE key_id = ? AND request_id = ?",
            [(key_id, request_id) for key_id, request_id, _ in rows],
        )
        freed = sum(size for _, _, size in rows)
        if freed:  # an answer the TTL prune has not dropped yet (the TTL may equal the window)
            db.execute(_ADD_TO_STORE, (-freed,))
        return len(rows)

    def _drop_expired_answers(self, db: Conn, now: float) -> int:
        rows = self._oldest(db, "answer IS NOT NULL AND created < ?", now - self.ttl_s)
        if rows:
            self._drop_answers(db, rows)
        return len(rows)

    def _oldest(self, db: Conn, where: str, before: float) -> list[tuple[str, str, int]]:
        # the total's row first, then the rows (skipping those a charge holds): see the module's doc
        db.execute("SELECT bytes FROM answer_store WHERE id = 0" + self.dialect.for_update).fetchall()
        rows = db.execute(
            f"SELECT key_id, request_id, answer_bytes FROM idempotency WHERE {where}"
            f" ORDER BY created LIMIT {PRUNE_BATCH_ROWS}{self.dialect.skip_locked}",
            (before,),
        ).fetchall()
        return [(key_id, request_id, int(size)) for key_id, request_id, size in rows]

    def stored_bytes(self, db: Conn) -> int:
        """The stored answers' byte total, as the running figure has it."""
        return int(db.execute("SELECT bytes FROM answer_store WHERE id = 0").fetchall()[0][0])


def _stored(answer: Answer | None) -> tuple[bytes | None, str | None, int]:
    """An answer's (content, media type, bytes) columns."""
    if answer is None:
        return None, None, 0
    return answer.content, answer.media_type, len(answer.content)

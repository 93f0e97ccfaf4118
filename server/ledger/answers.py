"""Request ids and their answers in the ledger (the ``idempotency`` table): remembered inside a
charge's transaction, recalled for a replay, the answers dropped beyond their key's share of the store,
beyond the store's size and after their TTL, the ids after their window. Same SQL on both engines.

Every statement costs the same however many ids are stored: the room the answers take is kept as running
figures (the store's and each key's, ``server.ledger.answer_space``, which also holds the rules that drop
answers to fit) changed in the transaction that changes an answer, the answers to drop are found through
indexes of the rows that hold one, and the expired rows through the index on ``created``. The prune runs
off the charge path (the server's upkeep timer), ``PRUNE_BATCH_ROWS`` rows a transaction.

Locks, with replicas (PostgreSQL): the order is in ``server.ledger.answer_space``'s doc. In short, a
charge waits only for its own keys' rows and the store's row; the tidying (eviction, prune) takes other
keys' figure and id rows only while it holds the store's row (the prune takes that row first), and skips
rows another writer holds instead of waiting for them (``Dialect.skip_locked``). So whoever holds the
store's row waits for no other row, and no two transactions wait for each other in a circle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from server.ledger.answer_space import StoreSpace
from server.ledger.db import Conn, Dialect

Transaction = Callable[[], AbstractContextManager[Conn]]

__all__ = ["PRUNE_BATCH_ROWS", "Answer", "AnswerStore", "DuplicateRequestError", "Remembered"]

PRUNE_BATCH_ROWS = 500  # rows one prune transaction forgets at most: the writer is never held long
_PRUNE_PAUSE_S = 0.002


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


_INSERT_ID = (
    "INSERT INTO idempotency (body_hash, created, answer, media_type, answer_bytes, key_id, request_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class DuplicateRequestError(Exception):
    """The request id was charged meanwhile (a concurrent retry, perhaps on another replica)."""


class AnswerStore:
    def __init__(self, dialect: Dialect, window_s: float, ttl_s: float, space: StoreSpace) -> None:
        self.dialect, self.window_s, self.ttl_s, self.space = dialect, window_s, ttl_s, space

    def remember(
        self,
        db: Conn,
        key_id: str,
        request_id: str,
        remember: tuple[str, Answer | None],
        now: float,
    ) -> None:
        body_hash, answer = remember
        if answer is not None and len(answer.content) > self.space.key_bytes:
            answer = None  # larger than a key's share of the store: remember the id, not the answer
        values = (body_hash, now, *_stored(answer))
        inserted = db.execute(
            _INSERT_ID + " ON CONFLICT (key_id, request_id) DO NOTHING RETURNING created",
            (*values, key_id, request_id),
        )
        size = values[-1]
        # sent before the insert's answer is read: on PostgreSQL all three take one round trip
        added = self.space.add(db, key_id, size) if size else None
        is_new = bool(inserted.fetchall())
        # read out before any refusal
        key_total, total = (int(c.fetchall()[0][0]) for c in added) if added is not None else (0, 0)
        if not is_new:
            freed = self._reuse_expired(db, key_id, request_id, values)
            key_total, total = key_total - freed, total - freed
        if size:
            self.space.fit(db, key_id, key_total, total)

    def _reuse_expired(self, db: Conn, key_id: str, request_id: str, values: tuple) -> int:
        """The id is stored already: refuse it inside its window, else (the prune has not reached it
        yet) take its row over, and its stored answer's bytes out of the figures. Returns those bytes."""
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
            return 0
        db.execute(
            "UPDATE idempotency SET body_hash = ?, created = ?, answer = ?, media_type = ?, answer_bytes = ?"
            " WHERE key_id = ? AND request_id = ?",
            (*values, key_id, request_id),
        )
        freed = int(rows[0][1])
        if freed:
            self.space.release(db, key_id, freed)
        return freed

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
        if rows:
            # an answer the TTL prune has not dropped yet (the TTL may equal the window) leaves the figures
            self.space.forget(db, rows)
        return len(rows)

    def _drop_expired_answers(self, db: Conn, now: float) -> int:
        rows = self._oldest(db, "answer IS NOT NULL AND created < ?", now - self.ttl_s)
        if rows:
            self.space.drop(db, rows)
        return len(rows)

    def _oldest(self, db: Conn, where: str, before: float) -> list[tuple[str, str, int]]:
        # the store's row first, then the rows and their keys' figure rows (skipping those a charge
        # holds): see server.ledger.answer_space's doc
        self.space.lock_store(db)
        rows = db.execute(
            f"SELECT key_id, request_id, answer_bytes FROM idempotency WHERE {where}"
            f" ORDER BY created LIMIT {PRUNE_BATCH_ROWS}{self.dialect.skip_locked}",
            (before,),
        ).fetchall()
        return self.space.held_keys(
            db, [(key_id, request_id, int(size)) for key_id, request_id, size in rows]
        )

    def stored_bytes(self, db: Conn) -> int:
        """The stored answers' byte total, as the running figure has it."""
        return self.space.stored_bytes(db)


def _stored(answer: Answer | None) -> tuple[bytes | None, str | None, int]:
    """An answer's (content, media type, bytes) columns."""
    if answer is None:
        return None, None, 0
    return answer.content, answer.media_type, len(answer.content)

"""Request ids and their answers in the ledger (the ``idempotency`` table): remembered inside a
charge's transaction, recalled for a replay, the answers dropped oldest first beyond the store's size and
after their TTL, the ids after their window. Same SQL on both engines; with replicas (PostgreSQL) the
tidying skips rows another writer holds rather than waiting for them (``Dialect.skip_locked``), so it
never deadlocks with a charge.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.ledger.db import Conn, Dialect

__all__ = ["Answer", "AnswerStore", "DuplicateRequestError", "Remembered"]


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
_DROP_ANSWER = "UPDATE idempotency SET answer = NULL, media_type = NULL, answer_bytes = 0"


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
        expired_before = now - self.window_s
        cursor = db.execute(
            "INSERT INTO idempotency (key_id, request_id, body_hash, created, answer, media_type,"
            " answer_bytes) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, request_id) DO UPDATE SET"
            " body_hash = excluded.body_hash, created = excluded.created, answer = excluded.answer,"
            " media_type = excluded.media_type, answer_bytes = excluded.answer_bytes"
            " WHERE idempotency.created < ?",  # only an id past its window may be reused
            (
                key_id,
                request_id,
                body_hash,
                now,
                answer.content if answer else None,
                answer.media_type if answer else None,
                len(answer.content) if answer else 0,
                expired_before,
            ),
        )
        if cursor.rowcount != 1:
            raise DuplicateRequestError(request_id)
        if answer is not None:
            self._evict(db)

    def _evict(self, db: Conn) -> None:
        """Drop the oldest stored answers until they fit ``replay_store_bytes`` (ids are kept). With
        replicas, answers another charge is dropping at this moment are skipped, not waited for: the
        store may exceed its cap by what concurrent charges add, until the next charge."""
        stored = int(db.execute("SELECT COALESCE(SUM(answer_bytes), 0) FROM idempotency").fetchone()[0])
        excess = stored - self.store_bytes
        while excess > 0:
            rows = db.execute(
                "SELECT key_id, request_id, answer_bytes FROM idempotency WHERE answer IS NOT NULL"
                f" ORDER BY created LIMIT 64{self.dialect.skip_locked}"
            ).fetchall()
            if not rows:
                return
            for key_id, request_id, size in rows:
                db.execute(_DROP_ANSWER + " WHERE key_id = ? AND request_id = ?", (key_id, request_id))
                excess -= int(size)
                if excess <= 0:
                    return

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

    def prune(self, db: Conn, now: float) -> None:
        # rows a charge holds right now are left for the next prune (never a deadlock with it)
        skip = self.dialect.skip_locked
        db.execute(
            "DELETE FROM idempotency WHERE (key_id, request_id) IN (SELECT key_id, request_id"
            f" FROM idempotency WHERE created < ?{skip})",
            (now - self.window_s,),
        )
        db.execute(
            _DROP_ANSWER + " WHERE (key_id, request_id) IN (SELECT key_id, request_id FROM idempotency"
            f" WHERE answer IS NOT NULL AND created < ?{skip})",
            (now - self.ttl_s,),
        )

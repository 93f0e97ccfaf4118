"""Group commit: the charges of many request threads in one transaction, one durable commit, on
either engine.

A durable SQLite commit (WAL, synchronous=FULL) costs about 3.7 ms on the development VM, and commits are
serialised, so one commit per answered request capped small requests at ~270 requests/s whatever the
batcher did. On PostgreSQL a charge of its own paid its transaction's round trips and a pooled
connection: 778 charges/s from 8 threads.

Here a thread that wants to write joins the pending group; whichever thread finds no commit running
leads: it takes every pending write and runs them in one transaction, then commits once. Every writer
returns only after that commit, so each charge is still exact, still its own all-or-nothing unit, and
durable before its answer is sent. In the transaction:

1. ``begin(db, key_ids)`` (the keys of the group's writes, sorted) makes the group's batch: on
   PostgreSQL it locks those keys' totals rows first, in one order on every replica, so two replicas'
   groups never wait for each other in a circle;
2. each write runs with the batch, inside its own SAVEPOINT, sent only before the write's first
   statement (a write that only adds to the batch sends none): a write that refuses itself (over quota,
   a duplicate request id) is rolled back alone and gets its own error; it refuses before it adds
   anything to the batch;
3. ``finish(db, batch)`` writes what the batch gathered (e.g. every query row in one statement).

If the transaction itself fails, nothing of the group is committed and every writer gets the error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from server.ledger.db import CommitObserver, Conn, Cursor

__all__ = ["CommitObserver", "GroupCommit"]

B = TypeVar("B")


class _Savepoint:
    """One write's view of the shared transaction: SAVEPOINT goes out just before its first statement."""

    def __init__(self, db: Conn) -> None:
        self._db, self.opened = db, False

    def _open(self) -> None:
        if not self.opened:
            self._db.execute("SAVEPOINT one_write")
            self.opened = True

    def execute(self, sql: str, params: Any = (), /) -> Cursor:
        self._open()
        return self._db.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        self._open()
        return self._db.executemany(sql, params)

    def close(self, refused: bool) -> None:
        if self.opened:
            if refused:
                self._db.execute("ROLLBACK TO one_write")
            self._db.execute("RELEASE one_write")


@dataclass(eq=False)
class _Pending(Generic[B]):
    write: Callable[[Conn, B], None]
    key_id: str | None
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[B]):
    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Conn]],
        own_errors: tuple[type[Exception], ...],
        begin: Callable[[Conn, list[str]], B],
        finish: Callable[[Conn, B], None],
        observe: CommitObserver | None = None,
        gather_s: float = 0.0,
    ) -> None:
        """``transaction`` opens BEGIN ... COMMIT; ``own_errors`` are refusals of one write alone;
        ``begin`` and ``finish`` open and write each transaction's batch (module doc); ``observe``
        hears of every transaction (seconds, writes in it, committed), from the leading thread;
        ``gather_s``: a leader whose last group had several writers waits this long before it takes the
        pending writes, for the ones returning from that group."""
        self._transaction, self._own_errors, self._observe = transaction, own_errors, observe
        self._begin, self._finish = begin, finish
        self._cond = threading.Condition()
        self._pending: list[_Pending[B]] = []
        self._leading = False
        self._gather_s = gather_s
        self._last_group = 0
        self.commits = 0  # transactions committed, for tests and benchmarks
        self.writes = 0  # writes committed in them

    def run(self, write: Callable[[Conn, B], None], key_id: str | None = None) -> None:
        """Apply ``write`` (which charges ``key_id``) in a committed transaction (perhaps shared);
        raise its error if any."""
        mine = _Pending(write, key_id)
        with self._cond:
            self._pending.append(mine)
            self._cond.wait_for(lambda: mine.done or not self._leading)
            lead = not mine.done
            if lead:
                self._leading = True
        if lead:
            group: list[_Pending[B]] = []
            try:
                group = self._take_group()
                self._commit(group)
            finally:
                with self._cond:
                    for pending in group:
                        pending.done = True
                    self._leading = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    def _take_group(self) -> list[_Pending[B]]:
        if self._gather_s and self._last_group > 1:
            time.sleep(self._gather_s)
        with self._cond:
            group, self._pending = self._pending, []
        self._last_group = len(group)
        return group

    def _commit(self, group: list[_Pending[B]]) -> None:
        started = time.perf_counter()
        committed = self._run_group(group)
        if self._observe is not None:
            self._observe(time.perf_counter() - started, len(group), committed)

    def _run_group(self, group: list[_Pending[B]]) -> bool:
        try:
            with self._transaction() as db:
                batch = self._begin(db, sorted({p.key_id for p in group if p.key_id is not None}))
                for pending in group:
                    one = _Savepoint(db)
                    try:
                        pending.write(one, batch)
                    except self._own_errors as exc:
                        pending.error = exc
                    one.close(refused=pending.error is not None)
                self._finish(db, batch)
        except BaseException as exc:  # nothing of the group was committed: every writer hears it
            for pending in group:
                pending.error = exc
            return False
        self.commits += 1
        self.writes += sum(pending.error is None for pending in group)
        return True

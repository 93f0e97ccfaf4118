"""Group commit: the charges of many request threads in one SQLite transaction, one fsync.

A durable commit (WAL, synchronous=FULL) costs about 3.7 ms on the development VM, and commits are
serialised, so one commit per answered request capped small requests at ~270 requests/s whatever the
batcher did. Here a thread that wants to write joins the pending group; whichever thread finds no
commit running leads: it takes every pending write, runs each inside its own SAVEPOINT (a write that
refuses itself, e.g. over quota or a duplicate request id, is rolled back alone and gets its own
error), and commits once. Every writer returns only after that commit, so each charge is still
exact, still its own all-or-nothing unit, and durable before its answer is sent. If the transaction
itself fails, nothing of the group is committed and every writer gets the error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from server.ledger.db import CommitObserver, Conn, Write

__all__ = ["CommitObserver", "GroupCommit"]


@dataclass(eq=False)
class _Pending:
    write: Write
    done: bool = False
    error: BaseException | None = None


class GroupCommit:
    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Conn]],
        own_errors: tuple[type[Exception], ...],
        observe: CommitObserver | None = None,
    ) -> None:
        """``transaction`` opens BEGIN ... COMMIT; ``own_errors`` are refusals of one write alone;
        ``observe`` hears of every transaction (seconds, writes in it, committed), from the leading
        thread."""
        self._transaction, self._own_errors, self._observe = transaction, own_errors, observe
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._leading = False
        self.commits = 0  # transactions committed, for tests
        self.writes = 0  # writes committed in them

    def run(self, write: Write) -> None:
        """Apply ``write`` in a committed transaction (perhaps shared); raise its error if any."""
        mine = _Pending(write)
        with self._cond:
            self._pending.append(mine)
            self._cond.wait_for(lambda: mine.done or not self._leading)
            lead = not mine.done
            if lead:
                group, self._pending, self._leading = self._pending, [], True
        if lead:
            try:
                self._commit(group)
            finally:
                with self._cond:
                    for pending in group:
                        pending.done = True
                    self._leading = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    def _commit(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        committed = self._run_group(group)
        if self._observe is not None:
            self._observe(time.perf_counter() - started, len(group), committed)

    def _run_group(self, group: list[_Pending]) -> bool:
        try:
            with self._transaction() as db:
                for pending in group:
                    db.execute("SAVEPOINT one_write")
                    try:
                        pending.write(db)
                    except self._own_errors as exc:
                        db.execute("ROLLBACK TO one_write")
                        pending.error = exc
                    db.execute("RELEASE one_write")
        except BaseException as exc:  # nothing of the group was committed: every writer hears it
            for pending in group:
                pending.error = exc
            return False
        self.commits += 1
        self.writes += sum(pending.error is None for pending in group)
        return True

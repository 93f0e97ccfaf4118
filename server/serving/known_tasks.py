"""Tasks this process has already read from the ledger, so that a hot route finds its task without a
worker thread or a ledger read.

A task never changes once registered and is never deleted (a re-registration of the same classes and
templates is the same task), so an entry cannot go stale; it is keyed by (API key, task id), so one key
never finds another's task here either. Least recently used entries are evicted beyond a byte bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from server.ledger import StoredTask, stored_task_bytes

__all__ = ["KnownTasks", "entry_bytes"]

STRING_OVERHEAD_BYTES = 64  # a Python str's header and its list slot, beside the characters


def entry_bytes(task: StoredTask) -> int:
    """What an entry holds in memory, roughly: its text, and each string's overhead."""
    return stored_task_bytes(task) + STRING_OVERHEAD_BYTES * (len(task.class_names) + len(task.templates))


class KnownTasks:
    """(key id, task id) -> StoredTask, at most ``max_bytes`` of them (``entry_bytes``); safe to call
    from the event loop: each call holds the lock for a dict operation only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], tuple[StoredTask, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key_id: str, task_id: str) -> StoredTask | None:
        with self._lock:
            entry = self._entries.get((key_id, task_id))
            if entry is None:
                return None
            self._entries.move_to_end((key_id, task_id))
            return entry[0]

    def add(self, task: StoredTask) -> None:
        size = entry_bytes(task)
        if size > self.max_bytes:
            return  # larger than the whole cache: read from the ledger each time
        with self._lock:
            if (task.key_id, task.task_id) in self._entries:
                return
            self._entries[(task.key_id, task.task_id)] = (task, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

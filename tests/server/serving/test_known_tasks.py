"""KnownTasks: tasks kept for the hot routes, keyed by (key, task id), evicted least recently used
beyond a byte bound, and never holding a task larger than the bound."""

from __future__ import annotations

from server.ledger import StoredTask
from server.serving.known_tasks import KnownTasks, entry_bytes


def task(task_id: str, key_id: str = "alice", classes: int = 2) -> StoredTask:
    return StoredTask(task_id, key_id, [f"class {i}" for i in range(classes)], ["a photo of a {}."])


def test_a_task_is_found_only_under_its_own_key() -> None:
    known = KnownTasks(10_000)
    known.add(task("t1"))
    assert known.get("alice", "t1") == task("t1")
    assert known.get("bob", "t1") is None
    assert known.get("alice", "t2") is None


def test_least_recently_used_are_evicted_beyond_the_bound() -> None:
    size = entry_bytes(task("t0"))
    known = KnownTasks(3 * size)
    for name in ("t0", "t1", "t2"):
        known.add(task(name))
    assert known.get("alice", "t0") is not None  # t0 is now the most recently used
    known.add(task("t3"))
    assert [known.get("alice", n) is not None for n in ("t0", "t1", "t2", "t3")] == [True, False, True, True]
    assert len(known) == 3 and known.nbytes == 3 * size <= known.max_bytes
    for index in range(1000):  # any number of tasks: the bytes stay bounded
        known.add(task(f"many-{index}"))
    assert known.nbytes <= known.max_bytes and len(known) == 3


def test_a_task_larger_than_the_bound_is_not_kept() -> None:
    known = KnownTasks(100)
    known.add(task("huge", classes=100))
    assert known.get("alice", "huge") is None and known.nbytes == 0

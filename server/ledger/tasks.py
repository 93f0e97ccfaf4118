"""Stored tasks (class names and templates) and what one key may keep: a number of tasks and a number of
bytes. The bytes of a task are those of its stored JSON (ASCII: ``json.dumps`` escapes the rest), so
``LENGTH`` counts them alike on both engines. Both sums run over one key's rows (``tasks_by_key``), at
most ``max_tasks_per_key`` of them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from server.ledger.db import Conn
from shared.access import Access

__all__ = [
    "StoredTask",
    "TaskLimitError",
    "TaskStoreUsage",
    "insert_task",
    "stored_access",
    "stored_task_bytes",
    "task_refusal",
    "task_store_usage",
]


@dataclass(frozen=True)
class StoredTask:
    task_id: str
    key_id: str
    class_names: list[str]
    templates: list[str]
    access: Access = field(default_factory=Access)  # what its answers reveal (shared.access)


@dataclass(frozen=True)
class TaskStoreUsage:
    tasks: int
    bytes: int


class TaskLimitError(Exception):
    def __init__(
        self, limit: int, kind: Literal["tasks", "bytes"] = "tasks", used: int = 0, requested: int = 0
    ) -> None:
        if kind == "tasks":
            message = f"this key already has {limit} tasks, the most this server keeps per key"
        else:
            message = (
                f"this key's tasks hold {used} bytes of class names and templates and this one adds "
                f"{requested}; this server keeps at most {limit} bytes per key"
            )
        super().__init__(message)
        self.limit, self.kind, self.used, self.requested = limit, kind, used, requested


def stored_task_bytes(task: StoredTask) -> int:
    return len(json.dumps(task.class_names)) + len(json.dumps(task.templates))


def task_store_usage(db: Conn, key_id: str) -> TaskStoreUsage:
    tasks, stored = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(class_names) + LENGTH(templates)), 0) FROM tasks"
        " WHERE key_id = ?",
        (key_id,),
    ).fetchone()
    return TaskStoreUsage(int(tasks), int(stored))


def task_refusal(
    usage: TaskStoreUsage, task: StoredTask, max_tasks: int, max_bytes: int
) -> TaskLimitError | None:
    """Why storing ``task`` would cross the key's limits, or None."""
    if usage.tasks >= max_tasks:
        return TaskLimitError(max_tasks)
    adding = stored_task_bytes(task)
    if usage.bytes + adding > max_bytes:
        return TaskLimitError(max_bytes, "bytes", usage.bytes, adding)
    return None


def insert_task(db: Conn, task: StoredTask, now: float, max_tasks: int, max_bytes: int) -> None:
    """Store ``task`` unless it is stored already; inside the charge's transaction, so two registrations
    at once cannot both pass the limits (the key's row in ``key_usage`` is held by then)."""
    if db.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone():
        return
    refusal = task_refusal(task_store_usage(db, task.key_id), task, max_tasks, max_bytes)
    if refusal is not None:
        raise refusal
    db.execute(
        "INSERT INTO tasks (task_id, key_id, class_names, templates, created, access)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            task.task_id,
            task.key_id,
            json.dumps(task.class_names),
            json.dumps(task.templates),
            now,
            task.access.model_dump_json(exclude_none=True),
        ),
    )


def stored_access(text: str | None) -> Access:
    """A stored task's ``access`` column: NULL (a task stored before schema version 6) is level logits."""
    return Access() if text is None else Access.model_validate_json(text)

"""The query ledger: a SQLite file (WAL, synchronous=FULL) that counts every model call.

A charged query is committed before its response is sent, so a ``kill -9`` of the server loses no
count. Rejected requests go to their own table and are never charged. Registered tasks are kept
here too, so task ids survive a restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ledger", "QueryRecord", "StoredTask"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    task_id TEXT,
    request_id TEXT UNIQUE,
    images INTEGER NOT NULL,
    batch_passes INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    texts INTEGER NOT NULL,
    cost REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queries_by_key ON queries (key_id, endpoint);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_by_key ON rejections (key_id);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    class_names TEXT NOT NULL,
    templates TEXT NOT NULL,
    created REAL NOT NULL
);
"""

_COUNT_COLUMNS = ("requests", "images", "batch_passes", "bytes", "texts", "cost")


@dataclass(frozen=True)
class QueryRecord:
    key_id: str
    endpoint: str
    task_id: str | None
    request_id: str | None
    images: int
    batch_passes: int
    bytes: int
    texts: int
    cost: float


@dataclass(frozen=True)
class StoredTask:
    task_id: str
    key_id: str
    class_names: list[str]
    templates: list[str]


class Ledger:
    """Thread-safe; every write is its own committed transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._images_by_key = dict(
            self._db.execute("SELECT key_id, SUM(images) FROM queries GROUP BY key_id").fetchall()
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def images_used(self, key_id: str) -> int:
        with self._lock:
            return int(self._images_by_key.get(key_id, 0))

    def record_query(self, record: QueryRecord) -> bool:
        """Commit one charged query; False when its request id was already charged (a retry)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO queries (ts, key_id, endpoint, task_id, request_id, images,"
                " batch_passes, bytes, texts, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    record.key_id,
                    record.endpoint,
                    record.task_id,
                    record.request_id,
                    record.images,
                    record.batch_passes,
                    record.bytes,
                    record.texts,
                    record.cost,
                ),
            )
            charged = cursor.rowcount == 1
            if charged:
                used = self._images_by_key.get(record.key_id, 0)
                self._images_by_key[record.key_id] = used + record.images
            return charged

    def record_rejection(self, key_id: str | None, endpoint: str, status: int, code: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO rejections (ts, key_id, endpoint, status, code) VALUES (?, ?, ?, ?, ?)",
                (time.time(), key_id, endpoint, status, code),
            )

    def usage_by_endpoint(self, key_id: str) -> dict[str, dict[str, float]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT endpoint, COUNT(*), SUM(images), SUM(batch_passes), SUM(bytes), SUM(texts),"
                " SUM(cost) FROM queries WHERE key_id = ? GROUP BY endpoint ORDER BY endpoint",
                (key_id,),
            ).fetchall()
        return {row[0]: dict(zip(_COUNT_COLUMNS, row[1:], strict=True)) for row in rows}

    def rejections_by_status(self, key_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM rejections WHERE key_id = ? GROUP BY status",
                (key_id,),
            ).fetchall()
        return {str(status): count for status, count in rows}

    def save_task(self, task: StoredTask) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, key_id, class_names, templates, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    task.task_id,
                    task.key_id,
                    json.dumps(task.class_names),
                    json.dumps(task.templates),
                    time.time(),
                ),
            )

    def load_task(self, task_id: str, key_id: str) -> StoredTask | None:
        with self._lock:
            row = self._db.execute(
                "SELECT class_names, templates FROM tasks WHERE task_id = ? AND key_id = ?",
                (task_id, key_id),
            ).fetchone()
        if row is None:
            return None
        return StoredTask(task_id, key_id, json.loads(row[0]), json.loads(row[1]))

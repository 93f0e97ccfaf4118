"""The ledger's tables, versioned: created on a new file, migrated forward on an old one, refused
when the file was written by newer code than this.

The version lives in SQLite's ``PRAGMA user_version``. Version 1 (the first release) kept every
rejected request as a row and made ``request_id`` unique across all keys; version 2 scopes request ids
to the API key (the ``idempotency`` table), keeps per-key totals for atomic quota checks, and keeps
rejections as counters; version 3 adds the managed API keys (hashes, labels, per-key limits) and an
index on the queries' time for exports and per-period usage; version 4 keeps the stored answers' byte
total as a running figure (``answer_store``, one row) and indexes the rows that hold an answer by age,
so that no charge reads the whole ``idempotency`` table to keep the store under its cap; version 5 keeps
each key's stored answers' bytes as a running figure too (``answer_store_keys``, indexed by size) and
indexes the rows that hold an answer of some bytes by key and age, so that a key's answers are kept to
its share of the store and eviction drops the largest key's oldest (``server.ledger.answer_space``);
version 6 adds a task's access level (``tasks.access``, the ``shared.access.Access`` JSON; NULL, as in
every task stored before, is level logits) and a managed key's levels (``api_keys.levels``, a JSON list;
NULL: every level the server offers).
"""

from __future__ import annotations

import sqlite3

__all__ = ["SCHEMA_VERSION", "SchemaError", "migrate"]

SCHEMA_VERSION = 6


class SchemaError(RuntimeError):
    """The ledger file cannot be used by this version of the server."""


_V2_TABLES = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    task_id TEXT,
    request_id TEXT,
    images INTEGER NOT NULL,
    batch_passes INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    texts INTEGER NOT NULL,
    cost REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queries_by_key ON queries (key_id, endpoint);
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT PRIMARY KEY,
    requests INTEGER NOT NULL,
    images INTEGER NOT NULL,
    cost REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    created REAL NOT NULL,
    answer BLOB,
    media_type TEXT,
    answer_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, request_id)
);
CREATE INDEX IF NOT EXISTS idempotency_by_created ON idempotency (created);
CREATE TABLE IF NOT EXISTS rejection_counts (
    key_id TEXT NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (key_id, route, status, code)
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    class_names TEXT NOT NULL,
    templates TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_key ON tasks (key_id);
"""

# Version 1's queries table had `request_id TEXT UNIQUE` (global, across keys) and a row per rejection.
_FROM_V1 = """
ALTER TABLE queries RENAME TO queries_v1;
DROP INDEX IF EXISTS queries_by_key;
{tables}
INSERT INTO queries (id, ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes, texts, cost)
    SELECT id, ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes, texts, cost
    FROM queries_v1;
DROP TABLE queries_v1;
INSERT INTO rejection_counts (key_id, route, status, code, count)
    SELECT COALESCE(key_id, 'unauthenticated'), endpoint, status, code, COUNT(*)
    FROM rejections GROUP BY 1, 2, 3, 4;
DROP TABLE rejections;
"""

# Version 3: keys made by `blackvip-server keys create`, kept as SHA-256 hashes; a revoked key keeps its
# row (its id stays in the usage history, and its hash is answered "revoked", not "unknown").
_V3_TABLES = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL,
    quota_images INTEGER,
    quota_cost REAL,
    rate_per_s REAL
);
CREATE INDEX IF NOT EXISTS queries_by_time ON queries (ts);
CREATE INDEX IF NOT EXISTS queries_by_key_time ON queries (key_id, ts);
"""

# Version 4: the running total (from the rows already stored, once, at the migration) and the index of
# the rows that still hold an answer, oldest first (what eviction and the TTL prune read).
_V4_TABLES = """
CREATE TABLE IF NOT EXISTS answer_store (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO answer_store (id, bytes) SELECT 0, COALESCE(SUM(answer_bytes), 0) FROM idempotency;
CREATE INDEX IF NOT EXISTS idempotency_answers_by_created ON idempotency (created) WHERE answer IS NOT NULL;
"""

# Version 5: each key's figure (from the rows already stored, once, at the migration), the index that
# finds the key holding the most, and the index of a key's rows that still hold an answer of some bytes,
# oldest first (its condition is not the TTL prune's index's: no plan for one key walks every key's rows).
_V5_TABLES = """
CREATE TABLE IF NOT EXISTS answer_store_keys (key_id TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO answer_store_keys (key_id, bytes)
    SELECT key_id, SUM(answer_bytes) FROM idempotency WHERE answer IS NOT NULL GROUP BY key_id;
CREATE INDEX IF NOT EXISTS answer_store_keys_by_bytes ON answer_store_keys (bytes);
CREATE INDEX IF NOT EXISTS idempotency_answers_by_key ON idempotency (key_id, created) WHERE answer_bytes > 0;
"""

# Version 6: ADD COLUMN is no IF NOT EXISTS statement, so it runs only on a ledger below version 6, and
# the version is read inside the migration's transaction (two servers opening one file migrate once).
_V6_COLUMNS = """
ALTER TABLE tasks ADD COLUMN access TEXT;
ALTER TABLE api_keys ADD COLUMN levels TEXT;
"""

_TOTALS = """
INSERT OR REPLACE INTO key_usage (key_id, requests, images, cost)
    SELECT key_id, COUNT(*), SUM(images), SUM(cost) FROM queries GROUP BY key_id;
"""


def migrate(db: sqlite3.Connection) -> None:
    """Bring ``db`` (autocommit connection) to ``SCHEMA_VERSION`` in one transaction."""
    if _version(db) == SCHEMA_VERSION:  # the usual case, without taking the write lock
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)  # again, under the lock: another process may have migrated meanwhile
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the ledger has schema version {version}, newer than this server's {SCHEMA_VERSION}: "
                "it was written by a newer blackvip-server; upgrade this one, or point --ledger elsewhere"
            )
        if version < SCHEMA_VERSION:
            for statement in _script(db, version).split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _script(db: sqlite3.Connection, version: int) -> str:
    """The statements that bring a ledger at ``version`` (below ``SCHEMA_VERSION``) up to date."""
    if version < 2:
        has_v1 = version == 0 and _table_exists(db, "rejections")
        script = (_FROM_V1.format(tables=_V2_TABLES) if has_v1 else _V2_TABLES) + _TOTALS
    else:
        script = ""
    if version < 3:
        script += _V3_TABLES
    if version < 4:
        script += _V4_TABLES
    return script + _V5_TABLES + _V6_COLUMNS


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None

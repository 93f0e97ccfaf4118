"""The ledger's tables on PostgreSQL, versioned as on SQLite (``server.ledger.schema``): created in an
empty database, migrated forward, refused when written by newer code than this.

The version is the one row of ``blackvip_schema``. PostgreSQL ledgers begin at version 3, the SQLite
schema of the release that added this backend, with the same tables and columns (BIGINT counts,
DOUBLE PRECISION times and costs, BYTEA answers); a later version adds its step to ``_STEPS`` (version 4:
the stored answers' running byte total and the index of the rows that hold an answer; version 5: each
key's running figure and the index of a key's rows that hold an answer; version 6: a task's access
level and a managed key's levels, ``tasks.access`` and ``api_keys.levels``). Replicas
that start together migrate one at a time: the migration holds a transaction-scoped advisory lock, and
DDL is transactional, so each replica finds the schema either absent or complete.
"""

from __future__ import annotations

from typing import Any

from server.ledger.schema import SCHEMA_VERSION, SchemaError

__all__ = ["migrate_postgres", "schema_version"]

# any fixed number: the advisory lock that serialises migrations of one database
_MIGRATION_LOCK = 0x626C_6B76_6970  # "blkvip"

_V3 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL);
CREATE TABLE queries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    task_id TEXT,
    request_id TEXT,
    images BIGINT NOT NULL,
    batch_passes BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    texts BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL
);
CREATE INDEX queries_by_key ON queries (key_id, endpoint);
CREATE INDEX queries_by_time ON queries (ts);
CREATE INDEX queries_by_key_time ON queries (key_id, ts);
CREATE TABLE key_usage (
    key_id TEXT PRIMARY KEY,
    requests BIGINT NOT NULL,
    images BIGINT NOT NULL,
    cost DOUBLE PRECISION NOT NULL
);
CREATE TABLE idempotency (
    key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    answer BYTEA,
    media_type TEXT,
    answer_bytes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, request_id)
);
CREATE INDEX idempotency_by_created ON idempotency (created);
CREATE TABLE rejection_counts (
    key_id TEXT NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key_id, route, status, code)
);
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    class_names TEXT NOT NULL,
    templates TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE INDEX tasks_by_key ON tasks (key_id);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION,
    quota_images BIGINT,
    quota_cost DOUBLE PRECISION,
    rate_per_s DOUBLE PRECISION
);
CREATE TABLE blackvip_schema (version INTEGER NOT NULL);
INSERT INTO blackvip_schema (version) VALUES (3);
"""

_V4 = """
CREATE TABLE answer_store (id INTEGER PRIMARY KEY CHECK (id = 0), bytes BIGINT NOT NULL);
INSERT INTO answer_store (id, bytes) SELECT 0, COALESCE(SUM(answer_bytes), 0) FROM idempotency;
CREATE INDEX idempotency_answers_by_created ON idempotency (created) WHERE answer IS NOT NULL;
"""

_V5 = """
CREATE TABLE answer_store_keys (key_id TEXT PRIMARY KEY, bytes BIGINT NOT NULL);
INSERT INTO answer_store_keys (key_id, bytes)
    SELECT key_id, SUM(answer_bytes) FROM idempotency WHERE answer IS NOT NULL GROUP BY key_id;
CREATE INDEX answer_store_keys_by_bytes ON answer_store_keys (bytes);
CREATE INDEX idempotency_answers_by_key ON idempotency (key_id, created) WHERE answer_bytes > 0;
"""

_V6 = """
ALTER TABLE tasks ADD COLUMN access TEXT;
ALTER TABLE api_keys ADD COLUMN levels TEXT;
"""

# version reached -> the script from the version before it (an empty database is version 0: every step)
_STEPS: dict[int, str] = {3: _V3, 4: _V4, 5: _V5, 6: _V6}


def schema_version(db: Any) -> int:
    """0 for a database without our tables."""
    if db.execute("SELECT to_regclass('blackvip_schema')").fetchone()[0] is None:
        return 0
    row = db.execute("SELECT MAX(version) FROM blackvip_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate_postgres(db: Any) -> None:
    """Bring the database to ``SCHEMA_VERSION``; ``db`` is a psycopg connection inside a transaction."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the ledger has schema version {version}, newer than this server's {SCHEMA_VERSION}: "
            "it was written by a newer blackvip-server; upgrade this one, or point --ledger elsewhere"
        )
    steps = [_STEPS[v] for v in sorted(_STEPS) if v > version]
    for script in steps:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
    if steps:
        db.execute("UPDATE blackvip_schema SET version = %s", (SCHEMA_VERSION,))

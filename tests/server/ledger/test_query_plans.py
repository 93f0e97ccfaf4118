"""Every statement a charge runs, and the prune, costs the same however many request ids and query rows
the ledger holds: with tables as a day of traffic leaves them, no statement the ledger sends reads the
whole ``idempotency`` or ``queries`` table. The statements are the ones the ledger really sent (SQLite's
trace of the writing and the reading connection; PostgreSQL's own log of the plans it ran, through its
``auto_explain`` module), each judged by the engine's planner on the full tables."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from server.ledger import Answer, DuplicateRequestError, Ledger, LedgerLimits, QueryRecord, StoredTask
from shared.protocol import Endpoint

ROWS = 100_000  # ids and query rows already stored: hours of traffic at 10 requests/s
WINDOW_S, TTL_S = 3600.0, 600.0
# the stored answers (2,000 kB to begin with) go over the cap at the first charge: then each charge evicts
# from the key holding the most (one of 45 others, 44 kB each); the charging keys (7 kB each to begin with)
# go over their share (8 kB) at once: then each charge drops its own key's oldest too
LIMITS = LedgerLimits(
    idempotency_window_s=WINDOW_S,
    replay_ttl_s=TTL_S,
    replay_store_bytes=2_000_500,
    replay_store_key_share=0.004,
)
KEYS = 20_000  # keys with a figure row (most of them holding nothing now)


def key_of(i: int) -> str:
    """The key of the ``i``-th stored id: the keys charged here hold one id in 300 each, 45 others the
    rest (one key's rows are few among all, as with many keys: its own index is what finds them)."""
    if i < 50:
        return "old-key"
    return f"key-{i % 3}" if i % 100 == 0 else f"bulk-{i % 50}"


def record(key: str, request_id: str | None, images: int = 4) -> QueryRecord:
    return QueryRecord(key, Endpoint.LOGITS, "t", request_id, images, 1, 100, 0, images / 1000)


def exercise(ledger: Ledger) -> None:
    """What the server does to the ledger: charges that store answers (the store over its cap, so each
    one evicts), a replay, a duplicate, an expired id taken over, a registration, the usage reads of
    an early refusal, and the prune."""
    for index in range(30):
        ledger.charge(record(f"key-{index % 3}", f"new-{index}"), remember=("h", Answer(b"a" * 5000, "m")))
    assert ledger.recall("key-0", "new-0") is not None
    with pytest.raises(DuplicateRequestError):
        ledger.charge(record("key-0", "new-0"), remember=("h", Answer(b"a", "m")))
    ledger.charge(record("old-key", "old-7"), remember=("h", Answer(b"b" * 10, "m")))  # past its window
    ledger.charge(record("key-1", None, 0), task=StoredTask("task-x", "key-1", ["a", "b"], ["{}"]))
    ledger.quota("key-2")
    ledger.prune()


def fill(db: sqlite3.Connection | psycopg.Connection, placeholder: str) -> None:
    """``ROWS`` ids (the oldest past the window, the newer half still holding answers) and query rows."""
    now = time.time()
    ids = [(key_of(i), f"old-{i}", "h", now - WINDOW_S - 100 + i * WINDOW_S / ROWS) for i in range(ROWS)]
    marks = ", ".join([placeholder] * 7)
    answered = [i > ROWS // 2 for i in range(ROWS)]
    cursor = db.cursor()
    cursor.executemany(
        "INSERT INTO idempotency (key_id, request_id, body_hash, created, answer, answer_bytes, media_type)"
        f" VALUES ({marks})",
        [
            (*row, b"x" * 40, 40, "m") if kept else (*row, None, 0, None)
            for row, kept in zip(ids, answered, strict=True)
        ],
    )
    marks = ", ".join([placeholder] * 10)
    cursor.executemany(
        "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes, texts,"
        f" cost) VALUES ({marks})",
        [(now - i, f"key-{i % 3}", "logits", "t", f"old-{i}", 4, 1, 100, 0, 0.004) for i in range(ROWS)],
    )
    total = "(SELECT SUM(answer_bytes) FROM idempotency)"  # the running total, as the migration sets it
    cursor.execute(f"UPDATE answer_store SET bytes = {total} WHERE id = {placeholder}", (0,))
    cursor.execute(  # each key's figure, as the migration sets it
        "INSERT INTO answer_store_keys (key_id, bytes) SELECT key_id, SUM(answer_bytes) FROM idempotency"
        " WHERE answer IS NOT NULL GROUP BY key_id"
    )
    marks = ", ".join([placeholder] * 2)
    cursor.executemany(
        f"INSERT INTO answer_store_keys (key_id, bytes) VALUES ({marks})",
        [(f"idle-{i}", 0) for i in range(KEYS)],
    )


def test_no_sqlite_statement_of_a_charge_or_the_prune_scans_the_big_tables(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()  # the schema
    with sqlite3.connect(path) as db:
        fill(db, "?")
    ledger = Ledger(path, LIMITS)
    sent: list[str] = []
    ledger.db._db.set_trace_callback(sent.append)
    ledger.db._reader.set_trace_callback(sent.append)
    exercise(ledger)
    ledger.close()

    statements = {s for s in sent if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", s, re.I)}
    assert any(s.startswith("DELETE") for s in statements)  # the prune ran
    scans, indexes = {}, set()
    with sqlite3.connect(path) as db:
        for statement in statements:
            for *_, detail in db.execute("EXPLAIN QUERY PLAN " + statement).fetchall():
                indexes.update(re.findall(r"USING INDEX (\w+)", detail))
                if re.match(
                    r"SCAN (idempotency|queries|answer_store_keys)\b", detail
                ) and not _bounded_answer_scan(detail):
                    scans[statement[:160]] = detail
                if "TEMP B-TREE" in detail and re.search(r"\b(idempotency|answer_store_keys)\b", statement):
                    scans[statement[:160]] = detail  # a sort of every row found: no bound
    assert not scans, scans
    assert any("answer_store" in s for s in statements)
    # a key's own oldest (its share) and the largest key (the store over its size) were looked up
    assert {"idempotency_answers_by_key", "answer_store_keys_by_bytes"} <= indexes, indexes


def _bounded_answer_scan(detail: str) -> bool:
    # eviction walks the index of rows that hold an answer, oldest first, and stops at its LIMIT: each
    # row it reads is one it drops
    return detail == "SCAN idempotency USING INDEX idempotency_answers_by_created"


def test_no_postgres_statement_of_a_charge_or_the_prune_scans_the_big_tables(postgres) -> None:
    url = postgres.database(prefix="plans")
    Ledger(url).close()  # the schema
    with psycopg.connect(url, autocommit=True) as db:
        fill(db, "%s")
        db.execute("ANALYZE")  # as autovacuum leaves a table of this size
        name = db.execute("SELECT current_database()").fetchone()[0]
        for setting in ("session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0"):
            db.execute(f'ALTER DATABASE "{name}" SET {setting}')  # every new session logs its plans
    log_before = len(postgres.log())
    ledger = Ledger(url, LIMITS)
    exercise(ledger)
    ledger.close()
    log = postgres.log()[log_before:]

    plans = [block for block in log.split("plan:")[1:] if "Query Text" in block]
    assert len(plans) > 50  # the statements ran and their plans are in the log
    scans = [
        plan.strip()[:400]
        for plan in plans
        if re.search(r"Seq Scan on (idempotency|queries|answer_store_keys)\b", plan)
    ]
    assert not scans, scans
    # a key's oldest answers (its share, the largest key's) always through its own index, even in the
    # generic plan of a prepared statement; the largest key through the index on the figures
    oldest = [plan for plan in plans if "WHERE key_id = $1 AND answer_bytes > 0" in plan]
    assert oldest and all("idempotency_answers_by_key" in plan for plan in oldest), oldest[:3]
    assert any("answer_store_keys_by_bytes" in plan for plan in plans)
    assert any("answer_store" in plan for plan in plans) and any("DELETE" in plan for plan in plans)

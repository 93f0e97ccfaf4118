"""The ledger's semantics, one suite on both engines (``ledger_target``: a real SQLite file and a real
PostgreSQL database): charges, quota inside the transaction (concurrent ledgers, as replicas, never
overrun it), idempotency entries with their window, TTL and size cap, rejection counters, tasks, and
the schema's versions; then what only one engine has (SQLite's WAL and its first release's schema,
PostgreSQL's lock timeout)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from server.ledger import (
    Answer,
    DuplicateRequestError,
    Ledger,
    LedgerLimits,
    LedgerUnavailableError,
    QueryRecord,
    QuotaExceededError,
    StoredTask,
    TaskLimitError,
    schema_pg,
)
from server.ledger.interface import KeyLimits, ManagedKey
from server.ledger.schema import _V2_TABLES, _V3_TABLES, _V4_TABLES, _V5_TABLES, SCHEMA_VERSION, SchemaError
from shared.access import Access, AccessLevel
from shared.protocol import Endpoint


def record(key: str = "k", images: int = 4, request_id: str | None = None) -> QueryRecord:
    return QueryRecord(
        key_id=key,
        endpoint=Endpoint.LOGITS,
        task_id="t",
        request_id=request_id,
        images=images,
        batch_passes=1,
        bytes=100,
        texts=0,
        cost=images / 1000,
    )


def answer(size: int = 10) -> Answer:
    return Answer(b"x" * size, "application/msgpack")


def test_counts_survive_reopening_and_are_per_key(ledger_target: Path | str) -> None:
    path = ledger_target
    ledger = Ledger(path)
    ledger.charge(record(images=4))
    ledger.charge(record(images=6))
    ledger.charge(record(key="other", images=1))
    ledger.add_rejections({("k", "/v1/x", 422, "invalid_values"): 2})
    ledger.charge(record(images=0), task=StoredTask("t", "k", ["a", "b"], ["{}"]))
    ledger.close()  # no clean-up beyond commits: each write was already durable

    reopened = Ledger(path)
    assert reopened.images_used("k") == 10 and reopened.images_used("other") == 1
    logits = reopened.usage_by_endpoint("k")["logits"]
    assert (logits["requests"], logits["images"], logits["bytes"]) == (3, 10, 300)
    assert reopened.rejections_by_status("k") == {"422": 2}
    assert reopened.load_task("t", "k") == StoredTask("t", "k", ["a", "b"], ["{}"])
    assert reopened.load_task("t", "other") is None


def test_a_tasks_access_and_a_keys_levels_are_stored(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target)
    top = StoredTask("t-top", "k", ["a", "b", "c"], ["{}"], Access(level=AccessLevel.TOP_K, k=2, decimals=3))
    noisy = StoredTask("t-noisy", "k", ["a"], ["{}"], Access(level=AccessLevel.LABEL, noise_std=0.5))
    for task in (top, noisy, StoredTask("t-plain", "k", ["a"], ["{}"])):
        ledger.charge(record(images=0), task=task)
    ledger.keys.create(ManagedKey("key-a", "hash-a", "a", 1.0, None, KeyLimits(levels=("logits", "top-k"))))
    ledger.keys.create(ManagedKey("key-b", "hash-b", "b", 2.0))
    ledger.close()
    reopened = Ledger(ledger_target)
    assert reopened.load_task("t-top", "k") == top and reopened.load_task("t-noisy", "k") == noisy
    assert reopened.load_task("t-plain", "k").access == Access()
    assert reopened.keys.get("key-a").limits.levels == ("logits", "top-k")
    assert reopened.quota("key-a").levels == ("logits", "top-k") and reopened.quota("key-b").levels is None
    reopened.keys.set_limits("key-a", KeyLimits(quota_images=5))
    assert reopened.keys.get("key-a").limits == KeyLimits(quota_images=5)  # levels back to all
    reopened.close()


def test_request_ids_are_scoped_to_the_key_and_charged_once(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target)
    ledger.charge(record(request_id="r1"), remember=("hash-a", answer()))
    with pytest.raises(DuplicateRequestError):
        ledger.charge(record(request_id="r1"), remember=("hash-a", answer()))
    ledger.charge(record(key="other", request_id="r1"), remember=("hash-b", answer()))  # another key's id
    assert ledger.images_used("k") == 4 and ledger.images_used("other") == 4
    assert ledger.usage_by_endpoint("k")["logits"]["requests"] == 1
    seen = ledger.recall("k", "r1")
    assert seen is not None and seen.body_hash == "hash-a" and seen.answer == answer()
    assert ledger.recall("k", "unknown") is None


def test_answers_expire_before_ids_and_ids_after_their_window(ledger_target: Path | str) -> None:
    limits = LedgerLimits(idempotency_window_s=0.6, replay_ttl_s=0.2)
    ledger = Ledger(ledger_target, limits)
    ledger.charge(record(request_id="r1"), remember=("h", answer()))
    time.sleep(0.3)
    seen = ledger.recall("k", "r1")
    assert seen is not None and seen.answer is None  # the id is remembered, its answer is not
    with pytest.raises(DuplicateRequestError):
        ledger.charge(record(request_id="r1"), remember=("h", answer()))
    time.sleep(0.4)
    assert ledger.recall("k", "r1") is None  # past the window the id is new again
    ledger.charge(record(request_id="r1"), remember=("h2", answer()))
    assert ledger.images_used("k") == 8
    ledger.prune()
    rows = ledger._read("SELECT COUNT(*) FROM idempotency")
    assert rows[0][0] == 1


def test_stored_answers_stay_under_the_size_cap_oldest_dropped_first(ledger_target: Path | str) -> None:
    # one key's answers may take the whole store here (its share: test_answer_share.py)
    ledger = Ledger(ledger_target, LedgerLimits(replay_store_bytes=250, replay_store_key_share=1.0))
    for index in range(5):
        ledger.charge(record(request_id=f"r{index}"), remember=("h", answer(100)))
    stored = ledger._read("SELECT SUM(answer_bytes) FROM idempotency")[0][0]
    assert stored <= 250
    assert ledger.recall("k", "r0").answer is None and ledger.recall("k", "r4").answer == answer(100)
    assert all(ledger.recall("k", f"r{i}") is not None for i in range(5))  # ids all kept
    ledger.charge(record(request_id="big"), remember=("h", answer(1000)))  # larger than the store
    assert ledger.recall("k", "big").answer is None


def test_quota_is_checked_inside_the_charge_and_a_refusal_changes_nothing(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(quota_images=10))
    ledger.charge(record(images=6, request_id="a"), remember=("h", answer()))
    with pytest.raises(QuotaExceededError) as refused:
        ledger.charge(record(images=6, request_id="b"), remember=("h", answer()))
    assert (refused.value.used, refused.value.quota, refused.value.requested) == (6, 10, 6)
    assert ledger.recall("k", "b") is None  # the refused request left no trace
    ledger.charge(record(images=4))
    assert ledger.images_used("k") == 10


def test_concurrent_charges_never_overrun_the_quota(ledger_target: Path | str) -> None:
    path = ledger_target
    Ledger(path).close()
    ledgers = [Ledger(path, LedgerLimits(quota_images=100)) for _ in range(4)]  # 4 connections
    refused: list[int] = []

    def spend(ledger: Ledger) -> None:
        for _ in range(20):
            try:
                ledger.charge(record(images=3))
            except QuotaExceededError:
                refused.append(1)

    threads = [threading.Thread(target=spend, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledgers[0].images_used("k") == 99 and len(refused) == 80 - 33


def test_tasks_per_key_are_limited_and_re_registering_is_free(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(max_tasks_per_key=2))
    for name in ("t1", "t2"):
        ledger.charge(record(images=0), task=StoredTask(name, "k", ["a"], ["{}"]))
    ledger.charge(record(images=0), task=StoredTask("t1", "k", ["a"], ["{}"]))  # already there
    with pytest.raises(TaskLimitError):
        ledger.charge(record(images=0), task=StoredTask("t3", "k", ["a"], ["{}"]))
    ledger.charge(record(key="other", images=0), task=StoredTask("t4", "other", ["a"], ["{}"]))
    assert ledger.load_task("t3", "k") is None and ledger.load_task("t4", "other") is not None


def test_a_locked_ledger_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, LedgerLimits(busy_timeout_s=0.2))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(LedgerUnavailableError):
        ledger.charge(record())
    assert not ledger.healthy
    blocker.execute("ROLLBACK")
    ledger.heartbeat()
    assert ledger.healthy and ledger.images_used("k") == 0
    ledger.close()
    with pytest.raises(LedgerUnavailableError, match="closed"):
        ledger.charge(record())


def test_synchronous_full_and_wal(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger._read("PRAGMA journal_mode")[0][0] == "wal"
    assert ledger._read("PRAGMA synchronous")[0][0] == 2  # FULL


_V1_SCHEMA = """
CREATE TABLE queries (id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_id TEXT NOT NULL, endpoint TEXT NOT NULL,
    task_id TEXT, request_id TEXT UNIQUE, images INTEGER NOT NULL, batch_passes INTEGER NOT NULL,
    bytes INTEGER NOT NULL, texts INTEGER NOT NULL, cost REAL NOT NULL);
CREATE INDEX queries_by_key ON queries (key_id, endpoint);
CREATE TABLE rejections (id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_id TEXT, endpoint TEXT NOT NULL,
    status INTEGER NOT NULL, code TEXT NOT NULL);
CREATE TABLE tasks (task_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, class_names TEXT NOT NULL,
    templates TEXT NOT NULL, created REAL NOT NULL);
INSERT INTO queries VALUES (1, 0, 'k', 'logits', 't', 'r1', 5, 1, 10, 0, 0.005);
INSERT INTO queries VALUES (2, 0, 'k', 'loss', 't', NULL, 7, 1, 10, 0, 0.007);
INSERT INTO rejections VALUES (1, 0, 'k', '/v1/tasks/{task_id}/logits', 422, 'invalid_values');
INSERT INTO rejections VALUES (2, 0, 'k', '/v1/tasks/{task_id}/logits', 422, 'invalid_values');
INSERT INTO rejections VALUES (3, 0, NULL, '/v1/info', 401, 'unauthorized');
INSERT INTO tasks VALUES ('t', 'k', '["a"]', '["{}"]', 0);
"""


def test_a_first_release_ledger_is_migrated_with_every_count(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_V1_SCHEMA)
    ledger = Ledger(path, LedgerLimits(quota_images=20))
    assert ledger._read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert ledger.images_used("k") == 12
    assert ledger.rejections_by_status("k") == {"422": 2}
    assert ledger.rejections_by_status("unauthenticated") == {"401": 1}
    assert ledger.load_task("t", "k") is not None
    with pytest.raises(QuotaExceededError):
        ledger.charge(record(images=9))
    ledger.charge(record(images=8, request_id="r1"), remember=("h", answer()))  # ids no longer global


def test_a_version_5_ledger_gains_access_columns_and_its_tasks_are_level_logits(tmp_path: Path) -> None:
    path = tmp_path / "v5.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_V2_TABLES + _V3_TABLES + _V4_TABLES + _V5_TABLES)
        db.execute("""INSERT INTO tasks VALUES ('t', 'k', '["a", "b"]', '["{}"]', 0)""")
        db.execute("INSERT INTO api_keys VALUES ('key-a', 'hash-a', 'a', 1.0, NULL, 3, NULL, NULL)")
        db.execute("PRAGMA user_version = 5")
    ledger = Ledger(path)
    assert ledger._read("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 6
    assert ledger.load_task("t", "k") == StoredTask("t", "k", ["a", "b"], ["{}"], Access())
    assert ledger.keys.get("key-a").limits == KeyLimits(quota_images=3)  # levels: every level offered
    label = StoredTask("t2", "k", ["a"], ["{}"], Access(level=AccessLevel.LABEL))
    ledger.charge(record(images=0), task=label)
    ledger.close()
    assert Ledger(path).load_task("t2", "k") == label


def test_a_ledger_from_newer_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="newer blackvip-server"):
        Ledger(path)


# -- PostgreSQL only -----------------------------------------------------------------------------


def test_replicas_starting_together_create_the_schema_once(postgres) -> None:
    url = postgres.database()
    ledgers: list[Ledger] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            ledgers.append(Ledger(url))
        except BaseException as exc:  # collected: a failure must fail the test, not vanish in a thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(ledgers) == 4
    assert ledgers[0]._read("SELECT version FROM blackvip_schema") == [(SCHEMA_VERSION,)]
    ledgers[1].charge(record(images=5))
    assert ledgers[3].images_used("k") == 5  # one database behind every replica
    for ledger in ledgers:
        ledger.close()


def test_a_version_5_postgres_ledger_gains_access_columns(postgres) -> None:
    url = postgres.database()
    with psycopg.connect(url, autocommit=True) as db:
        for version in (3, 4, 5):
            for statement in schema_pg._STEPS[version].split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("UPDATE blackvip_schema SET version = 5")
        db.execute("""INSERT INTO tasks VALUES ('t', 'k', '["a"]', '["{}"]', 0)""")
    ledger = Ledger(url)
    assert ledger._read("SELECT version FROM blackvip_schema") == [(SCHEMA_VERSION,)]
    assert ledger.load_task("t", "k") == StoredTask("t", "k", ["a"], ["{}"], Access())
    ledger.close()


def test_a_postgres_ledger_from_newer_code_is_refused(postgres) -> None:
    url = postgres.database()
    Ledger(url).close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE blackvip_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError, match="newer blackvip-server"):
        Ledger(url)


def test_a_charge_waits_for_a_locked_key_at_most_the_busy_timeout(postgres) -> None:
    url = postgres.database()
    ledger = Ledger(url, LedgerLimits(busy_timeout_s=0.3))
    ledger.charge(record(images=1))
    with psycopg.connect(url) as blocker:  # another replica's transaction holding the key's row
        blocker.execute("SELECT images FROM key_usage WHERE key_id = 'k' FOR UPDATE")
        with pytest.raises(LedgerUnavailableError, match="lock timeout"):
            ledger.charge(record(images=2))
        assert not ledger.healthy
        ledger.charge(record(key="other", images=3))  # other keys are not held up
        assert ledger.healthy
    ledger.charge(record(images=2))
    assert ledger.images_used("k") == 3
    ledger.close()
    with pytest.raises(LedgerUnavailableError):
        ledger.charge(record())


def test_an_unreachable_postgres_ledger_is_unavailable_and_its_password_is_not_shown() -> None:
    from tests.helpers import free_port

    url = f"postgresql://blackvip:hunter2@127.0.0.1:{free_port()}/blackvip"  # nothing listens there
    with pytest.raises(LedgerUnavailableError, match=r"blackvip:\*\*\*@127\.0\.0\.1") as failed:
        Ledger(url, LedgerLimits(busy_timeout_s=1.0))
    assert "hunter2" not in str(failed.value)


def test_a_sql_ascii_database_gives_text_back_as_text(postgres) -> None:
    """initdb in a C locale makes SQL_ASCII databases, where psycopg handed text back as bytes: a new
    key's totals row was not found under its str id and every first charge failed (KeyError, a 500).
    The ledger's connections speak UTF8 whatever the database's encoding."""
    ledger = Ledger(postgres.database(encoding="SQL_ASCII"))
    task = StoredTask("t-\u00e9", "k\u00e9y", ["caf\u00e9", "\u732b"], ["a photo of a {}."])
    ledger.charge(QueryRecord("k\u00e9y", Endpoint.TASKS, task.task_id, None, 0, 0, 10, 2, 0.0), task=task)
    ledger.charge(QueryRecord("k\u00e9y", Endpoint.LOSS, task.task_id, "r1", 3, 1, 10, 0, 0.003))
    assert ledger.images_used("k\u00e9y") == 3
    assert ledger.load_task(task.task_id, "k\u00e9y") == task
    assert ledger.keys.totals()["k\u00e9y"].images == 3
    ledger.close()

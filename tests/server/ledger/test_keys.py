"""The ledger's keys table and usage reports: the SQLite schema's migration from version 2, then on
both engines (a real SQLite file and a real PostgreSQL database) the key store, per-key quotas checked
inside the charge (concurrent charges included), and the per-request rows and per-period sums that
exports and ``/v1/usage/periods`` read."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from server.ledger import Ledger, LedgerLimits, QueryRecord, QuotaExceededError
from server.ledger.interface import KeyExistsError, KeyLimits, ManagedKey, UnknownKeyError
from server.ledger.schema import _V2_TABLES, SCHEMA_VERSION
from shared.protocol import Endpoint


def record(key: str, images: int, price: float = 1.0, endpoint: Endpoint = Endpoint.LOGITS) -> QueryRecord:
    return QueryRecord(key, endpoint, "t", None, images, 1, 100, 0, images * price / 1000)


def managed(key_id: str, **limits: float | None) -> ManagedKey:
    return ManagedKey(key_id, f"hash-of-{key_id}", f"label {key_id}", 1000.0, None, KeyLimits(**limits))


def test_a_version_2_ledger_gains_the_keys_table_and_keeps_every_count(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_V2_TABLES)
        db.execute(
            "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes,"
            " texts, cost) VALUES (5, 'k', 'logits', 't', 'r1', 7, 1, 10, 0, 0.007)"
        )
        db.execute("INSERT INTO key_usage VALUES ('k', 1, 7, 0.007)")
        db.execute("PRAGMA user_version = 2")
    ledger = Ledger(path)
    assert ledger._read("PRAGMA user_version")[0][0] == SCHEMA_VERSION == 6
    assert ledger.images_used("k") == 7 and ledger.keys.load() == []
    assert [row.request_id for row in ledger.reports.rows(None, None, None)] == ["r1"]
    ledger.keys.create(managed("key-a", quota_images=3))
    ledger.close()
    assert Ledger(path).keys.get("key-a").limits == KeyLimits(quota_images=3)  # survives reopening


def test_the_key_store_creates_lists_revokes_and_changes_limits(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target)
    ledger.keys.create(managed("key-a", quota_images=10, rate_per_s=2.0))
    ledger.keys.create(managed("key-b"))
    with pytest.raises(KeyExistsError):
        ledger.keys.create(managed("key-a"))
    with pytest.raises(KeyExistsError):  # the same hash under another id
        ledger.keys.create(ManagedKey("key-c", "hash-of-key-a", "x", 1.0))
    assert ledger.healthy  # a refused key is no failure of the ledger
    assert [key.key_id for key in ledger.keys.load()] == ["key-a", "key-b"]
    revoked = ledger.keys.revoke("key-a", when=2000.0)
    assert revoked.revoked == 2000.0
    assert ledger.keys.revoke("key-a", when=3000.0).revoked == 2000.0  # revoked at its first time
    changed = ledger.keys.set_limits("key-b", KeyLimits(quota_cost=0.5))
    assert changed.limits == KeyLimits(quota_cost=0.5) and changed.revoked is None
    for call in (lambda: ledger.keys.get("nope"), lambda: ledger.keys.revoke("nope", 1.0),
                 lambda: ledger.keys.set_limits("nope", KeyLimits())):  # fmt: skip
        with pytest.raises(UnknownKeyError, match="nope"):
            call()
    ledger.charge(record("key-b", 4))
    assert ledger.keys.totals()["key-b"].images == 4


def test_a_keys_own_quotas_and_the_servers_default(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(quota_images=10))
    ledger.keys.create(managed("own", quota_images=20, quota_cost=0.015))
    ledger.keys.create(managed("cost-only", quota_cost=1.0))
    ledger.charge(record("own", 12))  # above the default of 10: its own quota of 20 rules
    with pytest.raises(QuotaExceededError, match="cost quota exhausted") as refused:
        ledger.charge(record("own", 4))  # 16 images fit; 0.016 in cost does not
    assert refused.value.kind == "cost"
    ledger.charge(record("own", 3))  # 0.015 exactly: a quota reached exactly is allowed
    assert ledger.quota("own").cost_left == pytest.approx(0.0) and ledger.quota("own").images_left == 5
    ledger.charge(record("cost-only", 10))  # no image quota of its own: the default 10 applies
    with pytest.raises(QuotaExceededError, match="image quota exhausted: 10 of 10"):
        ledger.charge(record("cost-only", 1))
    ledger.charge(record("static-key", 10))  # a key from --api-keys: the default, no cost quota
    assert (ledger.quota("static-key").quota_images, ledger.quota("static-key").quota_cost) == (10, None)
    assert ledger.images_used("own") == 15 and ledger.images_used("cost-only") == 10


def test_concurrent_charges_never_cross_a_keys_quota(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target)
    ledger.keys.create(managed("k", quota_images=100))
    sizes = [(7 * i) % 11 + 1 for i in range(60)]  # 1..11 images, 60 charges, far more than 100 in all
    refused: list[int] = []
    lock = threading.Lock()

    def charge(batch: list[int]) -> None:
        for images in batch:
            try:
                ledger.charge(record("k", images))
            except QuotaExceededError:
                with lock:
                    refused.append(images)

    threads = [threading.Thread(target=charge, args=(sizes[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    used = ledger.images_used("k")
    charged = sum(sizes) - sum(refused)
    assert used == charged <= 100
    assert all(used + images > 100 for images in refused)  # each refusal was needed, even at the end


def test_rows_and_period_sums_equal_the_ledgers_totals(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target)
    with ledger._transaction() as db:  # rows at chosen times: around hour and day boundaries
        for ts, key, images in [(3599.5, "a", 1), (3600.0, "a", 2), (7300.0, "a", 4), (86_400.0, "a", 8),
                                (3700.0, "b", 16)]:  # fmt: skip
            db.execute(
                "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes,"
                " bytes, texts, cost) VALUES (?, ?, 'logits', 't', NULL, ?, 1, 10, 0, ?)",
                (ts, key, images, images / 1000),
            )
    hours = ledger.reports.by_period("a", 3600, None, None)
    assert [(p.start, p.requests, p.images) for p in hours] == [
        (0.0, 1, 1), (3600.0, 1, 2), (7200.0, 1, 4), (86_400.0, 1, 8)
    ]  # fmt: skip
    days = ledger.reports.by_period("a", 86_400, None, None)
    assert [(p.start, p.requests, p.images) for p in days] == [(0.0, 3, 7), (86_400.0, 1, 8)]
    window = list(ledger.reports.rows(3600.0, 86_400.0, None))  # [since, until)
    assert [(row.key_id, row.images) for row in window] == [("a", 2), ("a", 4), ("b", 16)]  # as charged
    assert [row.images for row in ledger.reports.rows(None, None, "b")] == [16]
    everything = list(ledger.reports.rows(None, None, None))
    assert sum(row.images for row in everything) == sum(p.images for p in days) + 16


def test_an_export_of_many_rows_streams_every_one_in_order(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target)
    with ledger._transaction() as db:
        db.executemany(
            "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes,"
            " texts, cost) VALUES (?, 'k', 'loss', 't', ?, 1, 1, 10, 0, 0.001)",
            [(1000.0 + i, f"r{i}") for i in range(12_345)],  # more than two pages of reads
        )
    ids = [row.request_id for row in ledger.reports.rows(None, None, "k")]
    assert ids == [f"r{i}" for i in range(12_345)]

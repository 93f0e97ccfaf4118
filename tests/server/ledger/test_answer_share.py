"""The answer store shared fairly between keys, on both engines (``ledger_target``): one key's stored
answers take at most its share of the store (its own oldest dropped beyond it), the store over its size
drops the oldest answers of the key holding the most, never another key's answer meanwhile; dropped
answers keep their ids (charged once); each key's running figure is the sum of its stored answers' bytes
after charges, evictions, ids taken over and prunes; and a version 4 ledger gets its figures computed."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from server.ledger import Answer, DuplicateRequestError, Ledger, LedgerLimits, QueryRecord
from server.ledger.schema import SCHEMA_VERSION
from shared.protocol import Endpoint


def record(key: str, request_id: str) -> QueryRecord:
    return QueryRecord(key, Endpoint.LOGITS, "t", request_id, 1, 1, 100, 0, 0.001)


def answer(size: int, fill: bytes = b"x") -> Answer:
    return Answer(fill * size, "application/msgpack")


def stored(ledger: Ledger, key: str, request_id: str) -> bool:
    seen = ledger.recall(key, request_id)
    assert seen is not None  # the id is always kept: a dropped answer's retry is 410, never a new charge
    return seen.answer is not None


def sums_by_key(ledger: Ledger) -> dict[str, int]:
    rows = ledger._read("SELECT key_id, SUM(answer_bytes) FROM idempotency GROUP BY key_id")
    return {key: int(total) for key, total in rows if total}


def figures_by_key(ledger: Ledger) -> dict[str, int]:
    return {
        key: int(total) for key, total in ledger._read("SELECT key_id, bytes FROM answer_store_keys") if total
    }


def test_one_key_filling_the_store_cannot_evict_another_keys_answer(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(replay_store_bytes=1000, replay_store_key_share=0.25))
    ledger.charge(record("bob", "b-1"), remember=("h", answer(100, b"b")))
    for index in range(20):  # 2,000 bytes of answers: twice the whole store
        ledger.charge(record("alice", f"a-{index}"), remember=("h", answer(100)))
    seen = ledger.recall("bob", "b-1")
    assert seen is not None and seen.answer == answer(100, b"b")  # bob's retry still gets its answer
    assert [index for index in range(20) if stored(ledger, "alice", f"a-{index}")] == [18, 19]  # her newest
    assert ledger.key_stored_answer_bytes("alice") == 200 and ledger.key_stored_answer_bytes("bob") == 100
    assert ledger.stored_answer_bytes() == 300
    with pytest.raises(DuplicateRequestError):  # a dropped answer's id still refuses a second charge
        ledger.charge(record("alice", "a-0"), remember=("h", answer(100)))
    assert ledger.images_used("alice") == 20
    ledger.charge(record("alice", "big"), remember=("h", answer(251)))  # over a key's share: id only
    assert not stored(ledger, "alice", "big") and stored(ledger, "alice", "a-19")
    ledger.close()


def test_over_the_store_the_key_holding_the_most_loses_its_oldest(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(replay_store_bytes=1000, replay_store_key_share=0.45))
    for key, count in (("a", 4), ("b", 3), ("c", 3)):  # a's answers are the oldest of all
        for index in range(count):
            ledger.charge(record(key, f"{key}-{index}"), remember=("h", answer(100)))
    assert ledger.stored_answer_bytes() == 1000
    ledger.charge(record("c", "c-3"), remember=("h", answer(50)))  # 1,050: a holds the most (400)
    assert not stored(ledger, "a", "a-0") and stored(ledger, "a", "a-1")
    ledger.charge(record("c", "c-4"), remember=("h", answer(100)))  # 1,050: now c holds the most (450)
    assert not stored(ledger, "c", "c-0") and stored(ledger, "a", "a-1")  # not the oldest overall (a-1)
    assert all(stored(ledger, "b", f"b-{index}") for index in range(3))
    assert figures_by_key(ledger) == sums_by_key(ledger) == {"a": 300, "b": 300, "c": 350}
    assert ledger.stored_answer_bytes() == 950
    ledger.close()


def test_each_keys_figure_is_the_sum_of_its_stored_answers(ledger_target: Path | str) -> None:
    limits = LedgerLimits(
        idempotency_window_s=0.5, replay_ttl_s=0.25, replay_store_bytes=3000, replay_store_key_share=0.4
    )
    ledger = Ledger(ledger_target, limits)
    rng = random.Random(5)
    for _ in range(3):
        for index in range(40):
            key = rng.choice(["k0", "k1", "k2", "k3"])
            try:  # ids come back: refused inside their window, taken over after it
                ledger.charge(record(key, f"r-{index % 25}"), remember=("h", answer(rng.randint(0, 700))))
            except DuplicateRequestError:
                pass
        assert figures_by_key(ledger) == sums_by_key(ledger)
        assert all(total <= 1200 for total in figures_by_key(ledger).values())  # each within its share
        assert ledger.stored_answer_bytes() == sum(sums_by_key(ledger).values()) <= 3000
        time.sleep(0.3)  # past the TTL: the prune drops answers, and forgets ids past their window
        ledger.prune()
        assert figures_by_key(ledger) == sums_by_key(ledger)
    time.sleep(0.3)
    assert ledger.prune() > 0 and figures_by_key(ledger) == sums_by_key(ledger) == {}
    assert ledger.stored_answer_bytes() == 0
    ledger.close()


def test_a_version_4_ledger_gets_each_keys_figure(ledger_target: Path | str) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(replay_store_key_share=1.0))
    for key, sizes in (("a", [10, 20, 30]), ("b", [5]), ("c", [0])):
        for index, size in enumerate(sizes):
            ledger.charge(record(key, f"r-{index}"), remember=("h", answer(size)))
    ledger.close()
    _as_version_4(ledger_target)  # what version 4 had: no per-key figures, no index by key

    migrated = Ledger(ledger_target, LedgerLimits(replay_store_bytes=100, replay_store_key_share=0.5))
    sqlite = isinstance(ledger_target, Path)
    version = "PRAGMA user_version" if sqlite else "SELECT version FROM blackvip_schema"
    assert migrated._read(version)[0][0] == SCHEMA_VERSION == 6
    assert figures_by_key(migrated) == {"a": 60, "b": 5}
    migrated.charge(record("a", "r-3"), remember=("h", answer(15)))  # 75 > a's share (50): r-0, r-1 go
    assert [stored(migrated, "a", f"r-{index}") for index in range(4)] == [False, False, True, True]
    assert figures_by_key(migrated) == sums_by_key(migrated) == {"a": 45, "b": 5}
    migrated.close()


def _as_version_4(target: Path | str) -> None:
    statements = [
        "DROP INDEX idempotency_answers_by_key",
        "DROP TABLE answer_store_keys",
        "ALTER TABLE tasks DROP COLUMN access",  # version 6's columns
        "ALTER TABLE api_keys DROP COLUMN levels",
    ]
    if isinstance(target, Path):
        with sqlite3.connect(target) as db:
            for statement in [*statements, "PRAGMA user_version = 4"]:
                db.execute(statement)
        return
    with psycopg.connect(target, autocommit=True) as db:
        for statement in [*statements, "UPDATE blackvip_schema SET version = 4"]:
            db.execute(statement)

from __future__ import annotations

from pathlib import Path

from server.ledger import Ledger, QueryRecord, StoredTask


def record(key: str = "k", images: int = 4, request_id: str | None = None) -> QueryRecord:
    return QueryRecord(
        key_id=key,
        endpoint="logits",
        task_id="t",
        request_id=request_id,
        images=images,
        batch_passes=1,
        bytes=100,
        texts=0,
        cost=images / 1000,
    )


def test_counts_survive_reopening_and_are_per_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    assert ledger.record_query(record(images=4)) and ledger.record_query(record(images=6))
    ledger.record_query(record(key="other", images=1))
    ledger.record_rejection("k", "/v1/x", 422, "invalid_values")
    ledger.save_task(StoredTask("t", "k", ["a", "b"], ["{}"]))
    ledger.close()  # no clean-up beyond commits: each write was already durable

    reopened = Ledger(path)
    assert reopened.images_used("k") == 10 and reopened.images_used("other") == 1
    logits = reopened.usage_by_endpoint("k")["logits"]
    assert (logits["requests"], logits["images"], logits["bytes"]) == (2, 10, 200)
    assert reopened.rejections_by_status("k") == {"422": 1}
    assert reopened.load_task("t", "k") == StoredTask("t", "k", ["a", "b"], ["{}"])
    assert reopened.load_task("t", "other") is None


def test_a_request_id_is_charged_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger.record_query(record(request_id="r1"))
    assert not ledger.record_query(record(request_id="r1"))
    assert ledger.images_used("k") == 4
    assert ledger.usage_by_endpoint("k")["logits"]["requests"] == 1


def test_ledger_runs_in_wal_mode(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

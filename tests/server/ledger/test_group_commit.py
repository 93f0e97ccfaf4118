"""Group commit on a real ledger file: charges that arrive while a commit runs share the next one,
and a charge that refuses itself (over quota, a duplicate request id) is rolled back alone while
the others in its transaction are committed."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from server.ledger import DuplicateRequestError, Ledger, LedgerLimits, QueryRecord, QuotaExceededError
from shared.protocol import Endpoint


def record(key: str, images: int, request_id: str | None = None) -> QueryRecord:
    return QueryRecord(key, Endpoint.LOGITS, "t", request_id, images, 1, 100, 0, images / 1000)


def test_charges_waiting_for_a_commit_share_the_next_and_refusals_stay_their_own(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3", LedgerLimits(quota_images=10))
    ledger.charge(record("dup-key", 1, request_id="r"), remember=("h", None))
    outcome: dict[str, object] = {}

    def charge(name: str, rec: QueryRecord, remember=None) -> None:
        try:
            ledger.charge(rec, remember=remember)
            outcome[name] = "charged"
        except Exception as exc:
            outcome[name] = type(exc)

    calls = {
        "first": (record("a", 1),),
        "a-fits": (record("a", 8),),
        "a-over": (record("a", 5),),  # 1 + 8 + 5 > 10: refused inside the shared transaction
        "b": (record("b", 3),),
        "dup": (record("dup-key", 1, request_id="r"), ("h", None)),
    }
    with ledger.db._lock:  # the first charge leads and waits here; the others pile up behind it
        threads = {name: threading.Thread(target=charge, args=(name, *args)) for name, args in calls.items()}
        threads["first"].start()
        deadline = time.monotonic() + 10
        while not ledger.db.group._leading:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for name in ("a-fits", "a-over", "b", "dup"):
            threads[name].start()
            while len(ledger.db.group._pending) < list(calls).index(name):
                assert time.monotonic() < deadline
                time.sleep(0.005)
    for thread in threads.values():
        thread.join(timeout=30)
    assert outcome == {
        "first": "charged",
        "a-fits": "charged",
        "a-over": QuotaExceededError,
        "b": "charged",
        "dup": DuplicateRequestError,
    }
    assert ledger.db.group.commits == 3  # the one before, the first alone, then the other four at once
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        rows = dict(db.execute("SELECT key_id, images FROM key_usage").fetchall())
        assert rows == {"a": 9, "b": 3, "dup-key": 1}
        assert db.execute("SELECT COUNT(*) FROM queries").fetchone()[0] == 4
    ledger.close()


def test_a_failed_transaction_charges_none_of_its_group(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.close()
    errors = []
    for images in (1, 2):
        try:
            ledger.charge(record("a", images))
        except Exception as exc:
            errors.append(type(exc).__name__)
    assert errors == ["LedgerUnavailableError", "LedgerUnavailableError"]

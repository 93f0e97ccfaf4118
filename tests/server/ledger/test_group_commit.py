"""Group commit on both engines (a real SQLite file, a real PostgreSQL database): charges that arrive
while a commit runs share the next one, and a charge that refuses itself (over quota, a duplicate
request id) is rolled back alone while the others in its transaction are committed. Then replicas
charging the same keys in every order, with stored answers and the prune running beside them: no
deadlock, no lost or doubled count, and the stored answers' running total equal to their bytes."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from server.ledger import (
    Answer,
    DuplicateRequestError,
    Ledger,
    LedgerLimits,
    QueryRecord,
    QuotaExceededError,
)
from shared.protocol import Endpoint


def record(key: str, images: int, request_id: str | None = None) -> QueryRecord:
    return QueryRecord(key, Endpoint.LOGITS, "t", request_id, images, 1, 100, 0, images / 1000)


@contextmanager
def writer_held(ledger: Ledger, key: str) -> Iterator[None]:
    """Hold the ledger's writer: SQLite's one writing connection, or (PostgreSQL) ``key``'s totals row,
    locked by another replica's transaction."""
    if isinstance(ledger.target, Path):
        with ledger.db._lock:
            yield
        return
    with psycopg.connect(str(ledger.target)) as other:
        other.execute("SELECT images FROM key_usage WHERE key_id = %s FOR UPDATE", (key,))
        yield


def test_charges_waiting_for_a_commit_share_the_next_and_refusals_stay_their_own(
    ledger_target: Path | str,
) -> None:
    ledger = Ledger(ledger_target, LedgerLimits(quota_images=10))
    ledger.charge(record("a", 0))  # key a has its totals row (PostgreSQL: the row the test holds)
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
    with writer_held(ledger, "a"):  # the first charge leads and waits here; the others pile up behind it
        threads = {name: threading.Thread(target=charge, args=(name, *args)) for name, args in calls.items()}
        threads["first"].start()
        deadline = time.monotonic() + 10
        while not ledger.group._leading:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for name in ("a-fits", "a-over", "b", "dup"):
            threads[name].start()
            while len(ledger.group._pending) < list(calls).index(name):
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
    assert ledger.group.commits == 4  # the two before, the first alone, then the other four at once
    rows = dict(ledger._read("SELECT key_id, images FROM key_usage"))
    assert rows == {"a": 9, "b": 3, "dup-key": 1}
    assert ledger._read("SELECT COUNT(*) FROM queries")[0][0] == 5
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


def test_a_group_making_a_key_row_never_holds_a_later_key_while_it_waits(postgres) -> None:
    """The deadlock CI met: a group of keys ``k1`` (new) and ``k2`` (existing) once locked ``k2`` first,
    then waited to make ``k1``, which another replica had just made and which then waited for ``k2``.
    Rows are now made or locked in the keys' order, so the other replica gets ``k2`` at once."""
    from server.ledger.batch import begin_batch

    ledger = Ledger(postgres.database())
    ledger.charge(record("k2", 1))
    failures: list[BaseException] = []

    def group_of_k1_and_k2() -> None:
        try:
            with ledger.db.transaction(pipelined=True) as db:
                begin_batch(db, ledger.dialect, ["k1", "k2"], None).quotas  # noqa: B018
        except BaseException as exc:
            failures.append(exc)

    with psycopg.connect(str(ledger.target)) as replica:
        replica.execute("SET lock_timeout = 10000")
        replica.execute("INSERT INTO key_usage VALUES ('k1', 0, 0, 0)")  # made, not committed yet
        group = threading.Thread(target=group_of_k1_and_k2)
        group.start()
        deadline = time.monotonic() + 10
        while not replica.execute(  # the group waits for the replica's k1
            "SELECT COUNT(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()[0]:
            assert time.monotonic() < deadline and group.is_alive()
            time.sleep(0.01)
        try:
            replica.execute("SELECT images FROM key_usage WHERE key_id = 'k2' FOR UPDATE")
        except psycopg.Error as exc:
            failures.append(exc)
        replica.rollback()
        group.join(timeout=30)
    assert not failures, failures
    assert ledger.images_used("k2") == 1
    ledger.close()


def test_replicas_charging_the_same_keys_beside_the_prune_lose_and_double_nothing(
    ledger_target: Path | str,
) -> None:
    # 4 keys, each up to 1,600 bytes of answers: charges drop their own key's oldest and the largest key's
    limits = LedgerLimits(
        idempotency_window_s=0.6, replay_ttl_s=0.3, replay_store_bytes=4000, replay_store_key_share=0.4
    )
    Ledger(ledger_target).close()
    replicas = [Ledger(ledger_target, limits) for _ in range(3)]
    keys = [f"k{i}" for i in range(4)]
    charged = {key: 0 for key in keys}
    failures: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def charge(replica: Ledger, seed: int) -> None:
        rng = random.Random(seed)
        for index in range(60):
            key = rng.choice(keys)
            request_id = f"{seed}-{index % 40}"  # ids come back after their window: taken over
            stored = Answer(b"a" * rng.randint(1, 900), "m")
            try:
                replica.charge(record(key, 1, request_id), remember=("h", stored))
            except DuplicateRequestError:
                continue
            except BaseException as exc:  # a deadlock or a lock timeout would land here
                failures.append(exc)
                return
            with lock:
                charged[key] += 1

    def prune() -> None:
        while not stop.is_set():
            replicas[0].prune()
            time.sleep(0.01)

    pruner = threading.Thread(target=prune)
    pruner.start()
    threads = [threading.Thread(target=charge, args=(replicas[i % 3], i)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    pruner.join()
    assert not failures, failures
    assert {key: replicas[1].images_used(key) for key in keys} == charged
    assert replicas[2]._read("SELECT COUNT(*) FROM queries")[0][0] == sum(charged.values())
    stored = replicas[0]._read("SELECT COALESCE(SUM(answer_bytes), 0) FROM idempotency")[0][0]
    assert replicas[0].stored_answer_bytes() == stored
    by_key = replicas[0]._read("SELECT key_id, SUM(answer_bytes) FROM idempotency GROUP BY key_id")
    assert {key: replicas[0].key_stored_answer_bytes(key) for key in keys} == {
        **{key: 0 for key in keys},
        **{key: int(total) for key, total in by_key},
    }
    for replica in replicas:
        replica.close()

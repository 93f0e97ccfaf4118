"""``blackvip-server keys ...`` and ``ledger export`` on a real ledger file, run in-process: a key is
printed once and only its hash is stored; list, revoke and set-quota; exports whose rows sum to the
ledger's totals; and clear errors for bad arguments."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from server.admin import admin_main
from server.ledger import Ledger, QueryRecord
from server.settings import hash_api_key
from shared.protocol import Endpoint


def run(*argv: str, ledger: Path) -> tuple[int, str]:
    """The exit status (argparse's own included) and what the command printed to ``out``."""
    out = io.StringIO()
    try:
        status = admin_main([*argv, "--ledger", str(ledger)], env={}, out=out)
    except SystemExit as exc:  # argparse refuses bad arguments with status 2
        status = int(exc.code or 0)
    return status, out.getvalue()


def test_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    status, printed = run("keys", "create", "--label", "alice", "--quota-images", "50", "--rate", "120/min",
                          ledger=path)  # fmt: skip
    secret = printed.strip()
    assert status == 0 and secret.startswith("bvk_") and len(secret) > 40
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file and its WAL
    assert secret.encode() not in stored and hash_api_key(secret).encode() in stored
    _, listed = run("keys", "list", "--json", ledger=path)
    (key,) = json.loads(listed)
    assert secret not in listed
    limits = (key["label"], key["quota_images"], key["quota_cost"], key["rate_per_s"])
    assert limits == ("alice", 50, None, 2.0)
    assert key["key_id"] == "key-" + hash_api_key(secret)[:12] and key["revoked"] is None
    _, again = run("keys", "create", "--label", "alice", ledger=path)
    assert again.strip() != secret  # every key is new, whatever its label


def test_list_revoke_and_set_quota(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    run("keys", "create", "--label", "team-a", "--quota-cost", "2.5", ledger=path)
    _, listed = run("keys", "list", "--json", ledger=path)
    key_id = json.loads(listed)[0]["key_id"]
    with closing(Ledger(path)) as ledger:
        ledger.charge(QueryRecord(key_id, Endpoint.LOGITS, "t", None, 12, 1, 10, 0, 0.012))
    status, said = run("keys", "set-quota", key_id, "--quota-images", "100", "--quota-cost", "none",
                       ledger=path)  # fmt: skip
    assert status == 0 and "quota images 100, quota cost -, rate -" in said
    assert run("keys", "revoke", key_id, ledger=path)[0] == 0
    _, table = run("keys", "list", ledger=path)
    header, row = table.splitlines()
    assert header.split() == ["id", "label", "created", "status", "quota", "images", "quota", "cost", "rate",
                              "levels", "requests", "images", "cost"]  # fmt: skip
    cells = row.split()
    assert cells[:2] == [key_id, "team-a"] and cells[3] == "revoked"
    assert cells[-7:] == ["100", "-", "-", "all", "1", "12", "0.012"]  # quotas, rate, levels, then the usage


def test_a_keys_access_levels_are_set_at_creation_and_by_set_quota(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    status, _ = run("keys", "create", "--label", "narrow", "--levels", "logits,top-k,logits", ledger=path)
    assert status == 0
    (key,) = json.loads(run("keys", "list", "--json", ledger=path)[1])
    assert key["levels"] == ["logits", "top-k"]  # each once, in the order given
    with closing(Ledger(path)) as ledger:
        assert ledger.quota(key["key_id"]).levels == ("logits", "top-k")
    status, said = run("keys", "set-quota", key["key_id"], "--levels", "label", ledger=path)
    assert status == 0 and said.strip().endswith("levels label")
    status, said = run("keys", "set-quota", key["key_id"], "--levels", "none", ledger=path)
    assert status == 0 and said.strip().endswith("levels all")
    (key,) = json.loads(run("keys", "list", "--json", ledger=path)[1])
    assert key["levels"] is None


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["keys", "revoke", "key-000000000000"], 1, "no key with id 'key-000000000000'"),
        (["keys", "set-quota", "key-000000000000", "--rate", "1/s"], 1, "no key with id"),
        (
            ["keys", "set-quota", "key-000000000000"],
            2,
            "needs --quota-images, --quota-cost, --rate or --levels",
        ),
        (["keys", "create", "--label", "x", "--levels", "logits,full"], 2, "no access level 'full'"),
        (["keys", "create", "--label", "x", "--levels", ","], 2, "name at least one access level"),
        (["keys", "create", "--label", "x", "--rate", "fast"], 2, "not a rate: 'fast'"),
        (["keys", "create", "--label", "x", "--rate", "0/s"], 2, "must be above zero"),
        (["keys", "create", "--label", "x", "--quota-images", "-1"], 2, "cannot be negative"),
        (["keys", "create", "--label", "x", "--quota-cost", "nan"], 2, "finite number"),
        (["keys", "create", "--label", " "], 2, "a label is 1-200 printable characters"),
        (["ledger", "export", "--since", "last week"], 2, "not an ISO 8601 time: 'last week'"),
        (["ledger", "export", "--since", "2025-02-01", "--until", "2025-01-01"], 1, "must be before --until"),
    ],
)
def test_bad_arguments_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], status: int, message: str
) -> None:
    path = tmp_path / "l.sqlite3"
    Ledger(path).close()
    assert run(*argv, ledger=path) == (status, "")
    assert message in capsys.readouterr().err


def test_commands_other_than_create_need_an_existing_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["keys", "list"], ["ledger", "export"]):
        assert run(*argv, ledger=tmp_path / "missing.sqlite3")[0] == 1
        assert "no ledger at" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite3").exists()


def test_a_ledger_from_newer_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    assert run("keys", "list", ledger=path)[0] == 1
    assert "newer blackvip-server" in capsys.readouterr().err


def test_exports_sum_to_the_ledgers_totals_within_the_window_and_key(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    with closing(Ledger(path)) as ledger, ledger._transaction() as db:
        for i in range(30):  # charges at chosen times: 2025-01-01T00:00Z + i hours
            db.execute(
                "INSERT INTO queries (ts, key_id, endpoint, task_id, request_id, images, batch_passes, bytes,"
                " texts, cost) VALUES (?, ?, ?, 't', ?, ?, 1, 100, 0, ?)",
                (1735689600.0 + 3600 * i, f"key-{i % 3}", ["logits", "loss"][i % 2], f"r{i}", i, i * 0.0015),
            )
    window = ["--since", "2025-01-01T05:00:00Z", "--until", "2025-01-01T20:00+00:00"]  # hours 5..19
    status, text = run("ledger", "export", "--format", "csv", *window, ledger=path)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 0 and [int(row["images"]) for row in rows] == list(range(5, 20))
    assert rows[0]["time"] == "2025-01-01T05:00:00+00:00" and rows[0]["request_id"] == "r5"
    _, lines = run("ledger", "export", "--format", "jsonl", "--key", "key-1", ledger=path)
    records = [json.loads(line) for line in lines.splitlines()]
    assert {r["key_id"] for r in records} == {"key-1"}
    assert [r["images"] for r in records] == list(range(1, 30, 3))
    out_file = tmp_path / "all.csv"
    assert run("ledger", "export", "--out", str(out_file), ledger=path) == (0, "")
    exported = list(csv.DictReader(out_file.open()))
    with closing(Ledger(path)) as ledger:
        for key_id in ("key-0", "key-1", "key-2"):
            mine = [row for row in exported if row["key_id"] == key_id]
            for endpoint, totals in ledger.usage_by_endpoint(key_id).items():
                rows_of = [row for row in mine if row["endpoint"] == endpoint]
                assert len(rows_of) == totals["requests"]
                assert sum(int(row["images"]) for row in rows_of) == totals["images"]
                assert sum(float(row["cost"]) for row in rows_of) == pytest.approx(totals["cost"], rel=1e-12)


def test_a_ledger_that_means_postgresql_but_is_no_url_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("keys", "list", ledger=Path("postgresql://u@127.0.0.1:5432/db"))[0] == 2  # // folded
    assert "starts like a PostgreSQL URL but is not one" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the environment's value too, not a traceback
        admin_main(["ledger", "export"], env={"BLACKVIP_LEDGER": "postgres:/db"}, out=io.StringIO())
    assert exit_info.value.code == 2
    assert "starts like a PostgreSQL URL" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

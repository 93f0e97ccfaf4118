from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import KEYS, tiny_argv

pytest_plugins = ["tests.worktree_guard"]  # the run fails if it leaves files outside the ignore rules


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A TestClient on the real app and the real tiny open_clip model, loaded and ready."""
    from fastapi.testclient import TestClient

    from server import create_app, parse_args
    from shared.protocol import Routes

    ledger = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    settings = parse_args(
        tiny_argv(ledger, "--max-batch-images", "16", "--max-request-bytes", "300000"),
        env={"BLACKVIP_API_KEYS": ",".join(KEYS)},
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while client.get(Routes.HEALTH).status_code != 200:
            assert time.monotonic() < deadline, client.get(Routes.HEALTH).json()
            time.sleep(0.05)
        client.settings = settings
        yield client


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One PostgreSQL server for the session, on loopback (tests/engines.py); each test that needs a
    ledger on it takes a fresh database."""
    from tests.engines import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A new, empty ledger on each engine: a SQLite file, or a fresh database's postgresql:// URL."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite3"
    return request.getfixturevalue("postgres").database()

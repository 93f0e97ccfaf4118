"""Health and readiness when the model cannot load: 503 everywhere the model is needed, the ledger
still answers usage, and the operator's callback hears why."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from server import create_app, parse_args
from shared.protocol import ErrorBody, Routes


def test_failed_load_reports_503_and_calls_on_fatal(tmp_path: Path) -> None:
    settings = parse_args(
        [
            "--model",
            "tiny-vit",
            "--checkpoint",
            str(tmp_path / "gone.pt"),
            "--ledger",
            str(tmp_path / "l.sqlite3"),
        ],
        env={},
    )
    heard: list[str] = []
    with TestClient(create_app(settings, on_fatal=heard.append)) as client:
        deadline = time.monotonic() + 60
        while client.get(Routes.HEALTH).json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get(Routes.HEALTH)
        assert health.status_code == 503 and health.json()["status"] == "failed"
        # the reason (a server path) goes to the operator's log and on_fatal, not to anonymous callers
        assert health.json()["detail"] == "the model failed to load" and "gone.pt" not in health.text
        info = client.get(Routes.INFO)
        assert info.status_code == 503
        assert ErrorBody.model_validate(info.json()).error.code.value == "not_ready"
        assert client.get(Routes.USAGE).status_code == 200  # the ledger works without a model
    assert len(heard) == 1 and "gone.pt" in heard[0]

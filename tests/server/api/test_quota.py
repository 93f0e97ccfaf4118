"""A per-key image quota: 429 once exhausted, counted per key, and the refused batch is not charged."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from server import create_app, parse_args
from shared.codec import pack
from shared.protocol import MSGPACK_CONTENT_TYPE, ErrorBody, Routes, WireTensor
from tests.helpers import KEYS, random_images, tiny_argv


def test_quota_exhaustion_is_429_per_key_and_never_charged(tmp_path: Path) -> None:
    settings = parse_args(
        tiny_argv(tmp_path / "l.sqlite3", "--quota-images", "10"), env={"BLACKVIP_API_KEYS": ",".join(KEYS)}
    )
    alice, bob = ({"Authorization": f"Bearer {key}"} for key in KEYS)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get(Routes.HEALTH).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        def send(headers: dict[str, str], n: int):
            task = client.post(Routes.TASKS, json={"class_names": ["a", "b"]}, headers=headers).json()
            body = pack({"images": WireTensor.from_numpy(random_images(n, "uint8")).model_dump()})
            path = Routes.LOGITS.format(task_id=task["task_id"])
            return client.post(path, content=body, headers={**headers, "Content-Type": MSGPACK_CONTENT_TYPE})

        assert send(alice, 6).status_code == 200
        refused = send(alice, 6)  # 6 + 6 > 10
        assert refused.status_code == 429
        error = ErrorBody.model_validate(refused.json()).error
        assert error.code.value == "quota_exceeded" and "6 of 10 used" in error.message
        assert send(alice, 4).status_code == 200  # exactly up to the quota is allowed
        assert send(bob, 10).status_code == 200  # quotas are per key
        usage = client.get(Routes.USAGE, headers=alice).json()
        assert usage["total"]["images"] == 10 and usage["rejected_by_status"] == {"429": 1}

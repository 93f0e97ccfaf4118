"""The client-side query meter."""

from __future__ import annotations

import json

from client._meter import EndpointCount, QueryMeter
from shared.protocol import Endpoint

# --------------------------------------------------------------------------- query meter


def test_query_meter_plus_and_round_trip() -> None:
    first = QueryMeter()
    first.add(Endpoint.LOSS, 10, 1000)
    first.add(Endpoint.LOSS, 5, 500)
    first.add(Endpoint.TASKS, 0, 20)
    second = QueryMeter()
    second.add(Endpoint.LOSS, 2, 200)
    second.add(Endpoint.LOGITS, 7, 700)

    total = first.plus(second)
    assert total.to_dict() == {
        "loss": {"requests": 3, "images": 17, "bytes": 1700},
        "tasks": {"requests": 1, "images": 0, "bytes": 20},
        "logits": {"requests": 1, "images": 7, "bytes": 700},
    }
    assert (total.requests, total.images, total.bytes) == (5, 24, 2420)
    # plus makes a new meter: neither input changes
    assert first.to_dict()["loss"] == {"requests": 2, "images": 15, "bytes": 1500}
    assert "logits" not in first.to_dict()
    assert second.requests == 2

    restored = QueryMeter.from_dict(json.loads(json.dumps(total.to_dict())))
    assert restored.to_dict() == total.to_dict()
    assert restored.by_endpoint["loss"] == EndpointCount(3, 17, 1700)
    # to_dict is a copy
    snapshot = restored.to_dict()
    snapshot["loss"]["images"] = 0
    assert restored.images == 24

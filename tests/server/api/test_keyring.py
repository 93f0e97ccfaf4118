"""The key ring over keys from flags and from a real ledger: who is identified as what, and the refresh
loop, which picks up changes and outlives a ledger it cannot read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from server.api.auth import KeyRing, keep_keys_fresh
from server.errors import APIError
from server.ledger import Ledger
from server.ledger.interface import KeyLimits, ManagedKey
from server.ledger.keys import key_id_for
from server.settings import hash_api_key


def managed(secret: str, revoked: float | None = None, rate: float | None = None) -> ManagedKey:
    digest = hash_api_key(secret)
    return ManagedKey(key_id_for(digest), digest, secret, time.time(), revoked, KeyLimits(rate_per_s=rate))


def refused(ring: KeyRing, secret: str) -> str:
    with pytest.raises(APIError) as info:
        ring.identify(f"Bearer {secret}")
    assert info.value.status == 401
    return info.value.message


def test_keys_from_flags_and_from_the_ledger_side_by_side() -> None:
    ring = KeyRing(frozenset({hash_api_key("flag-key")}))
    ring.refresh([managed("ledger-key", rate=3.0), managed("old-key", revoked=1.0)])
    assert ring.identify("Bearer flag-key").key_id == key_id_for(hash_api_key("flag-key"))
    assert ring.identify("Bearer flag-key").rate_per_s is None
    assert ring.identify("bearer  ledger-key ").rate_per_s == 3.0
    # one answer for a revoked and an unknown key: a guesser learns nothing of which keys once existed
    assert refused(ring, "old-key") == refused(ring, "nobody") == "unknown or revoked API key"
    ring.refresh([])  # a key gone from the table is unknown again
    assert refused(ring, "ledger-key") == "unknown or revoked API key"


def test_an_open_ring_closes_for_good_once_the_ledger_has_a_key() -> None:
    ring = KeyRing(frozenset())
    assert not ring.auth_required and ring.identify(None).key_id == "anonymous"
    ring.refresh([managed("k", revoked=1.0)])  # only a revoked key: still closed
    assert ring.auth_required
    with pytest.raises(APIError, match="missing API key"):
        ring.identify(None)


def test_the_refresh_loop_picks_up_changes_and_outlives_an_unreadable_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ring = KeyRing(frozenset())

    async def scenario() -> None:
        loop = asyncio.create_task(keep_keys_fresh(ring, ledger.keys, every_s=0.01))
        ledger.keys.create(managed("new-key"))
        while not ring.auth_required:  # bounded by the test's timeout, not by a figure of ours
            await asyncio.sleep(0.01)
        assert ring.identify("Bearer new-key").key_id == key_id_for(hash_api_key("new-key"))
        ledger.close()  # every read now fails: the last table stays in force
        await asyncio.sleep(0.1)
        assert not loop.done()
        assert ring.identify("Bearer new-key").key_id == key_id_for(hash_api_key("new-key"))
        loop.cancel()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))

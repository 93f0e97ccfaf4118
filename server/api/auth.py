"""API keys: kept only as SHA-256 hashes; a request is charged to the key's short id.

Keys come from two places: ``--api-keys``/``--keys-file`` (read once at start) and the ledger's keys
table (``blackvip-server keys ...``), which a running server re-reads every ``--keys-refresh-s``
seconds, so a key created, revoked or given another rate is seen within that interval without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from server.errors import APIError
from server.ledger.interface import KeyStore, ManagedKey
from server.ledger.keys import key_id_for
from server.settings import hash_api_key
from shared.protocol import ErrorCode

__all__ = ["ANONYMOUS_KEY_ID", "Identity", "KeyRing", "keep_keys_fresh"]

log = logging.getLogger(__name__)

ANONYMOUS_KEY_ID = "anonymous"


@dataclass(frozen=True)
class Identity:
    key_id: str
    rate_per_s: float | None = None  # the key's request rate limit, if it has one


class KeyRing:
    """With no keys configured (and ``require_keys`` off) the server is open and every query is charged
    to ``anonymous``. Once the ledger's keys table holds any key, revoked ones included, every request
    needs a key: revoking the last key never opens the API."""

    def __init__(self, key_hashes: frozenset[str], require_keys: bool = False) -> None:
        self._static = {digest: Identity(key_id_for(digest)) for digest in key_hashes}
        self._require = require_keys
        self._managed: dict[str, Identity | None] = {}  # hash -> identity; None: revoked

    @property
    def auth_required(self) -> bool:
        return bool(self._static) or self._require or bool(self._managed)

    def refresh(self, keys: Iterable[ManagedKey]) -> None:
        managed = {
            key.key_hash: None if key.revoked is not None else Identity(key.key_id, key.limits.rate_per_s)
            for key in keys
        }
        self._managed = managed  # one assignment: a request sees the old table or the new one

    def identify(self, authorization: str | None) -> Identity:
        """The key for an ``Authorization: Bearer KEY`` header, or a 401."""
        if not self.auth_required:
            return Identity(ANONYMOUS_KEY_ID)
        if not authorization:
            raise APIError(ErrorCode.UNAUTHORIZED, "missing API key: send 'Authorization: Bearer KEY'")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(ErrorCode.UNAUTHORIZED, "Authorization header must be 'Bearer KEY'")
        # Looked up by the SHA-256 of the key: the lookup's timing can tell at most something about a
        # hash, never about a key, so no constant-time comparison is needed.
        digest = hash_api_key(key.strip())
        identity = self._static.get(digest)
        if identity is not None:
            return identity
        identity = self._managed.get(digest)  # None: unknown or revoked
        if identity is None:
            # one answer for both: a guesser must not learn which keys once existed
            raise APIError(ErrorCode.UNAUTHORIZED, "unknown or revoked API key")
        return identity


async def keep_keys_fresh(ring: KeyRing, store: KeyStore, every_s: float) -> None:
    """Re-read the keys table every ``every_s`` seconds until cancelled; a failed read keeps the last
    table and is tried again next time."""
    while True:
        await asyncio.sleep(every_s)
        try:
            keys = await asyncio.to_thread(store.load)
        except Exception as exc:  # the loop must outlive a bad moment of the ledger, or revocations stop
            log.warning("cannot re-read the API keys (keeping the last ones): %s", exc)
            continue
        ring.refresh(keys)

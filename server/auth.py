"""API keys: kept only as SHA-256 hashes; a request is charged to the key's short id."""

from __future__ import annotations

import hmac

from server.errors import APIError
from server.settings import hash_api_key
from shared.protocol import ErrorCode

__all__ = ["ANONYMOUS_KEY_ID", "KeyRing"]

ANONYMOUS_KEY_ID = "anonymous"


class KeyRing:
    """With no keys configured the server is open and every query is charged to ``anonymous``."""

    def __init__(self, key_hashes: frozenset[str]) -> None:
        self._ids = {digest: f"key-{digest[:12]}" for digest in key_hashes}

    @property
    def auth_required(self) -> bool:
        return bool(self._ids)

    def identify(self, authorization: str | None) -> str:
        """The key id for an ``Authorization: Bearer KEY`` header, or a 401."""
        if not self.auth_required:
            return ANONYMOUS_KEY_ID
        if not authorization:
            raise APIError(ErrorCode.UNAUTHORIZED, "missing API key: send 'Authorization: Bearer KEY'")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(ErrorCode.UNAUTHORIZED, "Authorization header must be 'Bearer KEY'")
        digest = hash_api_key(key.strip())
        for known, key_id in self._ids.items():
            if hmac.compare_digest(known, digest):
                return key_id
        raise APIError(ErrorCode.UNAUTHORIZED, "unknown API key")

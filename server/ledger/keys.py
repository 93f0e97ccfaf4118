"""The ledger's ``api_keys`` table (SQLite or PostgreSQL, the same SQL): the ``KeyStore`` of
``server.ledger.interface``, and the key ids and new keys it stores. A charge reads its key's limits
with its totals, in one statement (``server.ledger.quota``)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager

from server.ledger.db import Conn
from server.ledger.interface import KeyExistsError, KeyLimits, KeyTotals, ManagedKey, UnknownKeyError

__all__ = ["KEY_PREFIX", "SqlKeyStore", "key_id_for", "new_api_key", "stored_levels"]

Transaction = Callable[[], AbstractContextManager[Conn]]
Read = Callable[[str, tuple], list[tuple]]

KEY_PREFIX = "bvk_"


def key_id_for(key_hash: str) -> str:
    """The short id a key is charged under: public, derived from the hash, useless as a credential."""
    return f"key-{key_hash[:12]}"


def new_api_key() -> str:
    """A fresh key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


_COLUMNS = "key_id, key_hash, label, created, revoked, quota_images, quota_cost, rate_per_s, levels"


def stored_levels(text: str | None) -> tuple[str, ...] | None:
    """The ``levels`` column: a JSON list of access levels; NULL, every level the server offers."""
    return None if text is None else tuple(json.loads(text))


def _limit_values(limits: KeyLimits) -> tuple:
    levels = None if limits.levels is None else json.dumps(list(limits.levels))
    return (limits.quota_images, limits.quota_cost, limits.rate_per_s, levels)


def _key(row: tuple) -> ManagedKey:
    key_id, key_hash, label, created, revoked, quota_images, quota_cost, rate, levels = row
    limits = KeyLimits(
        None if quota_images is None else int(quota_images),
        None if quota_cost is None else float(quota_cost),
        None if rate is None else float(rate),
        stored_levels(levels),
    )
    return ManagedKey(
        key_id, key_hash, label, float(created), None if revoked is None else float(revoked), limits
    )


class SqlKeyStore:
    """Writes go through the ledger's writing transaction, reads through its reading connection."""

    def __init__(self, transaction: Transaction, read: Read) -> None:
        self._transaction, self._read = transaction, read

    def create(self, key: ManagedKey) -> None:
        with self._transaction() as db:
            # checked first: a constraint failure inside the transaction would read as a broken ledger
            taken = db.execute(
                "SELECT key_id FROM api_keys WHERE key_id = ? OR key_hash = ?", (key.key_id, key.key_hash)
            ).fetchone()
            if taken:
                raise KeyExistsError(f"a key with id {key.key_id} or the same hash exists ({taken[0]})")
            db.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.key_id, key.key_hash, key.label, key.created, key.revoked, *_limit_values(key.limits)),
            )

    def load(self) -> list[ManagedKey]:
        return [_key(row) for row in self._read(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created", ())]

    def get(self, key_id: str) -> ManagedKey:
        rows = self._read(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        if not rows:
            raise UnknownKeyError(key_id)
        return _key(rows[0])

    def revoke(self, key_id: str, when: float) -> ManagedKey:
        self._update(key_id, "UPDATE api_keys SET revoked = COALESCE(revoked, ?) WHERE key_id = ?", (when,))
        return self.get(key_id)

    def set_limits(self, key_id: str, limits: KeyLimits) -> ManagedKey:
        self._update(
            key_id,
            "UPDATE api_keys SET quota_images = ?, quota_cost = ?, rate_per_s = ?, levels = ?"
            " WHERE key_id = ?",
            _limit_values(limits),
        )
        return self.get(key_id)

    def totals(self) -> dict[str, KeyTotals]:
        rows = self._read("SELECT key_id, requests, images, cost FROM key_usage", ())
        return {
            key_id: KeyTotals(int(requests), int(images), float(cost))
            for key_id, requests, images, cost in rows
        }

    def _update(self, key_id: str, sql: str, values: tuple) -> None:
        with self._transaction() as db:
            if db.execute(sql, (*values, key_id)).rowcount != 1:
                raise UnknownKeyError(key_id)

"""The ``blackvip-server keys`` commands: create (the key is printed once, only its hash is stored),
list, revoke, set-quota (its limits and the access levels it may register tasks at). They work through
a ``KeyStore``, so on any ledger backend."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any, TextIO

from server.access_flags import parse_access_levels
from server.ledger.interface import KeyLimits, KeyStore, KeyTotals, ManagedKey
from server.ledger.keys import key_id_for, new_api_key
from server.settings import hash_api_key

__all__ = ["KEY_COMMANDS", "add_key_commands", "limit_changes", "parse_rate"]

KeyCommand = Callable[[KeyStore, argparse.Namespace, TextIO], int]

_PER = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_UNSET = object()  # a limit set-quota leaves as it is
MAX_LABEL_CHARS = 200
_LEVELS_HELP = "access levels the key may register tasks at, comma-separated (default: every level offered)"


def parse_rate(text: str) -> float:
    """Requests a second from ``R``, ``R/s``, ``R/min`` or ``R/h``."""
    number, _, unit = text.strip().partition("/")
    try:
        rate = float(number) / _PER[unit or "s"]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 5/s, 120/min, 1000/h)") from None
    if not (math.isfinite(rate) and rate > 0):
        raise argparse.ArgumentTypeError(f"a rate must be above zero: {text!r}")
    return rate


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of images: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"an image quota cannot be negative: {text!r}")
    return value


def _cost(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a cost: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a cost quota must be a finite number >= 0: {text!r}")
    return value


def _label(text: str) -> str:
    if not text.strip() or len(text) > MAX_LABEL_CHARS or not text.isprintable():
        raise argparse.ArgumentTypeError(f"a label is 1-{MAX_LABEL_CHARS} printable characters")
    return text.strip()


def _levels(text: str) -> tuple[str, ...]:
    """``logits,top-k``: the access levels a key may register tasks at, each once."""
    levels = parse_access_levels(text)
    if not levels:
        raise argparse.ArgumentTypeError("name at least one access level (or none: every level offered)")
    return tuple(dict.fromkeys(level.value for level in levels))


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_or_none


def add_key_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    create = commands.add_parser("create", parents=[common], help="make a key; it is printed only once")
    create.add_argument("--label", type=_label, required=True, help="who or what the key is for")
    create.add_argument("--quota-images", type=_count, help="images this key may send in all")
    create.add_argument("--quota-cost", type=_cost, help="cost this key may run up in all")
    create.add_argument("--rate", type=parse_rate, metavar="R/s", help="requests a second (or R/min, R/h)")
    create.add_argument("--levels", type=_levels, metavar="L1,L2", help=_LEVELS_HELP)
    create.add_argument("--json", action="store_true", help="print the key and its record as JSON")
    listing = commands.add_parser("list", parents=[common], help="label, id, created, quota, usage")
    listing.add_argument("--json", action="store_true")
    revoke = commands.add_parser("revoke", parents=[common], help="the key stops working within seconds")
    revoke.add_argument("key_id", metavar="KEY_ID")
    quota = commands.add_parser("set-quota", parents=[common], help="change a key's limits (none: no limit)")
    quota.add_argument("key_id", metavar="KEY_ID")
    quota.add_argument("--quota-images", type=_or_none(_count), default=_UNSET, metavar="N|none")
    quota.add_argument("--quota-cost", type=_or_none(_cost), default=_UNSET, metavar="X|none")
    quota.add_argument("--rate", type=_or_none(parse_rate), default=_UNSET, metavar="R/s|none")
    quota.add_argument(
        "--levels", type=_or_none(_levels), default=_UNSET, metavar="L1,L2|none", help=_LEVELS_HELP
    )


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _as_dict(key: ManagedKey, used: KeyTotals) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "label": key.label,
        "created": _iso(key.created),
        "revoked": _iso(key.revoked),
        **asdict(key.limits),
        **asdict(used),
    }


def _create(store: KeyStore, args: argparse.Namespace, out: TextIO) -> int:
    secret = new_api_key()
    digest = hash_api_key(secret)
    limits = KeyLimits(args.quota_images, args.quota_cost, args.rate, args.levels)
    key = ManagedKey(key_id_for(digest), digest, args.label, time.time(), None, limits)
    store.create(key)
    if args.json:
        print(json.dumps({"key": secret, **_as_dict(key, KeyTotals())}), file=out)
    else:
        print(f"created {key.key_id} ({key.label}); the key is shown only this once:", file=sys.stderr)
        print(secret, file=out)
    return 0


def _limit(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _level_names(levels: list[str] | tuple[str, ...] | None) -> str:
    return "all" if levels is None else ",".join(levels)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _list(store: KeyStore, args: argparse.Namespace, out: TextIO) -> int:
    keys, totals = store.load(), store.totals()
    records = [_as_dict(key, totals.get(key.key_id, KeyTotals())) for key in keys]
    if args.json:
        print(json.dumps(records, indent=2), file=out)
        return 0
    rows = [["id", "label", "created", "status", "quota images", "quota cost", "rate", "levels",
             "requests", "images", "cost"]]  # fmt: skip
    for record in records:
        status = "active" if record["revoked"] is None else f"revoked {record['revoked']}"
        rows.append([
            record["key_id"], record["label"], record["created"], status,
            _limit(record["quota_images"]), _limit(record["quota_cost"]), _limit(record["rate_per_s"], "/s"),
            _level_names(record["levels"]),
            str(record["requests"]), str(record["images"]), f"{record['cost']:g}",
        ])  # fmt: skip
    print(_table(rows), file=out)
    return 0


def _revoke(store: KeyStore, args: argparse.Namespace, out: TextIO) -> int:
    key = store.revoke(args.key_id, time.time())
    print(f"revoked {key.key_id} ({key.label}) at {_iso(key.revoked)}", file=out)
    return 0


def limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The limits ``set-quota`` was asked to change, by ``KeyLimits`` field."""
    given = {
        "quota_images": args.quota_images,
        "quota_cost": args.quota_cost,
        "rate_per_s": args.rate,
        "levels": args.levels,
    }
    return {name: value for name, value in given.items() if value is not _UNSET}


def _set_quota(store: KeyStore, args: argparse.Namespace, out: TextIO) -> int:
    key = store.get(args.key_id)
    key = store.set_limits(key.key_id, replace(key.limits, **limit_changes(args)))
    limits = key.limits
    print(
        f"{key.key_id} ({key.label}): quota images {_limit(limits.quota_images)}, "
        f"quota cost {_limit(limits.quota_cost)}, rate {_limit(limits.rate_per_s, '/s')}, "
        f"levels {_level_names(limits.levels)}",
        file=out,
    )
    return 0


KEY_COMMANDS: dict[str, KeyCommand] = {
    "create": _create,
    "list": _list,
    "revoke": _revoke,
    "set-quota": _set_quota,
}

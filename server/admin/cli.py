"""``blackvip-server keys ...`` and ``blackvip-server ledger export``: admin commands that work on the
ledger directly (``--ledger PATH|URL`` or ``BLACKVIP_LEDGER``, as the server: a SQLite file or a
``postgresql://`` URL), with or without a server running on it; a running server sees key changes
within its ``--keys-refresh-s``.

    blackvip-server keys create --label L [--quota-images N] [--quota-cost X] [--rate R/s] [--levels L1,L2]
    blackvip-server keys list [--json]
    blackvip-server keys revoke KEY_ID
    blackvip-server keys set-quota KEY_ID [--quota-images N|none] [--quota-cost X|none] [--rate R/s|none]
                                          [--levels L1,L2|none]
    blackvip-server ledger export [--since ISO] [--until ISO] [--format csv|jsonl] [--key KEY_ID] [--out FILE]

Exit status: 0 done, 1 the ledger or the key cannot be used, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import TextIO

from server.admin.keys import KEY_COMMANDS, add_key_commands, limit_changes
from server.ledger import Ledger, LedgerUnavailableError
from server.ledger.export import write_export
from server.ledger.interface import KeyExistsError, UnknownKeyError
from server.ledger.reports import as_utc
from server.ledger.schema import SchemaError
from server.settings import ENV_PREFIX, ServerSettings, ledger_label, ledger_target

__all__ = ["ADMIN_COMMANDS", "AdminError", "admin_main"]

ADMIN_COMMANDS = ("keys", "ledger")


class AdminError(RuntimeError):
    """The command cannot be carried out; the message says why."""


def _iso_time(text: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2025-01-31T12:00Z)") from None


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    default_ledger = env.get(ENV_PREFIX + "LEDGER") or str(ServerSettings().ledger)
    common.add_argument(
        "--ledger",
        type=ledger_target,
        default=default_ledger,  # argparse converts it, so a bad BLACKVIP_LEDGER is a usage error too
        help="the ledger: a SQLite file or a postgresql:// URL (env BLACKVIP_LEDGER)",
    )
    parser = argparse.ArgumentParser(prog="blackvip-server", description="Manage API keys; export usage.")
    groups = parser.add_subparsers(dest="group", required=True)
    keys = groups.add_parser("keys", help="API keys kept in the ledger (only their hashes)")
    add_key_commands(keys.add_subparsers(dest="command", required=True), common)
    ledger = groups.add_parser("ledger", help="read the ledger")
    ledger_commands = ledger.add_subparsers(dest="command", required=True)
    export = ledger_commands.add_parser(
        "export", parents=[common], help="charged requests, one row each (time, key, endpoint, images, cost)"
    )
    export.add_argument("--since", type=_iso_time, help="from this time on (ISO 8601; no zone: UTC)")
    export.add_argument("--until", type=_iso_time, help="before this time (ISO 8601; no zone: UTC)")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--key", metavar="KEY_ID", help="only this key's requests")
    export.add_argument("--out", type=Path, help="write here instead of standard output")
    return parser


def _open(target: Path | str, create: bool) -> Ledger:
    if isinstance(target, Path) and not create and not target.exists():
        raise AdminError(f"no ledger at {target}: pass --ledger PATH (or set BLACKVIP_LEDGER)")
    try:
        return Ledger(target)
    except (SchemaError, LedgerUnavailableError, OSError) as exc:
        raise AdminError(f"cannot open the ledger {ledger_label(target)}: {exc}") from exc


def _export(ledger: Ledger, args: argparse.Namespace, out: TextIO) -> int:
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise AdminError(
            f"--since ({args.since.isoformat()}) must be before --until ({args.until.isoformat()})"
        )
    since = args.since.timestamp() if args.since else None
    until = args.until.timestamp() if args.until else None
    rows = ledger.reports.rows(since, until, args.key)
    if args.out is None:
        count = write_export(rows, args.format, out)
    else:
        with open(args.out, "w", newline="") as handle:
            count = write_export(rows, args.format, handle)
    print(f"exported {count} requests", file=sys.stderr)
    return 0


def admin_main(argv: Sequence[str], env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """Run one admin command; ``out`` (standard output by default) gets what the command prints."""
    env = os.environ if env is None else env
    out = out or sys.stdout
    parser = _parser(env)
    args = parser.parse_args(argv)
    if args.command == "set-quota" and not limit_changes(args):
        parser.error("keys set-quota needs --quota-images, --quota-cost, --rate or --levels")
    try:
        with closing(_open(args.ledger, create=args.command == "create")) as ledger:
            if args.group == "keys":
                return KEY_COMMANDS[args.command](ledger.keys, args, out)
            return _export(ledger, args, out)
    except (AdminError, UnknownKeyError, KeyExistsError, LedgerUnavailableError) as exc:
        print(f"blackvip-server: error: {exc}", file=sys.stderr)
        return 1

"""``blackvip``: the client command line. ``info`` and ``usage`` for now; training comes next."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from client._exceptions import BlackVIPError
from client._sdk import BlackVIPClient

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="blackvip", description="Client of the black-box CLIP service.")
    parser.add_argument(
        "--url",
        default=os.environ.get("BLACKVIP_URL", "http://127.0.0.1:8000"),
        help="server address (env BLACKVIP_URL)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("BLACKVIP_API_KEY"), help="API key (env BLACKVIP_API_KEY)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="print the served model's input contract and limits")
    commands.add_parser("usage", help="print this key's usage as counted by the server")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with BlackVIPClient(args.url, args.api_key) as client:
            result = client.info() if args.command == "info" else client.usage()
    except BlackVIPError as exc:
        print(f"blackvip: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.model_dump(mode="json"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``blackvip usage``: this key's usage as the server counts it, in total (JSON) or per hour or day
(``--by``, a table or ``--json``)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from client._sdk import BlackVIPClient
from shared.protocol import UsagePeriodsResponse

__all__ = ["add_usage_flags", "period_table", "show_usage"]


def _iso_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2025-01-31T12:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def add_usage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", choices=["hour", "day"], help="charged requests, images, cost per UTC period")
    parser.add_argument("--since", type=_iso_time, help="with --by: from this time (ISO 8601; no zone: UTC)")
    parser.add_argument("--until", type=_iso_time, help="with --by: before this time")
    parser.add_argument("--json", action="store_true", help="with --by: JSON instead of a table")


def period_table(usage: UsagePeriodsResponse) -> str:
    """One row per period with usage, then the total."""
    stamp = "%Y-%m-%d %H:00" if usage.by == "hour" else "%Y-%m-%d"
    rows = [[f"period ({usage.by}, UTC)", "requests", "images", "cost"]]
    for period in usage.periods:
        rows.append(
            [period.start.strftime(stamp), str(period.requests), str(period.images), f"{period.cost:.6g}"]
        )
    totals = [sum(p.requests for p in usage.periods), sum(p.images for p in usage.periods)]
    rows.append(["total", str(totals[0]), str(totals[1]), f"{sum(p.cost for p in usage.periods):.6g}"])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"key {usage.key_id}"]
    for row in rows:
        numbers = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *numbers]))
    return "\n".join(lines)


def show_usage(client: BlackVIPClient, args: argparse.Namespace) -> str:
    if args.by is None:
        if args.since or args.until:
            raise SystemExit("blackvip usage: error: --since and --until go with --by hour|day")
        return json.dumps(client.usage().model_dump(mode="json"), indent=2)
    periods = client.usage_by_period(args.by, args.since, args.until)
    return json.dumps(periods.model_dump(mode="json"), indent=2) if args.json else period_table(periods)

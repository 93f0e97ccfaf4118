"""Charged requests written out one row each, as CSV or JSON lines, for billing and analysis.

Each row: ``time`` (ISO 8601, UTC), ``ts`` (the same instant in Unix seconds, as stored), ``key_id``,
``endpoint``, ``task_id``, ``request_id`` (empty when the client sent none), ``images``,
``batch_passes``, ``bytes``, ``texts``, ``cost``. Numbers are written exactly as the ledger holds them,
so sums over the rows equal the ledger's own sums.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Literal, TextIO

from server.ledger.interface import QueryRow

__all__ = ["EXPORT_FIELDS", "ExportFormat", "write_export"]

ExportFormat = Literal["csv", "jsonl"]
EXPORT_FIELDS = (
    "time",
    "ts",
    "key_id",
    "endpoint",
    "task_id",
    "request_id",
    "images",
    "batch_passes",
    "bytes",
    "texts",
    "cost",
)


def _record(row: QueryRow) -> dict[str, object]:
    return {"time": datetime.fromtimestamp(row.ts, UTC).isoformat(), **asdict(row)}


def write_export(rows: Iterable[QueryRow], fmt: ExportFormat, out: TextIO) -> int:
    """Write ``rows`` to ``out``; returns how many were written."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(_record(row))
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(_record(row)) + "\n")
            count += 1
    return count

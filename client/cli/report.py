"""``blackvip report RUN... [--out DIR]``: finished runs side by side (:mod:`client.training.report`):
a markdown table and a CSV of their final numbers, and one picture of test accuracy against training
images queried and against training cost."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.training.report import write_report

__all__ = ["add_report_flags", "run_report"]


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders (finished jobs)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/report"), help="where report.md, .csv, .png go"
    )


def run_report(args: argparse.Namespace) -> None:
    table, files = write_report(args.runs, args.out)
    print(table)
    print(f"table: {files.table}\ncsv: {files.csv}\npicture: {files.picture}")

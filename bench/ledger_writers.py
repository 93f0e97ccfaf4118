"""The ledger's charges per second on SQLite and PostgreSQL, by the number of writing threads, for this
checkout and (``--baseline DIR``) another one, side by side in one run: the cells alternate between the
two trees, so both see the same machine.

Each cell is a child process that imports ``server.ledger`` from its tree and calls ``Ledger.charge``
from ``--writers`` threads, one answered request a call as the server makes it (``--request-ids`` adds a
fresh request id and a stored answer of 5,120 bytes to each), under ``--keys`` keys, on a fresh SQLite
file or a fresh database of one throwaway PostgreSQL (tests/engines.py); the keys' totals are checked
against the images charged.

    git worktree add /tmp/baseline 4176d4a
    python bench/ledger_writers.py --baseline /tmp/baseline --out bench/results/ledger_writers.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: a child imports the ledger of the tree it is given

from tests.engines import PostgresServer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. a git worktree) to compare")
    parser.add_argument("--writers", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--charges", type=int, default=4000, help="charges per cell")
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="cells per tree, engine and writers (median)")
    parser.add_argument("--request-ids", action="store_true", help="a request id and stored answer each")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # JSON: one cell, run in this process
    return parser.parse_args(argv)


def run_cell(target: str, writers: int, charges: int, keys: int, request_ids: bool) -> dict:
    """In the child: ``charges`` charges from ``writers`` threads; charges/s and transactions."""
    from server.ledger import Answer, Ledger, QueryRecord
    from shared.protocol import Endpoint

    ledger = Ledger(Path(target) if "://" not in target else target)
    per_writer = charges // writers

    def write(index: int) -> None:
        for _ in range(per_writer):
            request_id = uuid.uuid4().hex if request_ids else None
            key = f"k{index % keys}"
            record = QueryRecord(key, Endpoint.LOGITS, "t", request_id, 16, 1, 50_000, 0, 0.016)
            ledger.charge(record, remember=("h", Answer(b"a" * 5120, "m")) if request_ids else None)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    assert sum(ledger.images_used(f"k{i}") for i in range(keys)) == 16 * per_writer * writers
    group = getattr(ledger, "group", None) or getattr(ledger.db, "group", None)  # older trees: SQLite only
    transactions = group.commits if group is not None else per_writer * writers
    ledger.close()
    return {"charges_per_s": per_writer * writers / seconds, "transactions": transactions}


def cell(tree: Path, target: str, writers: int, args: argparse.Namespace) -> dict:
    spec = json.dumps([target, writers, args.charges, args.keys, args.request_ids])
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [sys.executable, __file__, "--child", spec], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_cell(*json.loads(args.child))))
        return
    trees = {"this checkout": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    rows = []
    with PostgresServer() as pg, tempfile.TemporaryDirectory() as tmp:
        for engine in ("sqlite", "postgresql"):
            for writers in args.writers:
                runs: dict[str, list[dict]] = {name: [] for name in trees}
                for repeat in range(args.repeats):
                    for name, tree in trees.items():  # alternating: both trees see the same machine
                        sqlite_file = str(Path(tmp) / f"{name[:4]}-{writers}-{repeat}.sqlite3")
                        target = sqlite_file if engine == "sqlite" else pg.database("writers")
                        runs[name].append(cell(tree, target, writers, args))
                rows.append((engine, writers, runs))
    print(render(rows, trees, args))
    if args.out:
        args.out.write_text(render(rows, trees, args) + "\n")


def render(rows: list, trees: dict[str, Path], args: argparse.Namespace) -> str:
    names = list(trees)
    kind = "a fresh request id and a 5,120-byte stored answer each" if args.request_ids else "no request id"
    lines = [
        f"Ledger charges/s (median of {args.repeats}), {args.charges} charges a cell, {args.keys} keys,"
        f" {kind}; {os.cpu_count()} CPUs",
        "",
        "| engine | writers | "
        + " | ".join(f"{n}: charges/s (transactions)" for n in names)
        + (" | ratio |" if len(names) == 2 else " |"),
        "|---|---:|" + "---:|" * (len(names) + (len(names) == 2)),
    ]
    for engine, writers, runs in rows:
        medians = {name: statistics.median(r["charges_per_s"] for r in runs[name]) for name in names}
        cells = [f"{medians[n]:,.0f} ({runs[n][0]['transactions']})" for n in names]
        ratio = [f"{medians[names[0]] / medians[names[1]]:.2f}x"] if len(names) == 2 else []
        lines.append(f"| {engine} | {writers} | " + " | ".join(cells + ratio) + " |")
    if args.baseline:
        lines += ["", f"baseline: {args.baseline}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Scale-out on this machine: images/s and latency for 1, 2 and 3 server replicas on one PostgreSQL
ledger behind nginx (the compose override's balancer) under the same client load, and the ledger's
charges committed per second on SQLite and on PostgreSQL.

Everything runs here on loopback: a throwaway PostgreSQL cluster and nginx (tests/engines.py), real
``blackvip-server`` replicas (tiny-vit, random weights: the serving path, not the model, is measured),
and client threads with keep-alive connections, each sending logits requests of ``--images`` images
for ``--seconds``. The ledger cell calls ``Ledger.charge`` from ``--ledger-threads`` threads (one
answered request each call, as the server does) on a SQLite file and on a PostgreSQL database.

    python bench/scale.py                              # ~2 min on 2 CPUs
    python bench/scale.py --seconds 5 --out bench/results/scale.md
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _clients import DIGIT_TASK, MSGPACK_HEADERS, connection, images_body, latency_ms, run_clients  # noqa: E402

from server.ledger import Ledger, QueryRecord  # noqa: E402
from shared.protocol import Endpoint, Routes  # noqa: E402
from tests.engines import Nginx, PostgresServer  # noqa: E402
from tests.helpers import ServerProcess, random_images, tiny_argv  # noqa: E402

log = logging.getLogger("bench.scale")


def serve_cell(pg: PostgresServer, replicas: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One cell: ``replicas`` servers on a fresh database behind nginx, ``args.clients`` clients."""
    url = pg.database(f"scale{replicas}")
    with ExitStack() as stack:
        servers = []
        for index in range(replicas):
            server = ServerProcess(tiny_argv(url), log_path=workdir / f"r{replicas}-{index}.log").start()
            stack.callback(server.stop)
            servers.append(server)
        balancer = Nginx([f"127.0.0.1:{server.port}" for server in servers]).start()
        stack.callback(balancer.stop)
        with connection(balancer.url) as http:
            task_id = http.post(Routes.TASKS, json=DIGIT_TASK).json()["task_id"]
        body = images_body(random_images(args.images, "uint8", seed=1))
        path = Routes.LOGITS.format(task_id=task_id)
        latencies: list[list[float]] = [[] for _ in range(args.clients)]
        failures = [0] * args.clients

        def client(index: int, until: float) -> None:
            with connection(balancer.url) as http:
                while time.monotonic() < until:
                    started = time.perf_counter()
                    answer = http.post(path, content=body, headers=MSGPACK_HEADERS)
                    if answer.status_code == 200:
                        latencies[index].append(time.perf_counter() - started)
                    else:
                        failures[index] += 1

        run_clients(client, args.clients, 2.0)  # warm-up: every replica's first forwards
        for row in latencies:
            row.clear()
        wall = run_clients(client, args.clients, args.seconds)
        done = [latency for row in latencies for latency in row]
        p50, p99 = latency_ms(done)
        return {
            "replicas": replicas,
            "requests": len(done),
            "images_per_s": len(done) * args.images / wall,
            "p50_ms": p50,
            "p99_ms": p99,
            "failed": sum(failures),
        }


def ledger_cell(target: Path | str, args: argparse.Namespace) -> dict:
    """Charges per second from ``args.ledger_threads`` threads, each charge its own answered request."""
    per_thread = args.charges // args.ledger_threads
    with closing(Ledger(target)) as ledger:

        def charge(index: int) -> None:
            for _ in range(per_thread):
                record = QueryRecord(f"k{index % 4}", Endpoint.LOGITS, "t", None, 16, 1, 50_000, 0, 0.016)
                ledger.charge(record)

        threads = [threading.Thread(target=charge, args=(i,)) for i in range(args.ledger_threads)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        total = per_thread * args.ledger_threads
        assert sum(ledger.images_used(f"k{i}") for i in range(4)) == 16 * total  # every charge counted
        transactions = ledger.group.commits
    return {"charges": total, "charges_per_s": total / seconds, "transactions": transactions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, the same for every cell")
    parser.add_argument("--images", type=int, default=16, help="images per request")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell")
    parser.add_argument("--charges", type=int, default=2000, help="charges per ledger cell")
    parser.add_argument("--ledger-threads", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request

    with PostgresServer() as pg, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        serving = []
        for replicas in args.replicas:
            log.info("serving: %d replica(s), %d clients, %.0f s", replicas, args.clients, args.seconds)
            serving.append(serve_cell(pg, replicas, args, workdir))
        log.info("ledger: %d charges from %d threads", args.charges, args.ledger_threads)
        ledgers = {
            "SQLite (WAL, synchronous=FULL, group commit)": ledger_cell(workdir / "bench.sqlite3", args),
            "PostgreSQL (synchronous_commit=on, pool of 8)": ledger_cell(pg.database("ledgerbench"), args),
        }
    lines = [
        f"Serving: tiny-vit behind nginx, {args.clients} clients x {args.images} images a request, "
        f"{args.seconds:.0f} s timed per cell",
        "",
        "| replicas | requests | images/s | p50 ms | p99 ms | failed |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in serving:
        lines.append(
            f"| {row['replicas']} | {row['requests']} | {row['images_per_s']:.0f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['failed']} |"
        )
    lines += ["", f"Ledger: {args.charges} charges from {args.ledger_threads} threads", "",
              "| engine | charges/s | transactions |", "|---|---:|---:|"]  # fmt: skip
    for name, row in ledgers.items():
        lines.append(f"| {name} | {row['charges_per_s']:.0f} | {row['transactions']} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

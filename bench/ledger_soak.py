"""Ledger soak: does charging stay as fast, and memory and files stay as small, after millions of charges
with request ids expiring and answers being dropped all the while? Two parts:

    python bench/ledger_soak.py ledger                      # 2,000,000 charges on SQLite, then PostgreSQL
    python bench/ledger_soak.py ledger --charges 20000 --window-s 3 --ttl-s 1 --engine sqlite
    python bench/ledger_soak.py http                        # 30 min against a real server
    python bench/ledger_soak.py http --seconds 40 --out bench/results/ledger_soak.md

``ledger``: ``Ledger.charge`` called from ``--threads`` threads as the server calls it (one answered
request a charge: a fresh request id, its body hash and a stored answer of ``--answer-bytes``, under
``--keys`` keys) on a SQLite file and on a fresh database of a throwaway PostgreSQL (tests/engines.py),
with a short ``--window-s`` and ``--ttl-s`` and ``Ledger.prune`` from a timer thread every
``--prune-every-s`` (the server's upkeep), so ids expire and answers are dropped many times over.
In the end the keys' charged images must equal the images charged.

``http``: a real ``blackvip-server`` (toy-digits, SQLite ledger in a temp dir, short window and TTL) and
``--clients`` keep-alive client threads for ``--seconds``, each sending logits or loss requests of
``--images`` images with a fresh request id, and in ``--replay-share`` of them a recent request again
(same id, same body: it must be replayed, not charged). In the end every key's images in the 200
answers that were not replays must equal its charged images in ``GET /v1/usage``. The server prunes
every 60 s whatever ``--window-s`` is (server/api/app.py), so its idempotency table holds up to a
window plus 60 s of ids.

Both print a time series as they go (one row every ``--sample-s``: see _soak.COLUMNS) and a markdown
section at the end; ``--out FILE`` puts that section in FILE, replacing the same part's section of an
earlier run (between its marker comments) or appending it, so one file holds the last run of each part.
``--csv`` gets every sampled row, ``--plot`` (default bench/results/ledger_soak[_http].png with ``--out``)
p50/p99 per interval over calls done. Exit status 1 on any failed charge, error or mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from _soak import (  # noqa: E402
    COLUMNS,
    MB,
    HttpTally,
    Latencies,
    PgStats,
    Sampler,
    SqliteStats,
    head_tail,
    http_client,
    machine_line,
    markdown_table,
    plot_latency,
    watch,
    write_csv,
    write_section,
)

from server.ledger import Answer, Ledger, LedgerLimits, QueryRecord  # noqa: E402
from shared.protocol import (  # noqa: E402
    MSGPACK_CONTENT_TYPE,
    Endpoint,
    Routes,
    UsageCounts,
    UsageResponse,
)
from tests.engines import PostgresServer  # noqa: E402
from tests.helpers import ServerProcess  # noqa: E402

log = logging.getLogger("bench.ledger_soak")
HEAD_TAIL = "first_p50 first_p99 last_p50 last_p99 p99_ratio".split()
LEDGER_SUMMARY = ["engine", "charges", "seconds", "per_s", *HEAD_TAIL] + (
    "prunes prune_ms_max idem_rows queries_rows db_mb rss_growth_mb failed expected used".split()
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--window-s", type=float, default=60.0, help="request ids' idempotency window")
    common.add_argument("--ttl-s", type=float, default=20.0, help="stored answers' replay TTL")
    common.add_argument("--store-mb", type=float, default=64.0, help="stored answers' cap")
    common.add_argument("--sample-s", type=float, default=5.0, help="seconds between time-series rows")
    common.add_argument("--table-rows", type=int, default=30, help="time-series rows in the markdown")
    common.add_argument("--out", type=Path, help="markdown file: this part's section is replaced or added")
    common.add_argument("--csv", type=Path, help="every time-series row")
    common.add_argument("--plot", type=Path, help="PNG of p50/p99 over calls done")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", required=True)
    ledger = parts.add_parser("ledger", parents=[common], help="charges straight into Ledger.charge")
    ledger.add_argument("--charges", type=int, default=2_000_000, help="charges per engine")
    ledger.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    ledger.add_argument("--threads", type=int, default=8)
    ledger.add_argument("--keys", type=int, default=8)
    ledger.add_argument("--images", type=int, default=128, help="images a charge")
    ledger.add_argument("--answer-bytes", type=int, default=5120, help="stored answer a charge")
    ledger.add_argument("--prune-every-s", type=float, default=2.0)
    http = parts.add_parser("http", parents=[common], help="a real server under keep-alive clients")
    http.add_argument("--clients", type=int, default=8)
    http.add_argument("--seconds", type=float, default=1800.0)
    http.add_argument("--images", type=int, default=16, help="images a request")
    http.add_argument("--keys", type=int, default=4)
    http.add_argument("--replay-share", type=float, default=0.1, help="requests that repeat a recent one")
    http.add_argument("--loss-share", type=float, default=0.25, help="loss requests (the rest: logits)")
    http.add_argument(
        "--warmup-s",
        type=float,
        default=60.0,
        help="RSS growth is from the first row after this (at most a quarter of --seconds)",
    )
    http.add_argument("--workdir", type=Path, help="keep the server's ledger and log here")
    http.add_argument("--server-args", default="", help="more flags for blackvip-server, one string")
    args = parser.parse_args(argv)
    if args.plot is None and args.out is not None:
        name = "ledger_soak.png" if args.part == "ledger" else "ledger_soak_http.png"
        args.plot = ROOT / "bench" / "results" / name
    return args


def log_row(name: str, row: dict) -> None:
    log.info(
        "%s %6.0f s %9d done %7.0f/s  p50 %6.1f p99 %7.1f max %7.1f ms  idem %8d (%5.1f MB answers)  "
        "queries %9d  db %7.1f MB  rss %6.0f MB",
        name,
        *(row[c] for c in COLUMNS if c != "idem_mb"),
    )


# -- ledger ------------------------------------------------------------------------------------------


def charger(
    ledger: Ledger,
    args: argparse.Namespace,
    index: int,
    count: int,
    latencies: Latencies,
    results: list[Counter],
    stop: threading.Event,
) -> None:
    """``count`` charges (fewer if ``stop`` is set), each a new request id with its answer, round robin
    over the keys."""
    answer = Answer(np.random.default_rng(index).bytes(args.answer_bytes), MSGPACK_CONTENT_TYPE)
    passes, size, cost = -(-args.images // 64), args.images * 3 * 224 * 224, args.images / 1000
    tally: Counter = Counter()
    for n in range(count):
        if stop.is_set():  # interrupted
            break
        request_id = uuid.uuid4().hex  # as the SDK sends one per call
        endpoint = Endpoint.LOSS if n % 4 == 3 else Endpoint.LOGITS
        key = f"soak-key-{(index + n) % args.keys}"
        record = QueryRecord(key, endpoint, "soak-task", request_id, args.images, passes, size, 0, cost)
        remember = (hashlib.sha256(request_id.encode()).hexdigest(), answer)
        started = time.perf_counter()
        try:
            ledger.charge(record, remember=remember)
        except Exception as exc:  # counted and reported; the soak goes on
            if not tally[type(exc).__name__]:
                log.warning("charge failed: %r", exc, exc_info=True)
            tally[type(exc).__name__] += 1
            continue
        latencies.add(time.perf_counter() - started)
        tally["charged"] += 1
    results[index] = tally


def pruner(ledger: Ledger, every_s: float, stop: threading.Event, tally: Counter) -> None:
    """``Ledger.prune`` every ``every_s``, as the server's upkeep does; counts them and their seconds."""
    while not stop.wait(every_s):
        started = time.perf_counter()
        try:
            ledger.prune()
        except Exception as exc:
            log.warning("prune failed: %r", exc)
            tally["failed"] += 1
            continue
        seconds = time.perf_counter() - started
        tally["prunes"] += 1
        tally["prune_ms_max"] = max(tally["prune_ms_max"], seconds * 1000)


def soak_engine(engine: str, target: Path | str, args: argparse.Namespace) -> dict:
    limits = LedgerLimits(
        idempotency_window_s=args.window_s,
        replay_ttl_s=args.ttl_s,
        replay_store_bytes=int(args.store_mb * MB),
    )
    latencies, prunes, stop = Latencies(), Counter(), threading.Event()
    results = [Counter() for _ in range(args.threads)]
    shares = [args.charges // args.threads + (i < args.charges % args.threads) for i in range(args.threads)]
    with closing(Ledger(target, limits)) as ledger, ExitStack() as stack:
        stats = stack.enter_context(closing(SqliteStats(target) if engine == "sqlite" else PgStats(target)))
        sampler = Sampler(latencies, stats, "self")
        timer = threading.Thread(target=pruner, args=(ledger, args.prune_every_s, stop, prunes))
        timer.start()
        threads = [
            threading.Thread(target=charger, args=(ledger, args, i, shares[i], latencies, results, stop))
            for i in range(args.threads)
        ]
        try:
            watch(threads, sampler, args.sample_s, lambda row: log_row(engine, row))
        finally:  # on an interrupt too: every thread done before the ledger closes
            stop.set()
            for thread in [timer, *threads]:
                if thread.ident is not None:
                    thread.join()
        used = sum(ledger.images_used(f"soak-key-{k}") for k in range(args.keys))
    tally = sum(results, Counter())
    rows, charged = sampler.rows, tally.pop("charged", 0)
    return {
        "engine": engine,
        "charges": charged,
        "seconds": rows[-1]["elapsed_s"],
        "per_s": charged / rows[-1]["elapsed_s"],
        **head_tail(latencies),
        "prunes": prunes["prunes"],
        "prune_ms_max": prunes["prune_ms_max"],
        "idem_rows": rows[-1]["idem_rows"],
        "queries_rows": rows[-1]["queries_rows"],
        "db_mb": rows[-1]["db_mb"],
        "rss_growth_mb": rows[-1]["rss_mb"] - rows[0]["rss_mb"],
        "failed": dict(tally + Counter(prune=prunes["failed"])) or 0,
        "expected": charged * args.images,
        "used": used,
        "rows": rows,
    }


def run_ledger(args: argparse.Namespace) -> tuple[int, list[str], dict[str, list[dict]]]:
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-soak-")))
        pg = stack.enter_context(PostgresServer()) if "postgresql" in engines else None
        results = []
        for engine in engines:
            log.info("%s: %d charges from %d threads", engine, args.charges, args.threads)
            target = tmp / "soak.sqlite3" if engine == "sqlite" else pg.database("soak")
            results.append(soak_engine(engine, target, args))
    lines = [
        f"Settings: window {args.window_s:g} s, TTL {args.ttl_s:g} s, store {args.store_mb:g} MB, prune "
        f"every {args.prune_every_s:g} s; {args.threads} threads, {args.keys} keys, {args.images} images and "
        f"a {args.answer_bytes}-byte answer a charge. Latencies in ms.",
        "",
    ]
    lines += markdown_table(results, LEDGER_SUMMARY)
    bad = [
        r["engine"]
        for r in results
        if r["failed"] or (r["used"], r["queries_rows"]) != (r["expected"], r["charges"])
    ]
    lines += [
        "",
        "images charged == sum of images_used over the keys, a queries row per charge, no failure: "
        + ("yes" if not bad else f"NO ({', '.join(bad)})"),
    ]
    for r in results:
        lines += [
            "",
            f"### {r['engine']}: every {args.sample_s:g} s",
            "",
            *markdown_table(r["rows"], COLUMNS, args.table_rows),
        ]
    return (1 if bad else 0), lines, {r["engine"]: r["rows"] for r in results}


# -- http --------------------------------------------------------------------------------------------


def check_usage(url: str, keys: list[str], tally: HttpTally) -> tuple[bool, list[str]]:
    """Per key: the images and requests answered (not replays) against what the ledger charged."""
    ok, lines = True, []
    for key in keys:
        reply = httpx.get(url + Routes.USAGE, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        usage = UsageResponse.model_validate(reply.json())
        answered = [tally.images[key]] + [tally.requests[(key, e)] for e in (Endpoint.LOGITS, Endpoint.LOSS)]
        charged = [usage.total.images] + [
            usage.by_endpoint.get(e, UsageCounts()).requests for e in (Endpoint.LOGITS, Endpoint.LOSS)
        ]
        ok &= answered == charged
        lines.append(
            f"{key}: answered (not replays) {answered[0]} images ({answered[1]} logits, {answered[2]} "
            f"loss), charged {charged[0]} images ({charged[1]} logits, {charged[2]} loss): "
            + ("ok" if answered == charged else "MISMATCH")
        )
    return ok, lines


def serve(args: argparse.Namespace, keys: list[str], tally: HttpTally, latencies: Latencies) -> tuple:
    """The server up, the clients run against it while the time series is sampled, then its usage
    checked; returns the rows and the check."""
    stop = threading.Event()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-soak-"))
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        argv = ["--ledger", str(workdir / "ledger.sqlite3"), "--idempotency-window-s", str(args.window_s)]
        argv += ["--replay-ttl-s", str(args.ttl_s), "--replay-store-mb", str(args.store_mb)]
        argv += shlex.split(args.server_args)
        env = {"BLACKVIP_API_KEYS": ",".join(keys)}
        server = ServerProcess(argv, env=env, log_path=workdir / "server.log")
        stack.callback(server.stop)
        stack.callback(stop.set)  # first, on the way out: the clients stop with the server
        server.start()
        stats = stack.enter_context(closing(SqliteStats(workdir / "ledger.sqlite3")))
        sampler = Sampler(latencies, stats, server.proc.pid)
        threads = [
            threading.Thread(
                target=http_client, args=(server.url, keys[i % len(keys)], i, args, tally, latencies, stop)
            )
            for i in range(args.clients)
        ]

        def died() -> bool:  # then the clients stop too
            if server.proc.poll() is None:
                return False
            stop.set()
            return True

        watch(threads, sampler, args.sample_s, lambda row: log_row("http", row), died)
        if died():
            raise SystemExit(f"the server died: {server.log_tail()}")
        return sampler.rows, *check_usage(server.url, keys, tally)


def run_http(args: argparse.Namespace) -> tuple[int, list[str], dict[str, list[dict]]]:
    keys, tally, latencies = [f"soak-key-{k}" for k in range(args.keys)], HttpTally(), Latencies()
    rows, ok, check = serve(args, keys, tally, latencies)
    warmup_s = min(args.warmup_s, args.seconds / 4)
    warm = [row for row in rows if row["elapsed_s"] >= warmup_s] or rows
    end = rows[-1]
    summary = {"clients": args.clients, "seconds": end["elapsed_s"], "requests": len(latencies)}
    summary.update(per_s=len(latencies) / end["elapsed_s"], images=sum(tally.images.values()))
    summary.update(replays=f"{tally.replays}/{tally.replays_sent}", recharged=tally.recharged)
    summary.update(errors=dict(tally.errors) or 0, **head_tail(latencies), rss_first=warm[0]["rss_mb"])
    summary.update(rss_last=end["rss_mb"], rss_growth_mb=end["rss_mb"] - warm[0]["rss_mb"])
    summary.update(idem_rows=end["idem_rows"], db_mb=end["db_mb"])
    lines = [
        f"Settings: {args.images} images a request, {args.loss_share:.0%} loss, {args.replay_share:.0%} "
        f"repeats, {args.keys} keys; window {args.window_s:g} s, TTL {args.ttl_s:g} s, store "
        f"{args.store_mb:g} MB (the server prunes every 60 s). Latencies in ms; server RSS in MB, its "
        f"growth from the first row after {warmup_s:g} s.",
        "",
        *markdown_table([summary], summary),
        "",
        "answered == charged: " + ("yes" if ok else "NO"),
        "",
        *(f"- {line}" for line in check),
        "",
        f"### server: every {args.sample_s:g} s",
        "",
        *markdown_table(rows, [c for c in COLUMNS if c != "idem_mb"], args.table_rows),
    ]
    return (0 if ok and not tally.errors and not tally.recharged else 1), lines, {"http": rows}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))  # unwind: stop the server
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
    status, lines, series = (run_ledger if args.part == "ledger" else run_http)(args)
    title = "charges straight into Ledger.charge" if args.part == "ledger" else "a real server over HTTP"
    command = f"`python bench/ledger_soak.py {shlex.join(argv)}`"
    text = "\n\n".join([f"## Ledger soak, {args.part}: {title}", command, f"Machine: {machine_line()}"])
    text += "\n\n" + "\n".join(lines)
    print(text)
    if args.out:
        write_section(args.out, args.part, text)
    if args.csv:
        write_csv(args.csv, series)
    if args.plot:
        plot_latency(args.plot, series, "charges done" if args.part == "ledger" else "requests answered")
        log.info("plot: %s", args.plot)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The pieces of the ledger soak (ledger_soak.py): every answered call's latency in order, a time series
sampled while it runs (rates, interval percentiles, the ledger's row counts and sizes read on a
connection of its own, a process's RSS), the HTTP part's client loop and its tally of what it was
answered, and the markdown, CSV and plot made of them.

Imported by the script as ``_soak`` (a script's own folder is first on its path)."""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sqlite3
import threading
import time
import uuid
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
from _clients import DIGIT_TASK, MSGPACK_HEADERS, connection, images_body

from shared.protocol import REPLAYED_HEADER, REQUEST_ID_HEADER, Endpoint, Routes

__all__ = [
    "COLUMNS",
    "MB",
    "HttpTally",
    "Latencies",
    "PgStats",
    "SqliteStats",
    "Sampler",
    "head_tail",
    "http_client",
    "machine_line",
    "markdown_table",
    "plot_latency",
    "rss_mb",
    "watch",
    "write_csv",
    "write_section",
]

MB = 2**20
# The time series' columns, in order; "done" is charges (ledger) or requests (http) answered so far.
COLUMNS = (
    "elapsed_s", "done", "per_s", "p50_ms", "p99_ms", "max_ms",
    "idem_rows", "answers_mb", "queries_rows", "db_mb", "idem_mb", "rss_mb",
)  # fmt: skip


class Latencies:
    """Seconds per call, in the order the calls finished (float32: 4 bytes a call, counted in the RSS)."""

    def __init__(self) -> None:
        self.values = array("f")
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.values.append(seconds)

    def __len__(self) -> int:
        return len(self.values)

    def between(self, start: int, stop: int) -> np.ndarray:
        with self._lock:
            return np.array(self.values[start:stop], dtype=np.float64)


def pct_ms(seconds: np.ndarray) -> tuple[float, float, float]:
    """p50, p99 and max in milliseconds (NaN when there are none)."""
    if seconds.size == 0:
        return float("nan"), float("nan"), float("nan")
    p50, p99 = np.percentile(seconds, [50, 99])
    return p50 * 1000, p99 * 1000, float(seconds.max()) * 1000


def head_tail(latencies: Latencies) -> dict[str, float]:
    """p50 and p99 of the first and of the last 10 % of the calls, and p99 last / p99 first."""
    n = len(latencies)
    k = max(1, n // 10)
    first, last = pct_ms(latencies.between(0, k)), pct_ms(latencies.between(n - k, n))
    ratio = last[1] / first[1] if first[1] else float("nan")
    return {
        "first_p50": first[0],
        "first_p99": first[1],
        "last_p50": last[0],
        "last_p99": last[1],
        "p99_ratio": ratio,
    }


def rss_mb(pid: int | str = "self") -> float:
    """The process's resident set (VmRSS) in MiB; NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class SqliteStats:
    """A SQLite ledger's counts, on a read-only connection of its own, and its file's size with the -wal
    file's. Each sample is one short read transaction: no snapshot is held between samples (it would keep
    the ledger's checkpoints from emptying the -wal file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)

    def __call__(self) -> dict[str, float]:
        sql = "SELECT COUNT(*), COALESCE(SUM(answer_bytes), 0) FROM idempotency"
        self.db.execute("BEGIN")  # both counts from one snapshot
        try:
            [(idem, stored)] = self.db.execute(sql).fetchall()
            [(queries,)] = self.db.execute("SELECT COUNT(*) FROM queries").fetchall()
        finally:
            self.db.execute("COMMIT")
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {"idem_rows": idem, "answers_mb": stored / MB, "queries_rows": queries, "db_mb": size / MB}

    def close(self) -> None:
        self.db.close()


class PgStats:
    """A PostgreSQL ledger's counts and sizes, on a connection of its own."""

    SQL = (
        "SELECT (SELECT COUNT(*) FROM idempotency), (SELECT COALESCE(SUM(answer_bytes), 0) FROM"
        " idempotency), (SELECT COUNT(*) FROM queries), pg_database_size(current_database()),"
        " pg_total_relation_size('idempotency')"
    )

    def __init__(self, url: str) -> None:
        import psycopg

        self.db = psycopg.connect(url, autocommit=True)

    def __call__(self) -> dict[str, float]:
        idem, stored, queries, size, idem_size = self.db.execute(self.SQL).fetchone()
        return {
            "idem_rows": idem,
            "answers_mb": int(stored) / MB,
            "queries_rows": queries,
            "db_mb": size / MB,
            "idem_mb": idem_size / MB,
        }

    def close(self) -> None:
        self.db.close()


class Sampler:
    """One row of the time series per ``sample()``: the calls finished since the last row, their rate
    and percentiles, the ledger's counts (``stats``) and the RSS of process ``pid``."""

    def __init__(self, latencies: Latencies, stats: Callable[[], dict[str, float]], pid: int | str) -> None:
        self.latencies, self.stats, self.pid = latencies, stats, pid
        self.started, self.rows = time.monotonic(), []
        self._at, self._done = self.started, 0

    def sample(self) -> dict[str, float]:
        now, done = time.monotonic(), len(self.latencies)
        p50, p99, top = pct_ms(self.latencies.between(self._done, done))
        per_s = (done - self._done) / (now - self._at)
        row = {"elapsed_s": now - self.started, "done": done, "per_s": per_s, "p50_ms": p50, "p99_ms": p99}
        row.update(max_ms=top, **self.stats(), rss_mb=rss_mb(self.pid))
        self._at, self._done = now, done
        self.rows.append(row)
        return row


def watch(
    threads: Sequence[threading.Thread],
    sampler: Sampler,
    every_s: float,
    on_row: Callable[[dict], None],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Start ``threads`` and sample every ``every_s`` until they have all returned (or ``stop()``), then
    once more."""
    for thread in threads:
        thread.start()
    next_at = time.monotonic() + every_s
    while any(thread.is_alive() for thread in threads) and not stop():
        time.sleep(max(0.0, min(0.25, next_at - time.monotonic())))
        if time.monotonic() >= next_at:
            on_row(sampler.sample())
            next_at += every_s
    for thread in threads:
        thread.join()
    on_row(sampler.sample())


class Request(NamedTuple):
    endpoint: str
    path: str
    body: bytes
    request_id: str
    images: int


class HttpTally:
    """What the clients were answered: per key, the images and requests of the 200 answers that were
    not replays (what the ledger must have charged), replays, and errors by status."""

    def __init__(self) -> None:
        self.images, self.requests, self.errors = Counter(), Counter(), Counter()
        self.replays = self.replays_sent = self.recharged = 0
        self.lock = threading.Lock()

    def add(self, key: str, request: Request, replay: bool, answer: httpx.Response) -> bool:
        """Count one answer; True when it was a 200."""
        with self.lock:
            self.replays_sent += replay
            if answer.status_code != 200:
                self.errors[f"{answer.status_code}{' (replay)' if replay else ''}"] += 1
                return False
            if answer.headers.get(REPLAYED_HEADER) == "true":
                self.replays += 1
                if not replay:
                    self.errors["new id replayed"] += 1
                return True
            self.recharged += replay  # a repeat charged again: the ledger counts it, so do we
            self.images[key] += request.images
            self.requests[(key, request.endpoint)] += 1
            return True


def next_request(
    rng: np.random.Generator,
    bodies: list[tuple[str, bytes]],
    task_id: str,
    recent: deque,
    args: argparse.Namespace,
) -> tuple[Request, bool]:
    """A repeat of a recent 200 (young enough for its answer to be kept) or a new request."""
    now = time.monotonic()
    young = [request for request, at in recent if now - at < min(args.ttl_s, args.window_s) / 2]
    if young and rng.random() < args.replay_share:
        return young[rng.integers(len(young))], True
    endpoint, body = bodies[rng.integers(len(bodies))]
    path = (Routes.LOSS if endpoint == Endpoint.LOSS else Routes.LOGITS).format(task_id=task_id)
    return Request(endpoint, path, body, uuid.uuid4().hex, args.images), False


def http_client(
    url: str,
    key: str,
    seed: int,
    args: argparse.Namespace,
    tally: HttpTally,
    latencies: Latencies,
    stop: threading.Event,
) -> None:
    """Register the digit task, then send requests until ``args.seconds`` are up or ``stop`` is set:
    new ones (a fresh request id) and, in ``args.replay_share`` of them, a repeat of a recent one."""
    rng, recent = np.random.default_rng(seed), deque(maxlen=64)
    with connection(url, key) as http:
        task_id = http.post(Routes.TASKS, json=DIGIT_TASK).json()["task_id"]
        size = http.get(Routes.INFO).json()["image_size"]
        bodies = []
        for n in range(8):  # built once: the clients measure the server, not numpy
            images = rng.integers(0, 256, size=(args.images, 3, size, size), dtype=np.uint8)
            loss = n < round(8 * args.loss_share)
            fields = {"labels": rng.integers(0, 10, args.images).tolist(), "loss": "ce"} if loss else {}
            bodies.append((Endpoint.LOSS if loss else Endpoint.LOGITS, images_body(images, **fields)))
        until = time.monotonic() + args.seconds
        while time.monotonic() < until and not stop.is_set():
            request, replay = next_request(rng, bodies, task_id, recent, args)
            headers = {**MSGPACK_HEADERS, REQUEST_ID_HEADER: request.request_id}
            started = time.perf_counter()
            try:
                answer = http.post(request.path, content=request.body, headers=headers)
            except httpx.TransportError as exc:
                with tally.lock:
                    tally.errors[type(exc).__name__] += 1
                time.sleep(0.1)
                continue
            latencies.add(time.perf_counter() - started)
            if tally.add(key, request, replay, answer) and not replay:
                recent.append((request, time.monotonic()))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], at_most: int | None = None) -> list[str]:
    """A markdown table of ``columns``; with ``at_most``, that many rows spread evenly, the last kept."""
    if at_most and len(rows) > at_most:
        step = len(rows) / at_most
        rows = [rows[int(i * step)] for i in range(at_most - 1)] + [rows[-1]]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]


def write_csv(path: Path, series: dict[str, list[dict]]) -> None:
    """Every sampled row of every series, with the series' name first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["series", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        for name, rows in series.items():
            writer.writerows({"series": name, **row} for row in rows)


def plot_latency(path: Path, series: dict[str, list[dict]], xlabel: str) -> None:
    """p99 (solid) and p50 (dashed) per sample interval over calls done, one colour per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for index, (name, rows) in enumerate(series.items()):
        done = [row["done"] for row in rows]
        colour = f"C{index}"
        ax.plot(done, [row["p99_ms"] for row in rows], color=colour, label=f"{name} p99")
        ax.plot(done, [row["p50_ms"] for row in rows], color=colour, linestyle="--", label=f"{name} p50")
    ax.set(xlabel=xlabel, ylabel="ms per call (per sample interval)", yscale="log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def machine_line() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = platform.python_version()
    return (
        f"{cpu}, nproc {os.cpu_count()}, {memory:.0f} GiB; Python {python}, SQLite {sqlite3.sqlite_version}"
    )


def write_section(path: Path, part: str, text: str) -> None:
    """Put ``text`` in ``path`` as the part's section: it replaces that part's earlier section (between
    its marker comments) or, if there is none, is appended; other parts' sections are kept."""
    begin, end = f"<!-- ledger_soak:{part} -->", f"<!-- /ledger_soak:{part} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)

"""Serving overhead, issue 27: what a small request costs the server beside the model's forward.

    python bench/serving_overhead.py                        # 10 s per cell, profile 10 s (~2 min)
    python bench/serving_overhead.py --seconds 5 --out bench/results/throughput.md

One run, pinned cores: the server under test and a bare Starlette msgpack echo (``bench/_echo_app.py``,
the framework's floor) each on core 0 with one torch/OpenMP thread, one after the other; this process,
the load generator (threads, each with its own keep-alive httpx connection), on core 1. Per cell:
requests/s, the server process's CPU per request (``/proc/PID/stat`` user + system, before and after),
and, for blackvip-server, the forward's share (``blackvip_forward_seconds`` from ``/metrics``: wall
seconds in forwards, on a core of its own that is CPU). Then a py-spy profile of the 1 x 4 cell, each
sample given to the first layer its stack meets from the innermost frame out (``LAYERS``).

Printed ratios (the issue's targets): non-forward CPU per 4-image request / the echo's CPU per request
(target <= 5), and 32 x 4 images/s / 1 x 128 images/s (target >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from _clients import DIGIT_TASK, MSGPACK_HEADERS, connection, images_body, run_clients
from serving import write_section

from client.local_server import LocalServer, free_port
from shared.protocol import Routes

SERVER_CORE, LOAD_CORE = "0", 1
ECHO = "bare Starlette echo"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CELLS = ((1, 4), (32, 4), (1, 128))  # (clients, images per request)
ECHO_CELLS = ((1, 4), (32, 4))
SECTION = "## (d) Serving overhead: a small request's CPU beside the forward, pinned cores"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# A sample whose innermost frame is one of these waits without the GIL: it is no CPU (py-spy records a
# thread blocked in a C call as active)
WAITING = re.compile(r"^(Condition\.wait|Event\.wait|Semaphore\.acquire) \(threading\.py")
# (layer, pattern on "function (file)"), the first match from the innermost frame out wins
LAYERS = (
    ("model forward", r"torch/|open_clip/|clip_model\.py"),
    ("ledger charge", r"server/ledger/"),
    ("idempotency, answer", r"server/serving/(idempotency|service)\.py"),
    ("batcher", r"server/serving/batcher\.py"),
    ("body parse and checks", r"msgpack|shared/codec\.py|server/api/inputs\.py|pydantic"),
    ("metrics", r"prometheus_client|server/metrics\.py"),
    ("thread hand-offs", r"anyio/|concurrent/futures|threading\.py|queue\.py|starlette/concurrency"),
    ("event loop: HTTP, routing, dependencies", r"uvicorn/|h11|starlette/|fastapi/|asyncio/|server/api/"),
)


@dataclass
class Cell:
    server: str
    clients: int
    batch: int
    requests_per_s: float
    cpu_ms: float  # server CPU per request, user + system
    system_ms: float  # of which in the kernel (thread wake-ups, sockets, fsync)
    forward_ms: float | None  # wall time in forwards per request (a core of its own: CPU)

    @property
    def images_per_s(self) -> float:
        return self.requests_per_s * self.batch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per cell")
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="0: no profile")
    parser.add_argument("--model", default="toy-digits")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout's server, measured cell by cell beside"
    )
    parser.add_argument("--baseline-name", default="baseline", help="its name in the table (e.g. a commit)")
    parser.add_argument("--out", type=Path, help="write the tables into this file's section (d)")
    return parser.parse_args(argv)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) * TICK_S, int(fields[12]) * TICK_S  # utime, stime (fields 14 and 15)


FORWARD_METRICS = (
    "blackvip_forward_seconds_sum",
    "blackvip_forward_batch_images_count",
    "blackvip_forward_batch_images_sum",
    "blackvip_forward_padding_images_total",
)


def forward_metrics(url: str) -> np.ndarray:
    """Seconds in forwards, batches, their images, their padding rows: the server's counters now."""
    text = httpx.get(url + "/metrics", timeout=30).text
    values = []
    for name in FORWARD_METRICS:
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        values.append(float(match.group(1)) if match else 0.0)
    return np.array(values)


def load(url: str, path: str, bodies: list[bytes], seconds: float) -> int:
    """Every client sends its body in a loop until the deadline; the 200s answered."""
    answered: list[int] = []

    def client(index: int, until: float) -> None:
        with connection(url) as http:
            while time.monotonic() < until:
                status = http.post(path, content=bodies[index], headers=MSGPACK_HEADERS).status_code
                if status != 200:
                    raise SystemExit(f"{path} answered {status}")
                answered.append(1)

    run_clients(client, len(bodies), seconds)
    return len(answered)


def measure(
    name: str, url: str, pid: int, path: str, cell: tuple[int, int], size: int, seconds: float
) -> Cell:
    clients, batch = cell
    rng = np.random.default_rng(clients * 1000 + batch)
    bodies = [images_body(rng.integers(0, 256, (batch, 3, size, size), np.uint8)) for _ in range(clients)]
    load(url, path, bodies[:1], 1.0)  # warm-up, untimed
    is_server = name.startswith("blackvip-server")
    cpu, fwd, started = cpu_seconds(pid), forward_metrics(url) if is_server else None, time.monotonic()
    requests = load(url, path, bodies, seconds)
    elapsed, (user, system) = time.monotonic() - started, cpu_seconds(pid)
    user, system = user - cpu[0], system - cpu[1]
    fwd = forward_metrics(url) - fwd if fwd is not None else None
    per_request = 1000 / max(requests, 1)
    forward_ms = fwd[0] * per_request if fwd is not None else None
    if fwd is not None:
        rows, padding = fwd[2] / max(fwd[1], 1), fwd[3] / max(fwd[1], 1)
        print(f"  batches: {rows:.1f} images and {padding:.1f} padding rows on average", file=sys.stderr)
    cpu_ms = (user + system) * per_request
    cell = Cell(name, clients, batch, requests / elapsed, cpu_ms, system * per_request, forward_ms)
    print(
        f"  {name} {clients} x {batch}: {cell.requests_per_s:.0f} req/s, {cell.cpu_ms:.2f} ms CPU",
        file=sys.stderr,
    )
    return cell


def profile(url: str, pid: int, path: str, size: int, seconds: float, out: Path) -> Counter[str]:
    """py-spy's samples of the server (all threads, idle ones excluded) under 1 x 4, by layer."""
    rng = np.random.default_rng(7)
    body = images_body(rng.integers(0, 256, (4, 3, size, size), np.uint8))
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "250",
            "--duration",
            str(int(seconds)),
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    load(url, path, [body], seconds)
    spy.wait(timeout=seconds + 60)
    layers: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        layers[layer_of(stack.split(";"))] += int(count)
    return layers


def layer_of(frames: list[str]) -> str:
    if WAITING.match(frames[-1]):
        return "waiting in a lock or event (no CPU)"
    for frame in reversed(frames):
        for layer, pattern in LAYERS:
            if re.search(pattern, frame):
                return layer
    return "other"


def start_server(workdir: Path, model: str, checkout: Path | None) -> LocalServer:
    """blackvip-server pinned to SERVER_CORE, from this checkout or, run in its folder, another one."""
    launcher: tuple[str, ...] = ("taskset", "-c", SERVER_CORE)
    env = dict(ONE_THREAD)
    if checkout is not None:  # ``-m server.main`` imports from the working folder first
        launcher = ("env", "-C", str(checkout), *launcher)
        env["PYTHONPATH"] = str(checkout)
    workdir.mkdir(parents=True, exist_ok=True)
    flags = ["--model", model, "--ledger", str(workdir / "ledger.sqlite3")]
    return LocalServer(flags, env=env, log_path=workdir / "server.log", launcher=launcher).start()


def run_servers(args: argparse.Namespace, workdir: Path) -> tuple[list[Cell], Counter[str], int]:
    """Each cell on each server in turn (the baseline's, then this checkout's), so that both see the
    machine in the same state; then the profile of this checkout's. Returns the cells, the profile
    by layer and the servers' image size."""
    names = {"blackvip-server": None}
    if args.baseline is not None:
        names = {f"blackvip-server at {args.baseline_name}": args.baseline, **names}
    servers = {
        name: start_server(workdir / str(i), args.model, path) for i, (name, path) in enumerate(names.items())
    }
    try:
        targets = {}
        for name, server in servers.items():
            assert server.proc is not None
            size = httpx.get(server.url + Routes.INFO, timeout=30).json()["image_size"]
            task_id = httpx.post(server.url + Routes.TASKS, json=DIGIT_TASK, timeout=120).json()["task_id"]
            targets[name] = (server.url, server.proc.pid, Routes.LOGITS.format(task_id=task_id))
        cells = [
            measure(name, *targets[name], cell, size, args.seconds) for cell in CELLS for name in servers
        ]
        layers = Counter[str]()
        if args.profile_seconds > 0 and shutil.which("py-spy"):
            url, pid, path = targets["blackvip-server"]
            layers = profile(url, pid, path, size, args.profile_seconds, workdir / "profile.txt")
        return cells, layers, size
    finally:
        for server in servers.values():
            server.stop()


def run_echo(args: argparse.Namespace, size: int) -> list[Cell]:
    port = free_port()
    command = [
        "taskset",
        "-c",
        SERVER_CORE,
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(__file__).parent),
        "_echo_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(command, env={**os.environ, **ONE_THREAD})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        return [measure(ECHO, url, proc.pid, "/echo", cell, size, args.seconds) for cell in ECHO_CELLS]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def tables(cells: list[Cell], layers: Counter[str]) -> list[str]:
    echo = {(c.clients, c.batch): c for c in cells if c.server == ECHO}
    lines = [
        "| cell | requests/s | images/s | server CPU per request (ms) | of which system (ms) "
        "| of which forward (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        forward = f"{c.forward_ms:.2f}" if c.forward_ms is not None else "none"
        lines.append(
            f"| {c.server}, {c.clients} x {c.batch} | {c.requests_per_s:,.0f} | {c.images_per_s:,.0f} "
            f"| {c.cpu_ms:.2f} | {c.system_ms:.2f} | {forward} |"
        )
    lines.append("")
    floor = echo[(1, 4)].cpu_ms
    for name in dict.fromkeys(c.server for c in cells if c.server != ECHO):
        server = {(c.clients, c.batch): c for c in cells if c.server == name}
        small = server[(1, 4)]
        non_forward = small.cpu_ms - (small.forward_ms or 0.0)
        ratio = server[(32, 4)].images_per_s / server[(1, 128)].images_per_s
        lines += [
            f"- {name}: non-forward CPU per 4-image request {non_forward:.2f} ms = "
            f"**{non_forward / floor:.1f}x** the echo's {floor:.2f} ms (target <= 5x); "
            f"32 x 4 images/s / 1 x 128 images/s **{ratio:.2f}x** (target >= 0.8x)",
        ]
    if layers:
        total = sum(layers.values())
        lines += [
            "",
            "py-spy profile of blackvip-server under 1 x 4 (samples of busy threads, by the innermost "
            "layer on the stack):",
            "",
            "| layer | share of samples |",
            "|---|---:|",
        ]
        lines += [f"| {layer} | {100 * n / total:.0f} % |" for layer, n in layers.most_common()]
        lines += [
            "",
            "The event loop's share includes its C parts (the selector, socket calls) and py-spy counts "
            "some blocking calls as active: the CPU columns above are the measurement, the profile shows "
            "where it goes.",
        ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.sched_setaffinity(0, {LOAD_CORE})  # the load generator's core; the servers get SERVER_CORE
    with tempfile.TemporaryDirectory() as tmp:
        cells, layers, size = run_servers(args, Path(tmp))
        cells += run_echo(args, size)  # the same bodies as the server's cells
    command = "python bench/serving_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            SECTION,
            "",
            f"`{command.strip()}`: model {args.model}, {args.seconds:g} s per cell, "
            "uint8 logits requests, server on core 0 (one thread), load generator on core 1.",
            "",
            *tables(cells, layers),
        ]
    )
    print(text)
    if args.out:
        write_section(args.out, text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
